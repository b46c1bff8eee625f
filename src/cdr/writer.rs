//! The CDR writer: calls hand finished (and started) records to a [`CdrSink`], which appends
//! them to the [journal](super::journal) at once; a writer task tails the journal into
//! PostgreSQL in batches (up to `batch_rows` entries or `batch_wait`) with binary COPY into a
//! staging table and an upsert keyed on the record's UUID, keeping the highest revision. When
//! PostgreSQL is unreachable the journal grows (it is the spool) and the writer retries with
//! backoff; when it returns, the backlog goes in, in order. A row PostgreSQL refuses (a data
//! error, not a connection error) is moved to `rejected.jsonl` next to the journal and
//! reported, so one bad record cannot block the rest.

use super::copy::{CALL_COLUMNS, CopyEncoder, EVENT_COLUMNS};
use super::db::DbTarget;
use super::journal::{self, Journal, JournalReader, Position};
use super::model::{CallEvent, CallRecord, JournalEntry, Micros, now_micros};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A segment the writer has caught up with is rotated away once it is this large.
const ROTATE_DRAINED_BYTES: u64 = 8 * 1024 * 1024;

/// Where calls hand their records. Cheap to clone.
#[derive(Clone)]
pub struct CdrSink {
    journal: Arc<Mutex<Journal>>,
    wake: Arc<Notify>,
}

impl CdrSink {
    pub fn new(journal: Journal) -> (CdrSink, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        (
            CdrSink {
                journal: Arc::new(Mutex::new(journal)),
                wake: wake.clone(),
            },
            wake,
        )
    }

    /// Appends an entry to the journal (one `write`) and wakes the writer. An I/O error (disk
    /// full) keeps the entry in memory to be written before the next one and raises an alarm.
    pub fn write(&self, entry: JournalEntry) {
        let result = match self.journal.lock() {
            Ok(mut j) => j.append(std::slice::from_ref(&entry)),
            Err(poisoned) => poisoned.into_inner().append(std::slice::from_ref(&entry)),
        };
        if let Err(e) = result {
            metrics::counter!("cdr_journal_errors_total").increment(1);
            tracing::error!(error = %e, "CDR journal write failed; the record is held in memory and retried");
        }
        self.wake.notify_one();
    }

    /// A file handle on the current segment, for `fdatasync`.
    fn sync_handle(&self) -> Option<std::fs::File> {
        self.journal.lock().ok().and_then(|j| j.sync_handle().ok())
    }

    /// The journal's directory.
    pub fn dir(&self) -> PathBuf {
        self.journal.lock().map(|j| j.dir().to_path_buf()).unwrap_or_default()
    }

    /// Where the next entry will go.
    pub fn end(&self) -> Position {
        self.journal.lock().map(|j| j.end()).unwrap_or_default()
    }

    /// Starts a new journal segment; returns its number.
    pub fn rotate(&self) -> std::io::Result<u64> {
        let mut j = self
            .journal
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        j.rotate()?;
        Ok(j.end().segment)
    }

    /// Wakes the writer.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Why the journal could not be compacted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(
        "the CDR database is not reachable, so spooled records cannot be written and removed; try again when it is"
    )]
    NotDrained,
    #[error("journal: {0}")]
    Io(#[from] std::io::Error),
}

