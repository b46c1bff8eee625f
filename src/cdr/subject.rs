//! Data-subject operations: the opt-out registry, legal holds and erasure by number. All by
//! pseudonym: the number a requester gives is turned into its pseudonym before any query, and
//! the audit trail (`erasure_requests`) holds only the pseudonym.

use super::query::{QueryError, json_rows};
use crate::config::RetentionAction;
use sqlx::PgPool;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Opt-out scopes.
pub const SCOPES: &[&str] = &["record", "retain", "contact"];

/// Checks a scope name.
pub fn check_scope(scope: &str) -> Result<(), QueryError> {
    if SCOPES.contains(&scope) {
        Ok(())
    } else {
        Err(QueryError::Invalid(format!(
            "`{scope}` is not an opt-out scope (record, retain, contact)"
        )))
    }
}

/// Registers an opt-out (idempotent).
pub async fn opt_out(pool: &PgPool, pseudonym: &str, scope: &str, source: &str) -> Result<(), QueryError> {
    check_scope(scope)?;
    sqlx::query(
        "INSERT INTO opt_outs (pseudonym, scope, source) VALUES ($1, $2, $3) \
         ON CONFLICT (pseudonym, scope) DO NOTHING",
    )
    .bind(pseudonym)
    .bind(scope)
    .bind(source)
    .execute(pool)
    .await?;
    Ok(())
}

/// Withdraws an opt-out; true when there was one.
pub async fn opt_in(pool: &PgPool, pseudonym: &str, scope: &str) -> Result<bool, QueryError> {
    check_scope(scope)?;
    let r = sqlx::query("DELETE FROM opt_outs WHERE pseudonym = $1 AND scope = $2")
        .bind(pseudonym)
        .bind(scope)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// All opt-outs (pseudonyms shortened to 12 characters for display).
pub async fn list_opt_outs(pool: &PgPool) -> Result<Vec<serde_json::Value>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT json_build_object('pseudonym', left(pseudonym, 12), 'scope', scope, 'source', source, \
         'since', created_at)::text FROM opt_outs ORDER BY created_at, pseudonym, scope",
    )
    .fetch_all(pool)
    .await?;
    Ok(json_rows(rows))
}

/// The opt-outs the gateway applies to new calls.
#[derive(Debug, Clone, Default)]
pub struct OptOuts {
    /// Store records of these callers anonymised from the start.
    pub retain: HashSet<String>,
    /// Do not record these callers.
    pub record: HashSet<String>,
    /// Do not contact these callers.
    pub contact: HashSet<String>,
    /// When this copy was read from the database (wall clock; None: never).
    pub loaded_at: Option<crate::clock::Micros>,
}

/// How long a copy of the registry answers for the database: three refreshes (every 10 s)
/// may fail before it stops.
pub const OPT_OUTS_FRESH_FOR_MICROS: crate::clock::Micros = 30_000_000;

impl OptOuts {
    /// Whether this copy stands for the registry at `now`: read from the database within
    /// [`OPT_OUTS_FRESH_FOR_MICROS`]. When it does not (never read, or the database has been
    /// unreachable since), a caller it does not name may still have opted out, so the
    /// gateway fails closed: no recording, no contact (docs/PRIVACY.md).
    pub fn is_current(&self, now: crate::clock::Micros) -> bool {
        // A copy read after the call started (a refresh racing it) is newer still: current.
        self.loaded_at.is_some_and(|t| now - t < OPT_OUTS_FRESH_FOR_MICROS)
    }
}

/// Loads the registry.
pub async fn load_opt_outs(pool: &PgPool) -> Result<OptOuts, QueryError> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT pseudonym, scope FROM opt_outs")
        .fetch_all(pool)
        .await?;
    let mut o = OptOuts {
        loaded_at: Some(crate::clock::now_micros()),
        ..OptOuts::default()
    };
    for (p, s) in rows {
        match s.as_str() {
            "retain" => o.retain.insert(p),
            "record" => o.record.insert(p),
            _ => o.contact.insert(p),
        };
    }
    Ok(o)
}

/// Sets or releases the legal hold on one record or on all records of a caller; returns
/// how many records changed.
pub async fn set_hold(
    pool: &PgPool,
    id: Option<uuid::Uuid>,
    pseudonym: Option<&str>,
    hold: bool,
) -> Result<u64, QueryError> {
    if id.is_none() && pseudonym.is_none() {
        return Err(QueryError::Invalid("a hold needs a record id or a number".into()));
    }
    let calls = sqlx::query(
        "UPDATE calls SET legal_hold = $3 WHERE (($1::uuid IS NOT NULL AND id = $1) OR ($2::text IS NOT NULL AND caller_pseudonym = $2)) \
         AND legal_hold <> $3",
    )
    .bind(id)
    .bind(pseudonym)
    .bind(hold)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE recordings SET legal_hold = $3 WHERE ($1::uuid IS NOT NULL AND call_id = $1) OR ($2::text IS NOT NULL AND caller_pseudonym = $2)",
    )
    .bind(id)
    .bind(pseudonym)
    .bind(hold)
    .execute(pool)
    .await?;
    Ok(calls)
}

