//! The `direct_mail` channel: each message becomes a row of a CSV file for a print provider,
//! one file per run (`direct_mail.every`, default an hour), written to `direct_mail.folder`.
//! A run's file is `direct-mail-<start>.csv.part` while it grows and is renamed to `.csv`
//! when the run ends, so a provider collecting `*.csv` only ever takes whole files.
//!
//! Columns: `message_id` (the step's idempotency key), `journey`, then the template's `data`
//! fields, in `direct_mail.columns` order if given, else by name. A row is synced to disk
//! before the message counts as sent; a crash between the two can repeat it in a later file
//! with the same `message_id`, which is how the provider recognises it. A file is also
//! complete once it holds `direct_mail.max_rows` rows; with `direct_mail.dedupe` (default),
//! a row whose data columns repeat an earlier row of the same file is not written (the
//! message is done, its result naming the row it repeats).

use std::path::PathBuf;

use serde_json::{Value, json};
use waymark_engine::Message;
use waymark_store::{Delivery, OutboxItem, wall_clock_ms};

use super::DirectMailConfig;
use crate::channels::Channel;
use crate::delivery::{Attempt, Retry};

pub struct Extractor {
    folder: PathBuf,
    every_ms: i64,
    columns: Option<Vec<String>>,
    max_rows: Option<u64>,
    dedupe: bool,
    run: tokio::sync::Mutex<Option<Run>>,
}

struct Run {
    started: i64,
    part: PathBuf,
    writer: csv::Writer<std::fs::File>,
    /// The data columns this run's header names.
    columns: Vec<String>,
    rows: u64,
    /// With dedupe: each written row's data cells, by a hash, with the row's number. Bounded
    /// by the rows of one file.
    seen: std::collections::HashMap<u64, u64>,
}

impl Run {
    fn finish(self) -> Result<PathBuf, String> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| format!("closing {}: {e}", self.part.display()))?;
        file.sync_all()
            .map_err(|e| format!("syncing {}: {e}", self.part.display()))?;
        let done = self.part.with_extension("");
        std::fs::rename(&self.part, &done)
            .map_err(|e| format!("renaming {}: {e}", self.part.display()))?;
        tracing::info!(file = %done.display(), rows = self.rows, "direct mail file complete");
        Ok(done)
    }
}

