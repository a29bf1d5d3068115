//! Loopback stand-ins for providers, one place for every test suite: the channels' library
//! tests (`crates/runtime/tests`) and the binary's live tests (`crates/cli/tests/live`).
//! Each is a real server on 127.0.0.1: an HTTP recorder and a CRM (http), aiosmtpd (smtp,
//! with TLS and AUTH in tls), Twilio (twilio), FCM and APNs (push), an HTTPS server (tls).

pub mod http;
pub mod push;
pub mod smtp;
pub mod tls;
pub mod twilio;
