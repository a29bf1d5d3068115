//! The channels as a library: each sender driven through `Channels::deliver` against a
//! loopback stand-in for its provider (`waymark_test_support`), without a server; a module
//! per channel.

mod direct_mail;
mod email;
mod push;
mod sms;
mod support;
mod webhook;
