use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn doc(v: serde_json::Value) -> ContentDoc {
    serde_json::from_value(v).expect("shape")
}

fn partials(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn email_html_is_escaped_text_and_subject_are_not_and_raw_opts_out() {
    let t = compile(
        &doc(json!({
            "channel": "email",
            "subject": "Hi {{default profile.traits.first_name \"there\"}} & welcome",
            "html": "<p>Hi {{profile.traits.first_name}}</p>{{{journey.banner}}}{{> footer}}",
            "text": "Hi {{profile.traits.first_name}}",
        })),
        &partials(&[("footer", "<small>{{upper profile.traits.city}}</small>")]),
    )
    .expect("compiles");
    let out = t
        .render(&json!({
            "profile": {"traits": {"first_name": "<Ada>", "city": "oslo"}},
            "journey": {"banner": "<b>sale</b>"},
        }))
        .expect("renders");
    assert_eq!(out.fields["subject"], "Hi <Ada> & welcome");
    assert_eq!(
        out.fields["html"],
        "<p>Hi &lt;Ada&gt;</p><b>sale</b><small>OSLO</small>"
    );
    assert_eq!(out.fields["text"], "Hi <Ada>");
    let fallback = t
        .render(&json!({"profile": {"traits": {}}}))
        .expect("renders");
    assert_eq!(fallback.fields["subject"], "Hi there & welcome");
}

#[test]
fn helpers_format_numbers_money_dates_case_math_and_arrays() {
    let t = compile(
        &doc(json!({
            "channel": "sms",
            "text": "{{format_number event.properties.total 2}}|{{format_currency event.properties.total \"EUR\"}}|{{format_currency 1500 \"JPY\"}}|{{format_date event.timestamp \"%Y-%m-%d %H:%M\"}}|{{format_date event.timestamp \"%H:%M\" \"America/New_York\"}}|{{title profile.traits.name}}|{{math event.properties.qty \"*\" 3}}|{{first event.properties.items}}|{{join event.properties.items \", \"}}|{{len event.properties.items}}|{{#if (gt event.properties.qty 1)}}many{{/if}}"
        })),
        &BTreeMap::new(),
    )
    .expect("compiles");
    let out = t
        .render(&json!({
            "profile": {"traits": {"name": "ada LOVELACE", "timezone": "Asia/Tokyo"}},
            "event": {"timestamp": "2026-11-02T10:30:00Z", "properties": {"total": 1234567.891, "qty": 2, "items": ["tea", "cake"]}},
        }))
        .expect("renders");
    assert_eq!(
        out.fields["text"],
        "1,234,567.89|€1,234,567.89|¥1,500|2026-11-02 19:30|05:30|Ada Lovelace|6|tea|tea, cake|2|many",
        "dates default to the person's time zone"
    );
}

#[test]
fn a_failing_helper_fails_the_render_with_a_reason() {
    let t = compile(
        &doc(json!({"channel": "push", "title": "{{math 1 \"/\" event.properties.zero}}"})),
        &BTreeMap::new(),
    )
    .expect("compiles");
    let err = t
        .render(&json!({"event": {"properties": {"zero": 0}}}))
        .expect_err("division by zero");
    assert!(err.contains("division by zero"), "{err}");
}

#[test]
fn bad_documents_say_which_field() {
    let problems = compile(
        &doc(json!({"channel": "email", "html": "{{#if x}}", "body": "x"})),
        &BTreeMap::new(),
    )
    .expect_err("invalid");
    let fields: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.code, p.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("unexpected_field", "body"),
            ("missing_field", "subject"),
            ("invalid_template", "html"),
        ],
        "{problems:?}"
    );
    let problems = compile(
        &doc(json!({"channel": "sms", "text": "{{> legal}} {{> missing}}"})),
        &partials(&[("legal", "{{> nested}}")]),
    )
    .expect_err("missing partials");
    let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("missing")));
    assert!(
        messages.iter().any(|m| m.contains("nested")),
        "partials of partials are followed"
    );
    assert!(
        compile(
            &doc(json!({"channel": "fax", "text": "x"})),
            &BTreeMap::new()
        )
        .is_err()
    );
}

#[test]
fn partials_used_finds_names() {
    assert_eq!(
        partials_used("a {{> footer}} b {{~> legal/eu }} {{x}} {{>footer}}")
            .into_iter()
            .collect::<Vec<_>>(),
        ["footer", "legal/eu"]
    );
}
