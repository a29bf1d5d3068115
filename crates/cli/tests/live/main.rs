//! Live journeys in a running server (the real binary, real providers on loopback), one
//! module per capability. Stand-ins and helpers shared by them are in `support`.

#[path = "../common.rs"]
mod common;
mod support;

mod audiences;
mod campaigns;
mod decisioning;
mod direct_mail;
mod email;
mod governance;
mod push;
mod reads;
mod sms;
mod timers;
mod webhooks;
