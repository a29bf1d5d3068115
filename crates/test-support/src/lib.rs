//! Loopback stand-ins for providers, one place for every test suite: the channels' library
//! tests (`crates/runtime/tests`) and the binary's live tests (`crates/cli/tests/live`).
//! Each is a real server on 127.0.0.1 (an HTTP recorder, an aiosmtpd SMTP server).

pub mod http;
pub mod smtp;
