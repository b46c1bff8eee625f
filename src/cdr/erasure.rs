//! Erasure by number (GDPR Art. 17): every store that can hold something of the caller.
//!
//! | Store | What goes |
//! |---|---|
//! | `calls` | the caller's calls (deleted, or anonymised by `cdr.erasure_action`) |
//! | `call_events` | every event of those calls |
//! | `recordings` + files | the caller's own recordings, and the room recordings they were heard in (`cdr.erasure_room_recordings`) |
//! | `opt_outs` | the caller's registered choices (they name the pseudonym) |
//!
//! The caller is found under every pseudonym they have: the gateway's and each tenant's.
//! | the TTS cache | the files `say()` spoke to those calls (`spoken` events: the text may be personal) |
//! | `rejected.jsonl` | records PostgreSQL refused, of the caller or of their calls |
//! | the journal | compacted before (`writer::compact`), so no spooled copy survives |
//!
//! Records under legal hold stay, with what they name. The audit row (`erasure_requests`)
//! keeps the counts and a hash of the pseudonym (`subject_ref`), never the pseudonym.

use super::model::CallEventKind;
use super::privacy::PseudonymKey;
use super::query::QueryError;
use crate::config::{CdrConfig, RetentionAction, RoomRecordingErasure};
use sqlx::{Connection, PgConnection};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Erases with a connection from `pool`.
pub async fn erase_with(
    pool: &sqlx::PgPool,
    request: &Erasure<'_>,
    stores: &ErasureStores,
) -> Result<ErasureReport, QueryError> {
    let mut conn = pool.acquire().await?;
    erase(&mut conn, request, stores).await
}

/// Where an erasure looks: on disk, and under which pseudonyms in the database.
#[derive(Debug, Clone)]
pub struct ErasureStores {
    /// Gives the subject's pseudonym in each tenant's records ([`PseudonymKey::in_tenant`]).
    pub key: PseudonymKey,
    /// `data_dir/recordings`.
    pub recordings_dir: PathBuf,
    /// `data_dir/tts`, the text-to-speech cache.
    pub tts_dir: PathBuf,
    /// `data_dir/cdr`, the journal (and its `rejected.jsonl`).
    pub journal_dir: PathBuf,
}

impl ErasureStores {
    /// The stores of a gateway whose data lives in `data_dir`, pseudonyms made with `key`.
    pub fn under(data_dir: &Path, key: PseudonymKey) -> ErasureStores {
        ErasureStores {
            key,
            recordings_dir: data_dir.join("recordings"),
            tts_dir: data_dir.join("tts"),
            journal_dir: data_dir.join("cdr"),
        }
    }
}

/// What an erasure does to the caller's records and to the room recordings they were in
/// (`cdr.erasure_action`, `cdr.erasure_room_recordings`), fixed when it is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasurePolicy {
    pub action: RetentionAction,
    pub room_recordings: RoomRecordingErasure,
    /// Days the subject's request may take (`cdr.request_due_days`), for the register.
    #[serde(default = "thirty_days")]
    pub due_days: u32,
}

fn thirty_days() -> u32 {
    30
}

impl ErasurePolicy {
    /// The configured policy.
    pub fn of(cdr: &CdrConfig) -> ErasurePolicy {
        ErasurePolicy {
            action: cdr.erasure_action,
            room_recordings: cdr.erasure_room_recordings,
            due_days: cdr.request_due_days,
        }
    }
}

/// One erasure request.
#[derive(Debug, Clone)]
pub struct Erasure<'a> {
    /// The subject's gateway pseudonym; their pseudonym in each tenant's records is made
    /// from it.
    pub pseudonym: &'a str,
    pub policy: ErasurePolicy,
    pub requested_by: &'a str,
    /// When it was asked, if not now (a request queued while the database was down).
    pub requested_at: Option<super::model::Micros>,
    /// Journal entries of the caller compacted away before (`writer::compact`).
    pub spool_entries: u64,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ErasureReport {
    pub request_id: String,
    pub action: String,
    pub calls: u64,
    pub events: u64,
    /// The caller's own recordings (rows).
    pub recordings: u64,
    /// Room recordings the caller was heard in: deleted, or kept by policy.
    pub room_recordings: u64,
    pub room_recordings_policy: String,
    /// Room recordings the caller is in that were still running: kept (erase again once
    /// they end).
    pub room_recordings_live: u64,
    /// Files removed: recordings, room recordings and TTS cache entries.
    pub recording_files: u64,
    pub tts_files: u64,
    pub opt_outs: u64,
    /// Lines taken out of `rejected.jsonl`.
    pub rejected: u64,
    /// Journal entries dropped or compacted away before the database erasure.
    pub spool_entries: u64,
    /// Records left alone because they are under legal hold.
    pub held: u64,
}