/// What an erasure did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErasureReport {
    pub request_id: String,
    pub action: String,
    pub calls: u64,
    pub events: u64,
    pub recordings: u64,
    pub recording_files: u64,
    /// Journal entries dropped or compacted away before the database erasure.
    pub spool_entries: u64,
    /// Records left alone because they are under legal hold.
    pub held: u64,
}

/// Erases a caller from the database and removes their recordings' files: their calls
/// (deleted, or anonymised when `action` is `anonymise`), the events of those calls, their
/// recordings; records under legal hold are kept and counted. An audit entry with the
/// pseudonym and the counts is written. The journal must have been drained and compacted
/// first (see `writer::compact`), so no spooled copy survives.
pub async fn erase(
    pool: &PgPool,
    pseudonym: &str,
    action: RetentionAction,
    requested_by: &str,
    recordings_dir: &Path,
    spool_entries: u64,
) -> Result<ErasureReport, QueryError> {
    let id = uuid::Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let held: (i64,) = sqlx::query_as("SELECT count(*) FROM calls WHERE caller_pseudonym = $1 AND legal_hold")
        .bind(pseudonym)
        .fetch_one(&mut *tx)
        .await?;
    // Recordings a flow made are also named in the calls' `recording` events (journalled, so
    // they are known even if registering the recording row failed).
    let event_files: Vec<(String,)> = sqlx::query_as(
        "SELECT detail->>'file' FROM call_events WHERE kind = $2 AND detail ? 'file' AND call_id IN (SELECT id FROM calls WHERE caller_pseudonym = $1 AND NOT legal_hold)",
    )
    .bind(pseudonym)
    .bind(super::model::CallEventKind::RECORDING)
    .fetch_all(&mut *tx)
    .await?;
    let events = sqlx::query(
        "DELETE FROM call_events WHERE call_id IN (SELECT id FROM calls WHERE caller_pseudonym = $1 AND NOT legal_hold)",
    )
    .bind(pseudonym)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let paths: Vec<(String,)> =
        sqlx::query_as("DELETE FROM recordings WHERE caller_pseudonym = $1 AND NOT legal_hold RETURNING path")
            .bind(pseudonym)
            .fetch_all(&mut *tx)
            .await?;
    let calls = if action == RetentionAction::Delete {
        sqlx::query("DELETE FROM calls WHERE caller_pseudonym = $1 AND NOT legal_hold")
            .bind(pseudonym)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    } else {
        sqlx::query(
            "UPDATE calls SET caller_pseudonym = NULL, caller_masked = NULL, caller_number = NULL, \
             caller_anonymous = true, sip_call_id = 'erased', tags = '{}', recording_id = NULL, anonymised_at = now() \
             WHERE caller_pseudonym = $1 AND NOT legal_hold",
        )
        .bind(pseudonym)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    };
    sqlx::query(
        "INSERT INTO erasure_requests (id, pseudonym, requested_at, completed_at, requested_by, action, \
         calls_affected, events_affected, recordings_affected, spool_affected, status) \
         VALUES ($1, $2, now(), now(), $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(pseudonym)
    .bind(requested_by)
    .bind(action.as_str())
    .bind(calls as i32)
    .bind(events as i32)
    .bind(paths.len() as i32)
    .bind(spool_entries as i32)
    .bind(if held.0 > 0 {
        "done; records under legal hold kept"
    } else {
        "done"
    })
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut files = 0;
    for (p,) in paths.iter().chain(event_files.iter()) {
        if remove_recording(recordings_dir, Path::new(p)) {
            files += 1;
        }
    }
    Ok(ErasureReport {
        request_id: id.to_string(),
        action: action.as_str().to_string(),
        calls,
        events,
        recordings: paths.len() as u64,
        recording_files: files,
        spool_entries,
        held: held.0 as u64,
    })
}

/// Removes a recording file, only under the recordings directory; true when removed.
pub fn remove_recording(recordings_dir: &Path, path: &Path) -> bool {
    let full: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        recordings_dir.join(path)
    };
    let (Ok(dir), Ok(file)) = (std::fs::canonicalize(recordings_dir), std::fs::canonicalize(&full)) else {
        return false;
    };
    file.starts_with(&dir) && std::fs::remove_file(&file).is_ok()
}
