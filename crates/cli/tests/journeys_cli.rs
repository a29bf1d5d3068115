//! `waymark journeys validate` as a CI job would run it: exit codes and messages that name
//! the file and the place to fix.

use std::process::Command;

fn waymark(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(args)
        .output()
        .expect("run waymark");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn valid_examples_pass() {
    let (code, stdout, stderr) = waymark(&["journeys", "validate", &example("examples/journeys")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("welcome.yaml") && stdout.contains("9 nodes"),
        "{stdout}"
    );
}

#[test]
fn invalid_files_fail_with_file_path_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "key: typo\nentry: { event: Go }\nnodes:\n  - id: a\n    type: end\n    nxt: b\n",
    )
    .expect("write");
    let graph = dir.path().join("graph.json");
    std::fs::write(&graph, r#"{"key": "graph", "entry": {"event": "Go", "when": "event.x >"}, "nodes": [{"id": "a", "type": "message", "channel": "log", "template": "t", "next": "nowhere"}]}"#).expect("write");
    let (code, _, stderr) = waymark(&[
        "journeys",
        "validate",
        typo.to_str().expect("utf8"),
        graph.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("typo.yaml: nodes[0]")
            && stderr.contains("nxt")
            && stderr.contains("line 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("graph.json: entry.when") && stderr.contains("invalid_expression"),
        "{stderr}"
    );
    assert!(
        stderr.contains("graph.json: nodes[0].next") && stderr.contains("nowhere"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 of 2 journey files are invalid"),
        "{stderr}"
    );
}

#[test]
fn missing_paths_are_an_error() {
    let (code, _, stderr) = waymark(&["journeys", "validate", "/nonexistent/journey.yaml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/journey.yaml: no such file"),
        "{stderr}"
    );
}

#[test]
fn schema_is_printed_as_json() {
    let (code, stdout, _) = waymark(&["journeys", "schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(schema["title"], "Journey");
}

#[test]
fn simulate_runs_days_of_waits_instantly_and_sends_nothing() {
    let (code, stdout, stderr) = waymark(&[
        "journeys",
        "simulate",
        &example("examples/journeys/welcome.yaml"),
        "--events",
        &example("examples/events/welcome.jsonl"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 people entered"), "{stdout}");
    // Kenji never created a project: nudged two days after 09:00 Tokyo time.
    assert!(
        stdout.contains("2026-11-05T00:00:00.000Z  sent activation-nudge on log"),
        "{stdout}"
    );
    assert!(
        stdout.contains("called POST http://127.0.0.1:9900/crm/signups"),
        "{stdout}"
    );
    let (code, json_out, _) = waymark(&[
        "journeys",
        "simulate",
        &example("examples/journeys/welcome.yaml"),
        "--events",
        &example("examples/events/welcome.jsonl"),
        "--json",
        "--webhooks",
        "fail",
    ]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&json_out).expect("json");
    let ada = report
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["person"] == "ada")
        .expect("ada");
    let steps = ada["instances"][0]["steps"].as_array().expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s["node"] == "tell-crm" && s["what"] == "error"),
        "failed webhook takes on_error: {steps:?}"
    );
}

#[test]
fn simulate_reports_bad_event_lines_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "{\"type\": \"track\", \"userId\": \"a\", \"event\": \"Go\"}\n\n{\"type\": \"track\", \"event\": \"Go\"}\n").expect("write");
    let (code, _, stderr) = waymark(&[
        "journeys",
        "simulate",
        &example("examples/journeys/welcome.yaml"),
        "--events",
        events.to_str().expect("utf8"),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("events.jsonl:3: userId"), "{stderr}");
}

#[test]
fn audience_files_are_validated_offline_with_their_references() {
    let (code, stdout, stderr) =
        waymark(&["audiences", "validate", &example("examples/audiences")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("vip.yaml: ok (vip, 0 behaviour calls, reads 2 audiences)"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // Lines and columns are the rule's own (YAML takes the block's indentation away).
    std::fs::write(
        dir.path().join("bad.yaml"),
        "key: bad\nrule: |\n  events.count(\"Order\", \"30d\") >= 1\n  && evnt.x\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("lonely.json"),
        r#"{"key": "lonely", "rule": "in_audience(\"nobody\")"}"#,
    )
    .expect("write");
    let (code, _, stderr) = waymark(&["audiences", "validate", dir.path().to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("bad.yaml: rule line 2 column 4") && stderr.contains("`evnt`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lonely.json: rule") && stderr.contains("unknown_audience"),
        "{stderr}"
    );
}