/// Removes everything already in the database from the local journal: waits until the
/// writer has caught up, starts a new segment, and waits for the writer to move into it
/// (which deletes the old segments). Erasure runs this first so no spooled copy of a
/// caller's records survives. Returns how many entries in the removed segments mentioned
/// one of `needles` (the subject's pseudonyms), for the audit trail.
pub async fn compact(sink: &CdrSink, needles: &[String], within: Duration) -> Result<u64, CompactError> {
    let dir = sink.dir();
    let deadline = tokio::time::Instant::now() + within;
    while journal::load_checkpoint(&dir) < sink.end() {
        if tokio::time::Instant::now() > deadline {
            return Err(CompactError::NotDrained);
        }
        sink.wake();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut mentions = 0u64;
    for s in journal::segments(&dir)? {
        let bytes = std::fs::read(dir.join(format!("segment-{s:06}.log")))?;
        for needle in needles.iter().filter(|n| !n.is_empty()) {
            mentions += bytes.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count() as u64;
        }
    }
    let segment = sink.rotate()?;
    while journal::segments(&dir)?.first().is_some_and(|&s| s < segment) {
        if tokio::time::Instant::now() > deadline {
            return Err(CompactError::NotDrained);
        }
        sink.wake();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(mentions)
}

/// Serialises `rejected.jsonl`'s appends (the writer) with its rewrites (erasure).
static REJECTED_FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes out of `dir/rejected.jsonl` every line of the subject: lines naming one of
/// `pseudonyms`, lines naming one of `call_ids` (the subject's calls in the database), and
/// lines naming a call whose refused record names a pseudonym (its events). Returns how
/// many went.
pub fn scrub_rejected(dir: &std::path::Path, pseudonyms: &[String], call_ids: &[String]) -> std::io::Result<u64> {
    rewrite_rejected(dir, |text| scrub(text, pseudonyms, call_ids))
}

/// Holds `rejected.jsonl` (serialised with the writer's appends) while `change` makes its
/// new text from the old: `(None, n)` leaves the file as it was. A missing file is empty.
fn rewrite_rejected(dir: &std::path::Path, change: impl FnOnce(&str) -> (Option<String>, u64)) -> std::io::Result<u64> {
    let path = dir.join("rejected.jsonl");
    let _file = REJECTED_FILE.lock().unwrap_or_else(|p| p.into_inner());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let (new, count) = change(&text);
    if let Some(new) = new {
        crate::private_files::write_atomically(&path, new.as_bytes())?;
    }
    Ok(count)
}

fn scrub(text: &str, pseudonyms: &[String], call_ids: &[String]) -> (Option<String>, u64) {
    let names = |line: &str| pseudonyms.iter().any(|p| !p.is_empty() && line.contains(p.as_str()));
    let mut ids: Vec<String> = call_ids.to_vec();
    for line in text.lines().filter(|l| names(l)) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        ids.extend(v["entry"]["id"].as_str().map(String::from));
    }
    let (mut kept, mut dropped) = (String::new(), 0u64);
    for line in text.lines() {
        let names_subject = names(line) || ids.iter().any(|i| line.contains(i.as_str()));
        if names_subject {
            dropped += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    ((dropped > 0).then_some(kept), dropped)
}

/// Takes out of `dir/rejected.jsonl` the lines rejected more than `keep` before `now`
/// (`cdr.rejected_keep_days`). A line from before rejections were dated gets today's date,
/// so it goes `keep` from now. Returns how many went.
pub fn expire_rejected(
    dir: &std::path::Path,
    keep: std::time::Duration,
    now: std::time::SystemTime,
) -> std::io::Result<u64> {
    rewrite_rejected(dir, |text| expire(text, keep, now))
}

fn expire(text: &str, keep: std::time::Duration, now: std::time::SystemTime) -> (Option<String>, u64) {
    let now_secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let cutoff = now_secs.saturating_sub(keep.as_secs());
    let (mut kept, mut dropped, mut dated) = (String::new(), 0u64, false);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v["rejected_at"].as_u64().is_some_and(|t| t < cutoff) => dropped += 1,
            Ok(mut v) if v["rejected_at"].is_null() && v.is_object() => {
                v["rejected_at"] = now_secs.into();
                kept.push_str(&v.to_string());
                kept.push('\n');
                dated = true;
            }
            // Dated and young, or not JSON at all (kept for the operator, as it was).
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    ((dropped > 0 || dated).then_some(kept), dropped)
}

/// Carries out a queued erasure inside the writer's transaction (a savepoint of its own).
async fn carry_out(
    conn: &mut PgConnection,
    q: &super::model::QueuedErasure,
    stores: &super::erasure::ErasureStores,
) -> Result<(), WriteError> {
    let request = super::erasure::Erasure {
        pseudonym: &q.pseudonym,
        policy: q.policy,
        requested_by: &q.requested_by,
        requested_at: Some(q.requested_at),
        spool_entries: 0,
    };
    match super::erasure::erase(conn, &request, stores).await {
        Ok(report) => {
            tracing::info!(
                request = report.request_id,
                calls = report.calls,
                "queued erasure by number done"
            );
            Ok(())
        }
        Err(super::query::QueryError::Db(e)) => Err(classify(e)),
        Err(super::query::QueryError::Invalid(why)) => Err(WriteError::Refused(why)),
    }
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_rows: usize,
    pub batch_wait: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_rows: 1000,
            batch_wait: Duration::from_millis(100),
        }
    }
}

/// Why a batch did not go in.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database is unreachable or went away: retry later, the journal keeps everything.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL refused the data.
    #[error("database refused the batch: {0}")]
    Refused(String),
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
}

