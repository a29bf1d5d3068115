//! Template rendering: the email HTML of `benches/templates/order.html` with
//! `benches/templates/order.json`, the same template and data `benches/peers/handlebars`
//! renders with handlebars.js. Run: `cargo bench -p waymark-core --bench render`.

use std::collections::BTreeMap;

use divan::Bencher;
use serde_json::Value;
use waymark_core::content::{ContentDoc, compile};

fn main() {
    divan::main();
}

const HTML: &str = include_str!("../../../benches/templates/order.html");
const DATA: &str = include_str!("../../../benches/templates/order.json");

#[divan::bench]
fn render_order_email_html(bencher: Bencher) {
    let doc = ContentDoc {
        channel: "email".into(),
        subject: Some("Order {{event.properties.order_id}}".into()),
        preheader: None,
        html: Some(HTML.into()),
        text: None,
        title: None,
        body: None,
        image: None,
        data: None,
        sender: None,
    };
    let template = compile(&doc, &BTreeMap::new()).expect("compiles");
    let data: Value = serde_json::from_str(DATA).expect("json");
    let out = template.render_field("html", &data).expect("renders");
    assert!(out.contains("Ada &lt;Lovelace&gt;") && out.contains("Brass gears"));
    bencher.bench(|| {
        template
            .render_field("html", divan::black_box(&data))
            .expect("renders")
    });
}
