//! Direct mail: rows appended to the run's CSV file.

use std::sync::Arc;

use serde_json::json;
use waymark_runtime::channels::Channels;
use waymark_runtime::channels::direct_mail::{DirectMailConfig, Extractor};
use waymark_store::Delivery;

use crate::support::{WINDOW, claimed, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mail_rows_are_appended_to_the_runs_file_in_the_configured_columns() {
    let folder = tempfile::tempdir().expect("tempdir");
    let config = DirectMailConfig {
        folder: folder.path().to_owned(),
        every: "1h".into(),
        columns: Some(vec!["name".into(), "city".into()]),
        max_rows: None,
        dedupe: true,
    };
    let extractor = Extractor::new(&config).expect("extractor");
    let channels = Channels::default().with("direct_mail", Arc::new(extractor));
    for (n, (name, city)) in [("Ann", "Lyon"), ("Bo, Jr.", "Oslo")]
        .into_iter()
        .enumerate()
    {
        let content = json!({"channel": "direct_mail", "fields": {},
            "data": {"name": name, "city": city, "ignored": 1}});
        let key = format!("postcard:p{n}:1:send:2");
        let attempt = channels
            .deliver(
                &claimed(message(&key, "direct_mail", None, content)),
                WINDOW,
            )
            .await;
        assert!(
            matches!(&attempt.delivery, Delivery::Delivered(v) if v["row"] == n + 1),
            "{attempt:?}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(folder.path())
        .expect("folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("file");
    assert_eq!(
        text,
        "message_id,journey,name,city\n\
         postcard:p0:1:send:2,welcome,Ann,Lyon\n\
         postcard:p1:1:send:2,welcome,\"Bo, Jr.\",Oslo\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_split_at_max_rows_and_repeated_rows_are_left_out() {
    let folder = tempfile::tempdir().expect("tempdir");
    let config = DirectMailConfig {
        folder: folder.path().to_owned(),
        every: "1h".into(),
        columns: Some(vec!["name".into(), "city".into()]),
        max_rows: Some(2),
        dedupe: true,
    };
    let channels = Channels::default().with(
        "direct_mail",
        Arc::new(Extractor::new(&config).expect("extractor")),
    );
    // Ann twice (a household on the list twice: the second row is left out), Ann elsewhere;
    // then Cy starts a second file, where Ann may appear again.
    let people = [
        ("Ann", "Lyon"),
        ("Ann", "Lyon"),
        ("Ann", "Oslo"),
        ("Cy", "Rome"),
        ("Ann", "Lyon"),
    ];
    let mut results = Vec::new();
    for (n, (name, city)) in people.into_iter().enumerate() {
        let content = json!({"channel": "direct_mail", "fields": {},
            "data": {"name": name, "city": city}});
        let key = format!("postcard:p{n}:1:send:2");
        let attempt = channels
            .deliver(
                &claimed(message(&key, "direct_mail", None, content)),
                WINDOW,
            )
            .await;
        let Delivery::Delivered(result) = attempt.delivery else {
            panic!("{attempt:?}");
        };
        results.push(result);
    }
    assert_eq!(results[1]["duplicate_of_row"], 1, "{results:?}");
    assert_eq!(results[1]["file"], results[0]["file"]);
    let mut files: Vec<_> = std::fs::read_dir(folder.path())
        .expect("folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    // Each file is complete (renamed) as soon as it holds two rows.
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "csv")),
        "{files:?}"
    );
    let complete = std::fs::read_to_string(&files[0]).expect("file");
    assert_eq!(
        complete,
        "message_id,journey,name,city\n\
         postcard:p0:1:send:2,welcome,Ann,Lyon\n\
         postcard:p2:1:send:2,welcome,Ann,Oslo\n"
    );
    let growing = std::fs::read_to_string(&files[1]).expect("file");
    assert_eq!(
        growing,
        "message_id,journey,name,city\n\
         postcard:p3:1:send:2,welcome,Cy,Rome\n\
         postcard:p4:1:send:2,welcome,Ann,Lyon\n"
    );
}