fn classify(e: sqlx::Error) -> WriteError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // Class 08 connection exceptions, 57 operator intervention (shutdown), 53
            // insufficient resources: the server's state, not the data's.
            if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") {
                WriteError::Unavailable(e.to_string())
            } else {
                WriteError::Refused(e.to_string())
            }
        }
        _ => WriteError::Unavailable(e.to_string()),
    }
}

/// What one step wrote.
#[derive(Debug, Default, Clone)]
pub struct StepOutcome {
    pub entries: usize,
    /// Seconds from each record's last timestamp to its commit (the write lag).
    pub lags: Vec<f64>,
    pub rejected: usize,
}

/// Tails the journal into PostgreSQL.
pub struct Writer {
    target: DbTarget,
    dir: PathBuf,
    cfg: WriterConfig,
    reader: Option<JournalReader>,
    conn: Option<PgConnection>,
    sync: Option<std::fs::File>,
    partitions: HashSet<i64>,
    upsert_calls: String,
    migrated: bool,
    /// The checkpoint last stored.
    stored: Position,
    /// Where queued erasures look on disk (None: a writer that only writes, as the CLI's).
    erasure_stores: Option<super::erasure::ErasureStores>,
    /// A queued erasure went in: rotate the journal away once caught up, so no spooled copy
    /// of the subject's records stays on disk.
    erased: bool,
}

impl Writer {
    /// A writer for the journal in `dir`, from its checkpoint on.
    pub fn new(target: DbTarget, dir: &Path, cfg: WriterConfig) -> Writer {
        let set: Vec<String> = CALL_COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id" && *c != "started_at")
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        // The tenants table learns each tenant from its first call: lookups by number make
        // the caller's pseudonym of every tenant it names.
        let upsert_calls = format!(
            "INSERT INTO calls ({CALL_COLUMNS}) SELECT {CALL_COLUMNS} FROM calls_stage \
             ON CONFLICT (id, started_at) DO UPDATE SET {} \
             WHERE calls.revision < EXCLUDED.revision AND calls.anonymised_at IS NULL; \
             INSERT INTO tenants (name) SELECT DISTINCT tenant FROM calls_stage WHERE tenant IS NOT NULL \
             ON CONFLICT DO NOTHING",
            set.join(", ")
        );
        Writer {
            target,
            dir: dir.to_path_buf(),
            cfg,
            reader: Some(JournalReader::new(dir, journal::load_checkpoint(dir))),
            conn: None,
            sync: None,
            partitions: HashSet::new(),
            upsert_calls,
            migrated: false,
            stored: journal::load_checkpoint(dir),
            erasure_stores: None,
            erased: false,
        }
    }

