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
