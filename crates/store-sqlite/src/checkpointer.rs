//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on the
//! one writer thread, so every few thousand pages one commit also copies the WAL into the
//! database file and fsyncs it while ingest waits. Here the writer's connection has
//! `wal_autocheckpoint = 0` and this thread runs PASSIVE checkpoints beside it: a passive
//! checkpoint takes no lock the writer needs, copies what no reader still uses, and the
//! writer rewinds the WAL on its next transaction once everything was copied.
//!
//! Under sustained writing that moment never comes: the writer appends between any two
//! passive checkpoints, so the WAL is never all copied when a transaction starts, and it
//! grows without end (6.4 GB beside a 1.5 GB database after 76 s of ingest). So once it is
//! past a limit, this thread asks the writer to rewind it: between two of its transactions
//! the writer runs a TRUNCATE checkpoint, which copies the little that is left (passive
//! checkpoints already copied nearly all of it), waits for readers on older snapshots to
//! finish, and empties the file. Why the writer and not this thread: a checkpoint that
//! waits for the writer's lock here rarely gets it, since the writer takes it again as soon
//! as it lets it go.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checked. At SQLite's default threshold (1,000 pages) a busy writer
/// fills one in about this long.
const EVERY: Duration = Duration::from_millis(100);

/// WAL size past which the writer is asked to rewind it (a few seconds of heavy ingest;
/// each rewind costs the writer one short wait).
pub const WAL_LIMIT_BYTES: u64 = 256 << 20;

/// When the WAL is past its limit, and whether the writer should rewind it.
#[derive(Debug)]
pub struct Rewind {
    pub limit_bytes: AtomicU64,
    pub wanted: AtomicBool,
}

impl Default for Rewind {
    fn default() -> Self {
        Self {
            limit_bytes: AtomicU64::new(WAL_LIMIT_BYTES),
            wanted: AtomicBool::new(false),
        }
    }
}

/// Checkpoints `path` until `stop` is dropped or sent to, then once more; asks for a
/// rewind once the WAL is past its limit.
pub fn run(path: &Path, stop: Receiver<()>, rewind: Arc<Rewind>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database; the WAL will grow until restart");
            return;
        }
    };
    let page_size = match conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)) {
        Ok(size) => size.max(0) as u64,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot read the page size; the WAL will grow until restart");
            return;
        }
    };
    loop {
        let stopping = !matches!(stop.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
        match checkpoint(&conn) {
            Ok((frames, _)) => {
                let bytes = frames.max(0) as u64 * page_size;
                if bytes > rewind.limit_bytes.load(Ordering::Relaxed) {
                    rewind.wanted.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; trying again"),
        }
        if stopping {
            return;
        }
    }
}

/// How long a rewind waits for readers on older snapshots (ingest waits meanwhile).
const REWIND_WAIT: Duration = Duration::from_millis(50);

/// On the writer's connection, between transactions: copies all of the WAL and empties
/// it, waiting up to [`REWIND_WAIT`] for readers on older snapshots. Whether it was
/// emptied; the connection's own busy timeout is `busy` again afterwards.
pub fn rewind(conn: &Connection, busy: Duration) -> rusqlite::Result<bool> {
    conn.busy_timeout(REWIND_WAIT)?;
    let emptied = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0).map(|busy| busy == 0)
    });
    conn.busy_timeout(busy)?;
    emptied
}

/// One passive checkpoint: (frames in the WAL, frames copied into the database).
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}