    /// Carries out erasures queued in the journal (`JournalEntry::Erasure`) with these stores.
    pub fn with_erasure_stores(mut self, stores: super::erasure::ErasureStores) -> Writer {
        self.erasure_stores = Some(stores);
        self
    }

    /// Runs until `stop` turns true, then drains what it can for `drain` and returns.
    pub async fn run(self, sink: CdrSink, wake: Arc<Notify>, stop: watch::Receiver<bool>, drain: Duration) {
        self.run_observed(sink, wake, stop, drain, |_| {}).await
    }

    /// [`Writer::run`], also handing every successful step's outcome to `observe` (the
    /// benchmark reads write lags this way; the gateway uses the metrics alone).
    pub async fn run_observed(
        mut self,
        sink: CdrSink,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
        drain: Duration,
        mut observe: impl FnMut(&StepOutcome),
    ) {
        self.sync = sink.sync_handle();
        let mut backoff = Duration::from_millis(100);
        let mut stopping_since: Option<tokio::time::Instant> = None;
        let mut spool_logged = false;
        loop {
            if stopping_since.is_none() && *stop.borrow() {
                stopping_since = Some(tokio::time::Instant::now());
            }
            if let Some(since) = stopping_since
                && since.elapsed() > drain
            {
                tracing::warn!(
                    spool_bytes = journal::bytes_after(&self.dir, self.position()),
                    "stopping with CDRs still in the journal; they are written at the next start"
                );
                return;
            }
            // Refresh the sync handle when the journal moved to a new segment.
            if self.position().segment != sink.end().segment {
                self.sync = sink.sync_handle();
            }
            match self.step().await {
                Ok(out) if out.entries == 0 => {
                    if stopping_since.is_some() {
                        return;
                    }
                    tokio::select! {
                        _ = wake.notified() => {
                            // Let a batch gather (up to batch_wait) unless it is full already.
                            tokio::time::sleep(self.cfg.batch_wait).await;
                        }
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Ok(out) => {
                    backoff = Duration::from_millis(100);
                    if spool_logged {
                        tracing::info!("CDR database reachable again; replaying the spool");
                        spool_logged = false;
                    }
                    for lag in &out.lags {
                        metrics::histogram!("cdr_write_lag_seconds").record(*lag);
                    }
                    observe(&out);
                    metrics::counter!("cdr_entries_written_total").increment(out.entries as u64);
                    // Records already in the database should not linger on local disk:
                    // once caught up on a large segment, start a new one (the old is removed).
                    let end = sink.end();
                    if self.position() == end && (end.offset > ROTATE_DRAINED_BYTES || self.erased) {
                        let _ = sink.rotate();
                        self.erased = false;
                    }
                    metrics::gauge!("cdr_spool_bytes").set(journal::bytes_after(&self.dir, self.position()) as f64);
                }
                Err(e) => {
                    self.conn = None;
                    metrics::counter!("cdr_write_errors_total").increment(1);
                    metrics::gauge!("cdr_spool_bytes").set(journal::bytes_after(&self.dir, self.position()) as f64);
                    if !spool_logged {
                        tracing::warn!(error = %e, "CDRs are spooled to the journal until the database is back");
                        spool_logged = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The journal position everything before which is in the database.
    pub fn position(&self) -> Position {
        self.reader.as_ref().map(|r| r.position()).unwrap_or_default()
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, WriteError> {
        if self.conn.is_none() {
            let opts = self
                .target
                .options()
                .map_err(|e| WriteError::Unavailable(e.to_string()))?;
            let mut conn = tokio::time::timeout(Duration::from_secs(5), opts.connect())
                .await
                .map_err(|_| WriteError::Unavailable("connect timed out".into()))?
                .map_err(classify)?;
            if !self.migrated {
                // The database may have been down when the gateway started.
                super::db::migrator()
                    .run_direct(None, &mut conn, false)
                    .await
                    .map_err(|e| WriteError::Unavailable(format!("migrating: {e}")))?;
                self.migrated = true;
            }
            sqlx::raw_sql(
                "CREATE TEMP TABLE IF NOT EXISTS calls_stage (LIKE calls INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; \
                 CREATE TEMP TABLE IF NOT EXISTS call_events_stage (LIKE call_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            )
            .execute(&mut conn)
            .await
            .map_err(classify)?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| WriteError::Unavailable("no connection".into()))
    }

    /// Reads the next batch from the journal and writes it; advances the checkpoint.
    pub async fn step(&mut self) -> Result<StepOutcome, WriteError> {
        let Some(mut reader) = self.reader.take() else {
            return Err(WriteError::Journal(std::io::Error::other("journal reader lost")));
        };
        let rows = self.cfg.batch_rows;
        let before = reader.position();
        // File reads and JSON parsing off the gateway's thread.
        let (reader, read) = tokio::task::spawn_blocking(move || {
            let r = reader.read(rows);
            (reader, r)
        })
        .await
        .map_err(|e| WriteError::Journal(std::io::Error::other(e.to_string())))?;
        self.reader = Some(reader);
        let batch = read?;
        let Some(&(_, end)) = batch.last() else {
            // Nothing new, but the reader may have moved into a newer segment: store that, so
            // the old segments are removed.
            let now_at = self.position();
            if now_at != self.stored {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || journal::store_checkpoint(&dir, now_at))
                    .await
                    .map_err(|e| WriteError::Journal(std::io::Error::other(e.to_string())))??;
                self.stored = now_at;
            }
            return Ok(StepOutcome::default());
        };
        // The records are about to count as written: make them durable in the spool first.
        if let Some(f) = self.sync.as_ref().and_then(|f| f.try_clone().ok()) {
            let _ = tokio::task::spawn_blocking(move || f.sync_data()).await;
        }
        let entries: Vec<JournalEntry> = batch.into_iter().map(|(e, _)| e).collect();
        let mut outcome = StepOutcome {
            entries: entries.len(),
            ..Default::default()
        };
        match self.apply(&entries).await {
            Ok(()) => {}
            Err(WriteError::Refused(why)) => {
                // One bad record must not block the rest: write one at a time, set aside the
                // ones refused.
                tracing::warn!(error = %why, "a CDR batch was refused; writing its records one by one");
                for e in &entries {
                    match self.apply(std::slice::from_ref(e)).await {
                        Ok(()) => {}
                        // A queued erasure is never set aside: the requester was told it will be
                        // done. It is retried (the journal waits behind it) and alarms.
                        Err(WriteError::Refused(why)) if matches!(e, JournalEntry::Erasure(_)) => {
                            metrics::counter!("cdr_erasure_failures_total").increment(1);
                            tracing::error!(error = %why, "a queued erasure failed; retried, CDRs wait in the journal behind it");
                            self.reader = Some(JournalReader::new(&self.dir, before));
                            return Err(WriteError::Unavailable(format!("queued erasure: {why}")));
                        }
                        Err(WriteError::Refused(why)) => {
                            self.reject(e, &why)?;
                            outcome.rejected += 1;
                        }
                        Err(other) => {
                            // Back to where this batch started; it is retried whole.
                            self.reader = Some(JournalReader::new(&self.dir, before));
                            return Err(other);
                        }
                    }
                }
            }
            Err(e) => {
                self.reader = Some(JournalReader::new(&self.dir, before));
                return Err(e);
            }
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || journal::store_checkpoint(&dir, end))
            .await
            .map_err(|e| WriteError::Journal(std::io::Error::other(e.to_string())))??;
        self.stored = end;
        let now = now_micros();
        outcome.lags = entries
            .iter()
            .filter_map(last_time)
            .map(|t| (now - t).max(0) as f64 / 1e6)
            .collect();
        Ok(outcome)
    }

    fn reject(&self, entry: &JournalEntry, why: &str) -> Result<(), WriteError> {
        // Whole records, clear numbers where the class allows: the owner's alone.
        let _file = REJECTED_FILE.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = crate::private_files::options()
            .create(true)
            .append(true)
            .open(self.dir.join("rejected.jsonl"))?;
        let rejected_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = serde_json::json!({ "error": why, "rejected_at": rejected_at, "entry": entry });
        writeln!(f, "{line}")?;
        f.sync_data()?;
        metrics::counter!("cdr_rejected_total").increment(1);
        let id = match entry {
            JournalEntry::Call(c) => c.id.to_string(),
            JournalEntry::Event(e) => e.id.to_string(),
            JournalEntry::CloseInterrupted { node, .. } => format!("close-interrupted {node}"),
            JournalEntry::RoomSession(s) => format!("room-session {}", s.session),
            JournalEntry::Recording(r) => format!("recording {}", r.id),
            JournalEntry::Erasure(_) => "queued erasure".to_string(),
        };
        tracing::error!(id, error = why, "PostgreSQL refused a CDR; kept in rejected.jsonl");
        Ok(())
    }

    /// Writes entries in one transaction, in order. (Boxed with an explicit `Send` bound:
    /// the compiler cannot prove it for the borrowed entries across sqlx's awaits otherwise.)
    fn apply<'a>(
        &'a mut self,
        entries: &'a [JournalEntry],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WriteError>> + Send + 'a>> {
        Box::pin(async move {
            let months = months_needed(entries, &self.partitions);
            let upsert_calls = self.upsert_calls.clone();
            let stores = self.erasure_stores.clone();
            let mut erased = false;
            let conn = self.connection().await?;
            let mut tx = <PgConnection as Connection>::begin(conn).await.map_err(classify)?;
            if let Some((from, to)) = months {
                sqlx::query(
                    "SELECT tolk_ensure_partitions(to_timestamp($1::float8 / 1e6), to_timestamp($2::float8 / 1e6))",
                )
                .bind(from as f64)
                .bind(to as f64)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            // Runs of calls and events go in by COPY; a CloseInterrupted is an UPDATE in its place.
            let mut calls: HashMap<uuid::Uuid, &CallRecord> = HashMap::new();
            let mut events: Vec<&CallEvent> = Vec::new();
            for entry in entries {
                match entry {
                    JournalEntry::Call(c) => {
                        // Within a batch only the highest revision of a call goes in (an upsert
                        // may not touch a row twice in one statement).
                        let keep = calls.get(&c.id).is_none_or(|old| old.revision < c.revision);
                        if keep {
                            calls.insert(c.id, c);
                        }
                    }
                    JournalEntry::Event(e) => events.push(e),
                    JournalEntry::CloseInterrupted {
                        node,
                        started_before,
                        alive_at,
                    } => {
                        flush(&mut tx, &mut calls, &mut events, &upsert_calls).await?;
                        close_interrupted(&mut tx, node, *started_before, *alive_at).await?;
                    }
                    // Rooms and recordings are few beside calls: an upsert each, in order.
                    JournalEntry::RoomSession(s) => {
                        flush(&mut tx, &mut calls, &mut events, &upsert_calls).await?;
                        upsert_room_session(&mut tx, s).await?;
                    }
                    JournalEntry::Recording(r) => {
                        flush(&mut tx, &mut calls, &mut events, &upsert_calls).await?;
                        upsert_recording(&mut tx, r).await?;
                    }
                    // In order: what the journal holds of the subject before the request
                    // goes in first and is erased with the rest.
                    JournalEntry::Erasure(q) => {
                        flush(&mut tx, &mut calls, &mut events, &upsert_calls).await?;
                        let Some(stores) = &stores else {
                            return Err(WriteError::Unavailable(
                                "a queued erasure needs a writer that knows the data folders".into(),
                            ));
                        };
                        carry_out(&mut tx, q, stores).await?;
                        erased = true;
                    }
                }
            }
            flush(&mut tx, &mut calls, &mut events, &upsert_calls).await?;
            tx.commit().await.map_err(classify)?;
            self.erased |= erased;
            if let Some((from, to)) = months {
                self.partitions.insert(month_index(from));
                self.partitions.insert(month_index(to));
            }
            Ok(())
        })
    }
}

async fn flush(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    calls: &mut HashMap<uuid::Uuid, &CallRecord>,
    events: &mut Vec<&CallEvent>,
    upsert_calls: &str,
) -> Result<(), WriteError> {
    if !calls.is_empty() {
        let mut enc = CopyEncoder::new();
        for c in calls.values() {
            enc.encode_call(c);
        }
        let mut copy = tx
            .copy_in_raw(&format!("COPY calls_stage ({CALL_COLUMNS}) FROM STDIN (FORMAT binary)"))
            .await
            .map_err(classify)?;
        copy.send(enc.finish()).await.map_err(classify)?;
        copy.finish().await.map_err(classify)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(upsert_calls.to_string()))
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        sqlx::raw_sql("TRUNCATE calls_stage")
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        calls.clear();
    }
    if !events.is_empty() {
        let mut enc = CopyEncoder::new();
        for e in events.iter() {
            enc.encode_event(e);
        }
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY call_events_stage ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(classify)?;
        copy.send(enc.finish()).await.map_err(classify)?;
        copy.finish().await.map_err(classify)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO call_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM call_events_stage \
             ON CONFLICT DO NOTHING; TRUNCATE call_events_stage"
        )))
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        events.clear();
    }
    Ok(())
}

/// Calls a crash cut off: closed at the last time the node was known alive (never before
/// their answer), with the revision that ends all revisions.
async fn close_interrupted(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    node: &str,
    started_before: Micros,
    alive_at: Micros,
) -> Result<(), WriteError> {
    sqlx::query(
        "UPDATE calls SET disposition = 'interrupted', revision = 32767, \
           ended_at = greatest(coalesce(answered_at, started_at), to_timestamp($3::float8 / 1e6)), \
           duration_ms = (extract(epoch FROM greatest(coalesce(answered_at, started_at), to_timestamp($3::float8 / 1e6)) - started_at) * 1000)::bigint, \
           billable_ms = CASE WHEN answered_at IS NULL THEN 0 ELSE \
             (extract(epoch FROM greatest(answered_at, to_timestamp($3::float8 / 1e6)) - answered_at) * 1000)::bigint END \
         WHERE node = $1 AND disposition = 'in_progress' AND started_at < to_timestamp($2::float8 / 1e6)",
    )
    .bind(node)
    .bind(started_before as f64)
    .bind(alive_at as f64)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// A room session and its room (tables of `migrations/0001_cdr.sql`). The
/// first write of a session sets its start; later ones only fill in the end and the peak.
async fn upsert_room_session(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    s: &super::model::RoomSessionRow,
) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO rooms (id, tenant, kind) VALUES ($1, $2, 'conference') \
         ON CONFLICT (id) DO UPDATE SET tenant = coalesce(EXCLUDED.tenant, rooms.tenant)",
    )
    .bind(&s.room)
    .bind(&s.tenant)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    sqlx::query(
        "INSERT INTO room_sessions (id, room_id, started_at, ended_at, max_members) \
         VALUES ($1, $2, to_timestamp($3::float8 / 1e6), to_timestamp($4::float8 / 1e6), $5) \
         ON CONFLICT (id) DO UPDATE SET ended_at = coalesce(EXCLUDED.ended_at, room_sessions.ended_at), \
         max_members = coalesce(EXCLUDED.max_members, room_sessions.max_members)",
    )
    .bind(s.session)
    .bind(&s.room)
    .bind(s.started_at as f64)
    .bind(s.ended_at.map(|t| t as f64))
    .bind(s.max_members)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// A recording's row: the first write files it, a later one adds its length and end.
async fn upsert_recording(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    r: &super::model::RecordingRow,
) -> Result<(), WriteError> {
    sqlx::query(
        "INSERT INTO recordings (id, call_id, room, room_session, path, format, started_at, ended_at, seconds, \
           caller_pseudonym, retention_class, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::float8 / 1e6), to_timestamp($8::float8 / 1e6), $9, \
           $10, $11, to_timestamp($12::float8 / 1e6)) \
         ON CONFLICT (id) DO UPDATE SET seconds = coalesce(EXCLUDED.seconds, recordings.seconds), \
           ended_at = coalesce(EXCLUDED.ended_at, recordings.ended_at), \
           room_session = coalesce(recordings.room_session, EXCLUDED.room_session)",
    )
    .bind(r.id)
    .bind(r.call_id)
    .bind(&r.room)
    .bind(r.room_session)
    .bind(&r.path)
    .bind(r.format())
    .bind(r.started_at as f64)
    .bind(r.ended_at.map(|t| t as f64))
    .bind(r.seconds)
    .bind(&r.caller_pseudonym)
    .bind(&r.retention_class)
    .bind(r.expires_at.map(|t| t as f64))
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// A month as a number (year * 12 + month), from Unix micros.
fn month_index(micros: Micros) -> i64 {
    let days = micros.div_euclid(86_400_000_000);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    y * 12 + (m - 1)
}

/// The (earliest, latest) partition key times in `entries` when some month is not known to
/// exist yet.
fn months_needed(entries: &[JournalEntry], known: &HashSet<i64>) -> Option<(Micros, Micros)> {
    let times = entries.iter().filter_map(|e| match e {
        JournalEntry::Call(c) => Some(c.started_at),
        JournalEntry::Event(ev) => Some(ev.at),
        JournalEntry::CloseInterrupted { .. }
        | JournalEntry::RoomSession(_)
        | JournalEntry::Recording(_)
        | JournalEntry::Erasure(_) => None,
    });
    let (mut lo, mut hi, mut missing) = (i64::MAX, i64::MIN, false);
    for t in times {
        lo = lo.min(t);
        hi = hi.max(t);
        missing |= !known.contains(&month_index(t));
    }
    missing.then_some((lo, hi))
}

/// The latest time a record carries (for the write lag).
fn last_time(e: &JournalEntry) -> Option<Micros> {
    match e {
        JournalEntry::Call(c) => Some(c.ended_at.or(c.answered_at).unwrap_or(c.started_at)),
        JournalEntry::Event(ev) => Some(ev.at),
        JournalEntry::RoomSession(s) => Some(s.ended_at.unwrap_or(s.started_at)),
        JournalEntry::Recording(r) => Some(r.ended_at.unwrap_or(r.started_at)),
        JournalEntry::Erasure(q) => Some(q.requested_at),
        JournalEntry::CloseInterrupted { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_counted_from_unix_micros() {
        // 2026-11-22T00:00:00Z = 1795305600 s.
        assert_eq!(month_index(1_795_305_600_000_000), 2026 * 12 + 10);
        // 2000-01-01 and the last microsecond of 1999.
        assert_eq!(month_index(946_684_800_000_000), 2000 * 12);
        assert_eq!(month_index(946_684_799_999_999), 1999 * 12 + 11);
        // 2024-02-29.
        assert_eq!(month_index(1_709_164_800_000_000), 2024 * 12 + 1);
    }

    #[test]
    fn only_unknown_months_ask_for_partitions() {
        let mut r = crate::cdr::model::tests::sample();
        r.started_at = 1_795_305_600_000_000;
        let entries = vec![JournalEntry::Call(Box::new(r))];
        assert!(months_needed(&entries, &HashSet::new()).is_some());
        let known: HashSet<i64> = [2026 * 12 + 10].into();
        assert!(months_needed(&entries, &known).is_none());
    }
}
