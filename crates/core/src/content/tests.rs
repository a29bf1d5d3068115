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

#[test]
fn partials_that_include_each_other_are_refused_with_the_loop_named() {
    let sms = doc(json!({"channel": "sms", "text": "{{> pa}}"}));
    let errs = compile(
        &sms,
        &partials(&[("pa", "{{> pb}}"), ("pb", "x {{> pc}}"), ("pc", "{{> pa}}")]),
    )
    .expect_err("a loop");
    assert_eq!(errs[0].code, "partial_cycle");
    assert!(
        errs[0]
            .message
            .contains("{{> pa}} -> {{> pb}} -> {{> pc}} -> {{> pa}}"),
        "{}",
        errs[0].message
    );
    // Shared partials without a loop are fine.
    let diamond = partials(&[
        ("pa", "{{> pb}}{{> pc}}"),
        ("pb", "{{> pd}}"),
        ("pc", "{{> pd}}"),
        ("pd", "d"),
    ]);
    assert!(compile(&sms, &diamond).is_ok());
}

#[test]
fn rendering_stops_at_its_output_limit() {
    // No loop, but each level includes the one below twice: 2^30 copies of the leaf.
    let mut list: Vec<(String, String)> = vec![("p0".into(), "0123456789".into())];
    for i in 1..=30 {
        list.push((
            format!("p{i}"),
            format!("{{{{> p{}}}}}{{{{> p{}}}}}", i - 1, i - 1),
        ));
    }
    let parts: BTreeMap<String, String> = list.into_iter().collect();
    let t =
        compile(&doc(json!({"channel": "sms", "text": "{{> p30}}"})), &parts).expect("compiles");
    let err = t.render(&json!({})).expect_err("too large");
    assert!(err.contains("1 MB"), "{err}");
}

#[test]
fn unknown_helpers_and_syntax_errors_are_told_with_line_and_column() {
    let errs = compile(
        &doc(json!({"channel": "email", "subject": "s",
                    "html": "<p>\n{{#if x}}{{format_curency total \"EUR\"}}{{/if}}</p>"})),
        &partials(&[]),
    )
    .expect_err("unknown helper");
    assert_eq!(
        (errs[0].field.as_str(), errs[0].line, errs[0].column),
        ("html", Some(2), Some(10))
    );
    assert!(
        errs[0].message.contains("format_currency"),
        "lists the real ones: {}",
        errs[0].message
    );
    // Subexpressions are looked into too; known helpers and plain values pass.
    assert!(
        compile(
            &doc(json!({"channel": "sms", "text": "{{upper (nope x)}}"})),
            &partials(&[])
        )
        .is_err()
    );
    assert!(compile(&doc(json!({"channel": "sms", "text": "{{upper (lower x)}} {{missing_value}} {{#each items}}{{this}}{{/each}}"})), &partials(&[])).is_ok());
    let errs = compile(
        &doc(json!({"channel": "sms", "text": "{{#if a}}x{{/each}}"})),
        &partials(&[]),
    )
    .expect_err("mismatched");
    assert!(
        errs[0].message.contains("{{#if}} is closed by {{/each}}"),
        "{}",
        errs[0].message
    );
}
