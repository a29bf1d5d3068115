//! `[direct_mail]`: where the print provider's files go.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Direct mail: CSV files for a print provider.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectMailConfig {
    /// Where the files go (created if missing).
    pub folder: PathBuf,
    /// How long one run (one file) collects rows: `1h` (default), `1d`.
    #[serde(default = "default_run")]
    pub every: String,
    /// The template data fields to write, in this order (default: all, by name).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Split at this many rows: a file that reaches it is complete and the next row starts
    /// a new one (default: no limit but `every`).
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Leave out a row whose data columns are exactly those of an earlier row in the same
    /// file (the same household sent twice); default true.
    #[serde(default = "default_dedupe")]
    pub dedupe: bool,
}

fn default_dedupe() -> bool {
    true
}

fn default_run() -> String {
    "1h".into()
}
