//! What runs behind the API: the timer service, the outbox dispatcher with its pacing, the
//! channels that talk to providers, and retention. Only this crate makes outgoing calls to
//! providers and webhook endpoints.
//!
//! - `timers`: fires due journey timers.
//! - `dispatcher`: claims due outbox rows under a lease, delivers each on its channel,
//!   records the outcomes in batches.
//! - `pace`: per-channel send rates.
//! - `delivery`: the vocabulary every channel answers in (attempts, retries, bounces).
//! - `channels`: one module per channel (webhook, email, sms, push, direct mail).
//! - `http`: the HTTP client every outgoing call starts from.
//! - `retention`: prunes what is past its retention.

pub mod channels;
pub mod delivery;
pub mod dispatcher;
pub mod http;
pub mod pace;
pub mod retention;
pub mod timers;
