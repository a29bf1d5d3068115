//! Engagement tracking for email HTML: every http(s) link becomes a signed redirect through
//! this server and a one-pixel image is added, so opens and clicks come back as events
//! (`Email Opened`, `Email Link Clicked`) on the person's profile.
//!
//! The HTML is rewritten with lol_html (a streaming HTML rewriter that parses like a
//! browser), not with patterns: links inside comments, scripts or odd quoting are handled as
//! a mail client would see them.

use std::cell::Cell;

use lol_html::html_content::ContentType;
use lol_html::{RewriteStrSettings, element, rewrite_str};
use waymark_core::links;

pub struct Tracker {
    /// Public base URL of this server, without a trailing slash.
    pub base: String,
    pub secret: Vec<u8>,
    pub opens: bool,
    pub clicks: bool,
}

/// Which message a link belongs to, as signed into it.
pub struct Sent<'a> {
    pub message: &'a str,
    pub journey: &'a str,
    pub identity: &'a str,
}

impl Tracker {
    fn url(&self, path: &str, params: &[(&str, &str)]) -> String {
        reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params)
            .map(String::from)
            .unwrap_or_default()
    }

    /// The open pixel's URL.
    pub fn open_url(&self, sent: &Sent<'_>) -> String {
        let s = links::sign(
            &self.secret,
            &links::open_payload(sent.message, sent.journey, sent.identity),
        );
        self.url(
            "/v1/email/open",
            &[
                ("m", sent.message),
                ("j", sent.journey),
                ("i", sent.identity),
                ("s", &s),
            ],
        )
    }

    /// The redirect a link to `target` becomes.
    pub fn click_url(&self, sent: &Sent<'_>, target: &str) -> String {
        let s = links::sign(
            &self.secret,
            &links::click_payload(sent.message, sent.journey, sent.identity, target),
        );
        self.url(
            "/v1/email/click",
            &[
                ("m", sent.message),
                ("j", sent.journey),
                ("i", sent.identity),
                ("u", target),
                ("s", &s),
            ],
        )
    }

    /// The HTML with its links wrapped and the pixel added. Links that are not http(s)
    /// (mailto:, tel:, anchors), links to this server (unsubscribe) and links marked
    /// `data-waymark-track="false"` are left alone.
    pub fn rewrite(&self, html: &str, sent: &Sent<'_>) -> Result<String, String> {
        let saw_body = Cell::new(false);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0;width:1px;height:1px\">",
            html_escape::encode_double_quoted_attribute(&self.open_url(sent))
        );
        let mut settings = RewriteStrSettings::new();
        if self.clicks {
            settings = settings.append_element_content_handler(element!("a[href]", |el| {
                if el.get_attribute("data-waymark-track").as_deref() == Some("false") {
                    el.remove_attribute("data-waymark-track");
                    return Ok(());
                }
                let raw = el.get_attribute("href").unwrap_or_default();
                // Attribute text as written; the URL a mail client follows has its
                // character references decoded (`&amp;` is `&`).
                let target = html_escape::decode_html_entities(raw.trim()).into_owned();
                let lower = target.to_ascii_lowercase();
                let web = lower.starts_with("http://") || lower.starts_with("https://");
                if web && !target.starts_with(&self.base) {
                    let wrapped = self.click_url(sent, &target);
                    el.set_attribute(
                        "href",
                        &html_escape::encode_double_quoted_attribute(&wrapped),
                    )?;
                }
                Ok(())
            }));
        }
        if self.opens {
            settings = settings.append_element_content_handler(element!("body", |el| {
                saw_body.set(true);
                el.append(&pixel, ContentType::Html);
                Ok(())
            }));
        }
        let mut out = rewrite_str(html, settings).map_err(|e| format!("tracking links: {e}"))?;
        if self.opens && !saw_body.get() {
            out.push_str(&pixel);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker {
            base: "https://wm.example.com".into(),
            secret: b"secret".to_vec(),
            opens: true,
            clicks: true,
        }
    }

    const SENT: Sent<'static> = Sent {
        message: "k1",
        journey: "welcome",
        identity: "email:ada@example.com",
    };

    /// The `u` parameter of every click link in `html`, and whether its signature holds.
    fn click_targets(html: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for part in html.split("href=\"").skip(1) {
            let href = html_escape::decode_html_entities(part.split('"').next().expect("href"))
                .into_owned();
            let Ok(url) = reqwest::Url::parse(&href) else {
                continue;
            };
            if url.path() != "/v1/email/click" {
                out.push((href, false));
                continue;
            }
            let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            let ok = links::verify(
                b"secret",
                &links::click_payload(&q["m"], &q["j"], &q["i"], &q["u"]),
                &q["s"],
            );
            out.push((q["u"].clone(), ok));
        }
        out
    }

    #[test]
    fn web_links_become_signed_redirects_to_the_decoded_url() {
        let html = r#"<html><body><p><a href="https://shop.example.com/o?id=1&amp;ref=mail">order</a>
            <a href="mailto:help@example.com">mail</a> <a href="https://wm.example.com/v1/unsubscribe?x=1">unsub</a>
            <a href="HTTP://Plain.example.com/" data-waymark-track="false">plain</a>
            <a href="http://other.example.com/#top">other</a></p></body></html>"#;
        let out = tracker().rewrite(html, &SENT).expect("rewrite");
        assert_eq!(
            click_targets(&out),
            vec![
                ("https://shop.example.com/o?id=1&ref=mail".to_owned(), true),
                ("mailto:help@example.com".to_owned(), false),
                (
                    "https://wm.example.com/v1/unsubscribe?x=1".to_owned(),
                    false
                ),
                ("HTTP://Plain.example.com/".to_owned(), false),
                ("http://other.example.com/#top".to_owned(), true),
            ]
        );
        assert!(!out.contains("data-waymark-track"));
    }

    #[test]
    fn the_pixel_goes_at_the_end_of_the_body_or_the_end_of_a_fragment() {
        let out = tracker()
            .rewrite("<html><body><p>Hi</p></body></html>", &SENT)
            .expect("rewrite");
        let pixel_at = out.find("/v1/email/open").expect("pixel");
        assert!(pixel_at > out.find("<p>Hi</p>").expect("text"));
        assert!(pixel_at < out.find("</body>").expect("body"));
        let fragment = tracker().rewrite("<p>Hi</p>", &SENT).expect("rewrite");
        assert!(fragment.starts_with("<p>Hi</p><img src=\"https://wm.example.com/v1/email/open?"));
        let off = Tracker {
            opens: false,
            clicks: false,
            ..tracker()
        };
        let html = "<p><a href=\"https://x.example.com\">x</a></p>";
        assert_eq!(off.rewrite(html, &SENT).expect("rewrite"), html);
    }
}
