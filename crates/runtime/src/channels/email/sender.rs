//! The `email` channel: SMTP over pooled lettre connections (plain, STARTTLS or TLS, with
//! auth, all from `email.smtp_url`). Each message is multipart/alternative (text and HTML),
//! with a Message-ID made from the step's idempotency key (a repeat after a crash is the same
//! message to the receiving side) and, when `email.public_url` is set, RFC 8058 one-click
//! `List-Unsubscribe` with a signed link, and (unless turned off) an open pixel and signed
//! click redirects in the HTML part (see `tracking`).

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use serde_json::json;
use waymark_store::{Delivery, OutboxItem};

use super::EmailConfig;
use crate::channels::Channel;
use crate::delivery::{Attempt, Bounce, Retry};

/// A sending configuration: who an email is from and where replies go.
struct Sender {
    from: Mailbox,
    reply_to: Option<Mailbox>,
}

impl Sender {
    fn parse(at: &str, from: &str, reply_to: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            from: from
                .parse()
                .map_err(|e| format!("{at}.from {from:?}: {e}"))?,
            reply_to: reply_to
                .map(|r| r.parse().map_err(|e| format!("{at}.reply_to {r:?}: {e}")))
                .transpose()?,
        })
    }
}

pub struct Mailer {
    /// Pooled lettre connections (see `smtp_pool`).
    pool: super::pool::SmtpPool,
    /// `[email]`'s From and Reply-To.
    sender: Sender,
    /// `[email.senders.<name>]`, for templates that name one.
    senders: std::collections::HashMap<String, Sender>,
    /// Public base URL and link secret, for unsubscribe links.
    unsubscribe: Option<(String, Vec<u8>)>,
    tracking: Option<super::tracking::Tracker>,
    /// Sends at once, no more than pooled connections: with hundreds of deliveries in
    /// flight, lettre's pool stalled (measured: ~40 emails/s, each batch freed only when
    /// its 120 s lease ran out), so callers queue here instead of inside the pool.
    sending: tokio::sync::Semaphore,
}

impl Mailer {
    /// Checks the configuration at start, so a typo stops the server rather than every send.
    pub fn new(config: &EmailConfig, link_secret: &[u8]) -> Result<Self, String> {
        let pool = super::pool::SmtpPool::for_url(
            &config.smtp_url,
            config.ca_file.as_deref(),
            config.pool_size as usize,
        )?;
        let sender = Sender::parse("email", &config.from, config.reply_to.as_deref())?;
        let senders = config
            .senders
            .iter()
            .map(|(name, s)| {
                if !waymark_core::content::is_sender_name(name) {
                    return Err(format!(
                        "email.senders.{name}: a name is a-z, 0-9, _ and - (templates name it)"
                    ));
                }
                let at = format!("email.senders.{name}");
                Ok((
                    name.clone(),
                    Sender::parse(&at, &s.from, s.reply_to.as_deref())?,
                ))
            })
            .collect::<Result<_, String>>()?;
        if let Some(url) = &config.public_url {
            reqwest::Url::parse(url).map_err(|e| format!("email.public_url {url:?}: {e}"))?;
        }
        let tracking = config
            .public_url
            .as_ref()
            .filter(|_| config.track_opens || config.track_clicks)
            .map(|u| super::tracking::Tracker {
                base: u.trim_end_matches('/').to_owned(),
                secret: link_secret.to_vec(),
                opens: config.track_opens,
                clicks: config.track_clicks,
            });
        Ok(Self {
            pool,
            tracking,
            sending: tokio::sync::Semaphore::new(config.pool_size.max(1) as usize),
            sender,
            senders,
            unsubscribe: config
                .public_url
                .as_ref()
                .map(|u| (u.trim_end_matches('/').to_owned(), link_secret.to_vec())),
        })
    }

    /// The one-click link: it leaves the message's subscription list if it has one (what
    /// mailbox providers expect: "stop this kind of mail"), else all marketing email.
    fn unsubscribe_link(&self, to: &str, subscription: Option<&str>) -> Option<String> {
        let (base, secret) = self.unsubscribe.as_ref()?;
        let identity = format!("email:{to}");
        let scope = subscription.map_or_else(|| "email".to_owned(), |l| format!("list:{l}"));
        let signature = waymark_core::links::sign(
            secret,
            &waymark_core::links::unsubscribe_payload(&identity, &scope),
        );
        // Query encoding by the URL library, not by hand.
        reqwest::Url::parse_with_params(
            &format!("{base}/v1/unsubscribe"),
            [
                ("c", scope.as_str()),
                ("i", identity.as_str()),
                ("s", signature.as_str()),
            ],
        )
        .ok()
        .map(String::from)
    }