impl Extractor {
    pub fn new(config: &DirectMailConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&config.folder)
            .map_err(|e| format!("direct_mail.folder {}: {e}", config.folder.display()))?;
        let every_ms = waymark_core::journey::parse_duration_ms(&config.every)
            .map_err(|e| format!("direct_mail.every: {e}"))?;
        if every_ms < 1_000 {
            return Err("direct_mail.every: at least 1s".into());
        }
        // Files a crash left growing are complete as far as they go: hand them over.
        for entry in std::fs::read_dir(&config.folder)
            .map_err(|e| format!("direct_mail.folder {}: {e}", config.folder.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "part") {
                let _ = std::fs::rename(&path, path.with_extension(""));
            }
        }
        Ok(Self {
            folder: config.folder.clone(),
            every_ms,
            columns: config.columns.clone(),
            max_rows: config.max_rows.filter(|n| *n > 0),
            dedupe: config.dedupe,
            run: tokio::sync::Mutex::new(None),
        })
    }

    /// Ends the current run if its time is up (called on every append and once a second).
    pub async fn rotate(&self, now: i64) -> Result<(), String> {
        self.end_if_due(&mut *self.run.lock().await, now)
    }

    fn end_if_due(&self, run: &mut Option<Run>, now: i64) -> Result<(), String> {
        if run
            .as_ref()
            .is_some_and(|r| now - r.started >= self.every_ms)
            && let Some(r) = run.take()
        {
            tokio::task::block_in_place(|| r.finish())?;
        }
        Ok(())
    }

    /// Appends the message as a row of the current run's file and syncs it.
    pub async fn append(&self, item: &OutboxItem, message: &Message) -> Delivery {
        let now = wall_clock_ms();
        let later = |error: String| Delivery::Retry {
            at: now + 5_000,
            error,
        };
        let data = message
            .data()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut guard = self.run.lock().await;
        if let Err(e) = self.end_if_due(&mut guard, now) {
            return later(e);
        }
        let run = match guard.take() {
            Some(run) => run,
            None => match tokio::task::block_in_place(|| self.start(now, &data)) {
                Ok(run) => run,
                Err(e) => return later(e),
            },
        };
        let run = guard.insert(run);
        let cell = |v: Option<&Value>| match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let cells: Vec<String> = run.columns.iter().map(|c| cell(data.get(c))).collect();
        let file = run.part.with_extension("");
        let file = file.file_name().map(|f| f.to_string_lossy().into_owned());
        let fingerprint = self.dedupe.then(|| {
            // Each cell prefixed with its length, so different rows never join to the same
            // bytes; hashed to 64 bits, a false match in a million-row file is about one in
            // 3·10^7.
            let mut joined = Vec::new();
            for c in &cells {
                joined.extend_from_slice(&(c.len() as u64).to_le_bytes());
                joined.extend_from_slice(c.as_bytes());
            }
            xxhash_rust::xxh3::xxh3_64(&joined)
        });
        if let Some(earlier) = fingerprint.and_then(|f| run.seen.get(&f)) {
            return Delivery::Delivered(json!({"file": file, "duplicate_of_row": earlier}));
        }
        let mut row = vec![item.key.clone(), item.journey.clone()];
        row.extend(cells);
        // File writes and fsync block: tell the runtime, so other tasks move to other
        // workers meanwhile.
        let written = tokio::task::block_in_place(|| {
            run.writer
                .write_record(&row)
                .map_err(|e| e.to_string())
                .and_then(|()| run.writer.flush().map_err(|e| e.to_string()))
                .and_then(|()| run.writer.get_ref().sync_data().map_err(|e| e.to_string()))
        });
        match written {
            Ok(()) => {
                run.rows += 1;
                if let Some(f) = fingerprint {
                    run.seen.insert(f, run.rows);
                }
                let delivered = Delivery::Delivered(json!({"file": file, "row": run.rows}));
                if self.max_rows.is_some_and(|max| run.rows >= max)
                    && let Some(full) = guard.take()
                    && let Err(e) = tokio::task::block_in_place(|| full.finish())
                {
                    // The row is on disk; the file is complete at the next start at worst.
                    tracing::warn!(error = %e, "could not complete a full direct mail file");
                }
                delivered
            }
            Err(e) => later(format!("writing {}: {e}", run.part.display())),
        }
    }

    fn start(&self, now: i64, data: &serde_json::Map<String, Value>) -> Result<Run, String> {
        let columns = self
            .columns
            .clone()
            .unwrap_or_else(|| data.keys().cloned().collect());
        // 2026-11-29T17:00:00.000Z -> 20261129T170000000Z: sorts by time, no colons.
        let stamp: String = waymark_core::time::format_iso8601(now)
            .chars()
            .filter(|c| !matches!(c, '-' | ':' | '.'))
            .collect();
        // A file split at `max_rows` can be followed by the next in the same millisecond:
        // `-2`, `-3`... after the stamp then, so names still sort by time.
        let mut n = 1u32;
        let (part, file) = loop {
            let name = match n {
                1 => format!("direct-mail-{stamp}.csv"),
                n => format!("direct-mail-{stamp}-{n}.csv"),
            };
            n += 1;
            if self.folder.join(&name).exists() {
                continue;
            }
            let part = self.folder.join(format!("{name}.part"));
            match std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&part)
            {
                Ok(file) => break (part, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating {}: {e}", part.display())),
            }
        };
        let mut writer = csv::Writer::from_writer(file);
        let mut header = vec!["message_id".to_owned(), "journey".to_owned()];
        header.extend(columns.iter().cloned());
        writer
            .write_record(&header)
            .map_err(|e| format!("writing {}: {e}", part.display()))?;
        // The folder entry must survive a crash too.
        if let Ok(dir) = std::fs::File::open(&self.folder) {
            let _ = dir.sync_all();
        }
        Ok(Run {
            started: now,
            part,
            writer,
            columns,
            rows: 0,
            seen: std::collections::HashMap::new(),
        })
    }
}

/// Ends runs on time even when no message arrives.
pub async fn rotate_runs(extractor: std::sync::Arc<Extractor>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = extractor.rotate(wall_clock_ms()).await {
            tracing::warn!(error = %e, "could not complete a direct mail file");
        }
    }
}

#[async_trait::async_trait]
impl Channel for Extractor {
    async fn send(&self, item: &OutboxItem, message: &Message, _retry: Retry) -> Attempt {
        self.append(item, message).await.into()
    }
}
