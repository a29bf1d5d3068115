//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on the
//! one writer thread, so every few thousand pages one commit also copies the WAL into the
//! database file and fsyncs it while ingest waits. Here the writer's connection has
//! `wal_autocheckpoint = 0` and this thread runs PASSIVE checkpoints beside it: a passive
//! checkpoint takes no lock the writer needs, copies what no reader still uses, and the
//! writer rewinds the WAL on its next transaction once everything was copied.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checked. At SQLite's default threshold (1,000 pages) a busy writer
/// fills one in about this long.
const EVERY: Duration = Duration::from_millis(100);

/// Checkpoints `path` until `stop` is dropped or sent to, then once more.
pub fn run(path: &Path, stop: Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database; the WAL will grow until restart");
            return;
        }
    };
    loop {
        let stopping = !matches!(stop.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
        if let Err(e) = checkpoint(&conn) {
            tracing::warn!(error = %e, "WAL checkpoint failed; trying again");
        }
        if stopping {
            return;
        }
    }
}

/// One passive checkpoint: (frames in the WAL, frames copied into the database).
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}