    fn build(
        &self,
        item: &OutboxItem,
        to: &str,
        message: &waymark_engine::Message,
    ) -> Result<Message, String> {
        let field = |name: &str| message.field(name);
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("recipient {to:?} is not an email address: {e}"))?;
        let sender = match message.content.as_ref().and_then(|c| c.sender.as_deref()) {
            None => &self.sender,
            Some(name) => self.senders.get(name).ok_or_else(|| {
                format!("the template sends from {name:?}, which is not in [email.senders]")
            })?,
        };
        let domain = sender.from.email.domain().to_owned();
        let message_id = waymark_core::delivery::email_message_id(&item.key, item.seq, &domain);
        let mut builder = Message::builder()
            .from(sender.from.clone())
            .to(to.clone())
            .subject(field("subject").unwrap_or_default())
            .message_id(Some(message_id));
        if let Some(r) = &sender.reply_to {
            builder = builder.reply_to(r.clone());
        }
        let subscription = message.subscription.as_deref();
        if let Some(link) = self.unsubscribe_link(to.email.as_ref(), subscription) {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{link}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let preheader = field("preheader").map(|p| {
            format!(
                "<div style=\"display:none;max-height:0;overflow:hidden\">{}</div>",
                html_escape(p)
            )
        });
        let identity = format!("email:{}", to.email);
        let sent = super::tracking::Sent {
            message: &item.key,
            journey: &item.journey,
            identity: &identity,
        };
        let html = match (field("html"), &self.tracking) {
            (Some(h), Some(tracker)) => Some(tracker.rewrite(h, &sent)?),
            (h, _) => h.map(str::to_owned),
        }
        .map(|h| format!("{}{h}", preheader.unwrap_or_default()));
        let text = field("text").map(str::to_owned);
        let part =
            |kind: header::ContentType, body: String| SinglePart::builder().header(kind).body(body);
        let message = match (text, html) {
            (Some(t), Some(h)) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(part(header::ContentType::TEXT_PLAIN, t))
                    .singlepart(part(header::ContentType::TEXT_HTML, h)),
            ),
            (Some(t), None) => builder.singlepart(part(header::ContentType::TEXT_PLAIN, t)),
            (None, Some(h)) => builder.singlepart(part(header::ContentType::TEXT_HTML, h)),
            (None, None) => return Err("the rendered email has no text and no html".into()),
        };
        message.map_err(|e| e.to_string())
    }

    /// Sends one rendered email. The SMTP server's answer decides: accepted is sent; a 4xx
    /// or a connection failure is retried with backoff; a 5xx is a hard bounce (failed now,
    /// and the address goes on the suppression list). A 4xx on the last attempt is a soft
    /// bounce, counted against the address; a connection failure says nothing about the
    /// address and is not counted.
    async fn send_email(
        &self,
        item: &OutboxItem,
        email: &waymark_engine::Message,
        retry: Retry,
    ) -> (Delivery, Option<Bounce>) {
        let Some(to) = email.to.as_deref() else {
            return (
                Delivery::Failed("the message has no recipient".into()),
                None,
            );
        };
        let message = match self.build(item, to, email) {
            Ok(m) => m,
            Err(reason) => return (Delivery::Failed(reason), None),
        };
        let Ok(_slot) = self.sending.acquire().await else {
            let later = Delivery::Retry {
                at: waymark_store::wall_clock_ms() + 1_000,
                error: "the mailer is shutting down".into(),
            };
            return (later, None);
        };
        let sent = self
            .pool
            .send(message.envelope(), &message.formatted())
            .await;
        let err = match sent {
            Ok(response) => {
                let answer = json!({
                    "smtp_code": response.code().to_string(),
                    "smtp_message": response.message().collect::<Vec<_>>().join(" "),
                });
                return (Delivery::Delivered(answer), None);
            }
            Err(super::pool::PoolError::Connect(reason)) => {
                // Nothing is known about the address: retry, never a bounce.
                let reason = format!("SMTP: {reason}");
                return (crate::delivery::retry_or_fail(item, retry, reason), None);
            }
            Err(super::pool::PoolError::Smtp(err)) => err,
        };
        if err.is_permanent() {
            let reason = format!("hard bounce: {}", crate::delivery::with_causes(&err));
            let bounce = Bounce::Hard {
                reason: waymark_core::governance::HARD_BOUNCE,
                detail: reason.clone(),
            };
            return (Delivery::Failed(reason), Some(bounce));
        }
        let reason = format!("SMTP: {}", crate::delivery::with_causes(&err));
        let delivery = crate::delivery::retry_or_fail(item, retry, reason.clone());
        let soft = (err.is_transient() && matches!(delivery, Delivery::Failed(_)))
            .then_some(Bounce::Soft(reason));
        (delivery, soft)
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[async_trait::async_trait]
impl Channel for Mailer {
    async fn send(
        &self,
        item: &OutboxItem,
        message: &waymark_engine::Message,
        retry: Retry,
    ) -> Attempt {
        let (delivery, bounce) = self.send_email(item, message, retry).await;
        Attempt { delivery, bounce }
    }
}