/// The audit trail's reference to a subject: a hash of the pseudonym, so the audit row
/// shows that this subject was erased to whoever can compute the pseudonym (from the number
/// and the key) but names no pseudonym that could link it to anything left.
pub fn subject_ref(pseudonym: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(pseudonym.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Erases a caller everywhere (the table in the module's comment). The journal must have
/// been compacted first (`writer::compact`).
/// Runs in a transaction of its own on `conn` (a savepoint when `conn` is in one already:
/// the CDR writer carrying out a queued request).
pub async fn erase(
    conn: &mut PgConnection,
    request: &Erasure<'_>,
    stores: &ErasureStores,
) -> Result<ErasureReport, QueryError> {
    let pseudonym = request.pseudonym;
    let id = uuid::Uuid::now_v7();
    let mut tx = conn.begin().await?;
    let tenants: Vec<(String,)> = sqlx::query_as("SELECT name FROM tenants").fetch_all(&mut *tx).await?;
    let tenants: Vec<String> = tenants.into_iter().map(|(t,)| t).collect();
    let all = stores.key.all_pseudonyms(pseudonym, &tenants);
    let held: (i64,) = sqlx::query_as("SELECT count(*) FROM calls WHERE caller_pseudonym = ANY($1) AND legal_hold")
        .bind(&all)
        .fetch_one(&mut *tx)
        .await?;
    let calls: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT id FROM calls WHERE caller_pseudonym = ANY($1) AND NOT legal_hold")
            .bind(&all)
            .fetch_all(&mut *tx)
            .await?;
    let call_ids: Vec<uuid::Uuid> = calls.into_iter().map(|(c,)| c).collect();
    // What the calls' events name on disk: their own recordings (journalled, so known even
    // if registering the row failed), TTS files, and the room recordings they were heard in
    // (`recorded: false` is a caller the recording left out).
    // A caller who had opted out of recording was left out of every room recording (the
    // recorder mixes without them), whatever the event says.
    let named: Vec<(String, serde_json::Value, bool)> = sqlx::query_as(
        "SELECT e.kind, e.detail, coalesce(c.consent->>'record', 'true') <> 'false' \
         FROM call_events e JOIN calls c ON c.id = e.call_id WHERE e.call_id = ANY($1) AND e.kind = ANY($2)",
    )
    .bind(&call_ids)
    .bind(vec![
        CallEventKind::RECORDING,
        CallEventKind::SPOKEN,
        CallEventKind::ROOM_RECORDING,
    ])
    .fetch_all(&mut *tx)
    .await?;
    // A recording under legal hold keeps its file, whichever event names it.
    let held_paths: Vec<(String,)> = sqlx::query_as("SELECT path FROM recordings WHERE legal_hold")
        .fetch_all(&mut *tx)
        .await?;
    let held_paths: HashSet<String> = held_paths.into_iter().map(|(p,)| p).collect();
    let (mut own_files, mut tts_files, mut room_ids) = (Vec::new(), HashSet::new(), HashSet::new());
    for (kind, detail, recordable) in &named {
        match kind.as_str() {
            CallEventKind::RECORDING => own_files.extend(
                detail["file"]
                    .as_str()
                    .filter(|f| !held_paths.contains(*f))
                    .map(String::from),
            ),
            CallEventKind::SPOKEN => tts_files.extend(detail["file"].as_str().map(String::from)),
            _ if *recordable && detail["recorded"] != false => {
                room_ids.extend(detail["id"].as_str().and_then(|i| i.parse::<uuid::Uuid>().ok()))
            }
            _ => {}
        }
    }
    let events = sqlx::query("DELETE FROM call_events WHERE call_id = ANY($1)")
        .bind(&call_ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let own: Vec<(String,)> =
        sqlx::query_as("DELETE FROM recordings WHERE caller_pseudonym = ANY($1) AND NOT legal_hold RETURNING path")
            .bind(&all)
            .fetch_all(&mut *tx)
            .await?;
    let room_ids: Vec<uuid::Uuid> = room_ids.into_iter().collect();
    let room_paths: Vec<(String,)> = match request.policy.room_recordings {
        RoomRecordingErasure::Delete => {
            // A room recording still running is left alone (its recorder still writes the
            // file; the row is filed again when it ends): counted in `room_recordings_live`.
            sqlx::query_as(
                "DELETE FROM recordings WHERE id = ANY($1) AND NOT legal_hold AND ended_at IS NOT NULL RETURNING path",
            )
            .bind(&room_ids)
            .fetch_all(&mut *tx)
            .await?
        }
        RoomRecordingErasure::Keep => Vec::new(),
    };
    let (live,): (i64,) = sqlx::query_as("SELECT count(*) FROM recordings WHERE id = ANY($1) AND ended_at IS NULL")
        .bind(&room_ids)
        .fetch_one(&mut *tx)
        .await?;
    let room_recordings = match request.policy.room_recordings {
        RoomRecordingErasure::Delete => room_paths.len() as u64,
        RoomRecordingErasure::Keep => room_ids.len() as u64,
    };
    let calls = if request.policy.action == RetentionAction::Delete {
        sqlx::query("DELETE FROM calls WHERE caller_pseudonym = ANY($1) AND NOT legal_hold")
            .bind(&all)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    } else {
        sqlx::query(
            "UPDATE calls SET caller_pseudonym = NULL, caller_masked = NULL, caller_number = NULL, \
             caller_anonymous = true, sip_call_id = 'erased', tags = '{}', recording_id = NULL, anonymised_at = now() \
             WHERE caller_pseudonym = ANY($1) AND NOT legal_hold",
        )
        .bind(&all)
        .execute(&mut *tx)
        .await?
        .rows_affected()
    };
    let opt_outs = sqlx::query("DELETE FROM opt_outs WHERE pseudonym = ANY($1)")
        .bind(&all)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // Files go before the commit's audit row is final, so the row can count them; a file
    // that cannot be removed is still counted as not removed (the counts say so).
    let recording_files = own
        .iter()
        .chain(room_paths.iter())
        .map(|(p,)| p)
        .chain(own_files.iter())
        .filter(|p| remove_under(&stores.recordings_dir, Path::new(p)))
        .count() as u64;
    let tts_removed = tts_files
        .iter()
        .filter(|f| remove_under(&stores.tts_dir, Path::new(f.as_str())))
        .count() as u64;
    let ids: Vec<String> = call_ids.iter().map(|c| c.to_string()).collect();
    let rejected = super::writer::scrub_rejected(&stores.journal_dir, &all, &ids)
        .map_err(|e| QueryError::Invalid(format!("rejected.jsonl: {e}")))?;
    sqlx::query(
        "INSERT INTO erasure_requests (id, subject_ref, requested_at, completed_at, requested_by, action, \
         calls_affected, events_affected, recordings_affected, spool_affected, status, \
         room_recordings_policy, room_recordings_affected, opt_outs_affected, files_affected, rejected_affected) \
         VALUES ($1, $2, coalesce(to_timestamp($15::float8 / 1e6), now()), now(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(subject_ref(pseudonym))
    .bind(request.requested_by)
    .bind(request.policy.action.as_str())
    .bind(calls as i32)
    .bind(events as i32)
    .bind(own.len() as i32)
    .bind(request.spool_entries as i32)
    .bind(if held.0 > 0 {
        "done; records under legal hold kept"
    } else {
        "done"
    })
    .bind(request.policy.room_recordings.as_str())
    .bind(room_recordings as i32)
    .bind(opt_outs as i32)
    .bind((recording_files + tts_removed) as i32)
    .bind(rejected as i32)
    .bind(request.requested_at.map(|t| t as f64))
    .execute(&mut *tx)
    .await?;
    // The subject request register: their open erasure requests are answered by this one.
    let subject = subject_ref(pseudonym);
    let register = super::requests::NewRequest {
        kind: super::requests::RequestKind::Erasure,
        subject_ref: &subject,
        received_at: None,
        received_micros: request.requested_at,
        requested_by: request.requested_by,
        note: "",
        due_days: request.policy.due_days,
    };
    super::requests::answer(
        &mut tx,
        &register,
        &serde_json::json!({ "erasure_id": id, "calls": calls }),
    )
    .await?;
    tx.commit().await?;
    Ok(ErasureReport {
        request_id: id.to_string(),
        action: request.policy.action.as_str().to_string(),
        calls,
        events,
        recordings: own.len() as u64,
        room_recordings,
        room_recordings_policy: request.policy.room_recordings.as_str().to_string(),
        room_recordings_live: live as u64,
        recording_files,
        tts_files: tts_removed,
        opt_outs,
        rejected,
        spool_entries: request.spool_entries,
        held: held.0 as u64,
    })
}

/// Removes a file named relative to `dir` (or absolute), only if it lies under `dir`; true
/// when removed.
pub fn remove_under(dir: &Path, path: &Path) -> bool {
    let full: PathBuf = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let (Ok(dir), Ok(file)) = (std::fs::canonicalize(dir), std::fs::canonicalize(&full)) else {
        return false;
    };
    file.starts_with(&dir) && std::fs::remove_file(&file).is_ok()
}
