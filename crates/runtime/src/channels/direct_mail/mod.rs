//! The direct mail channel: rows appended to CSV files for a print provider, one file per
//! run, written atomically.

mod config;
mod sender;

pub use config::DirectMailConfig;
pub use sender::{Extractor, rotate_runs};
