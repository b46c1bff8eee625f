//! Retention: each record carries a class and an `expires_at` (set when the call is
//! recorded, from the class's policy); the sweeper deletes or anonymises expired records in
//! bounded batches, with their events and recordings, drops whole monthly partitions when
//! every row in them may go, and never touches anything under legal hold. The same sweep
//! keeps the clocks of what has no class: the privacy audit and answered subject requests
//! (`cdr.audit_keep_days`), room sessions (as long as the longest-kept class), opt-outs (`cdr.opt_out_keep_days`, 0: until withdrawn),
//! `rejected.jsonl` (`cdr.rejected_keep_days`) and the text-to-speech cache
//! (`flow.tts_cache_days`).

use super::query::QueryError;
use crate::config::RetentionPolicyConfig;
use sqlx::PgPool;
use std::path::{Path, PathBuf};

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub deleted: u64,
    pub anonymised: u64,
    pub events_deleted: u64,
    pub recordings_deleted: u64,
    pub partitions_dropped: u64,
    /// Audit rows (erasures, corrections, answered requests) past `cdr.audit_keep_days`.
    pub audit_rows_deleted: u64,
    pub opt_outs_expired: u64,
    /// Lines of `rejected.jsonl` past `cdr.rejected_keep_days`.
    pub rejected_expired: u64,
    pub tts_files_expired: u64,
    /// Tenants past `cdr.account_closed_days` after their account closed, swept.
    pub closed_accounts: u64,
    /// Ended room sessions older than the longest-kept class.
    pub room_sessions_deleted: u64,
}

/// What a sweep reaches besides the classed records, and the clocks of each.
#[derive(Debug, Clone)]
pub struct SweepScope {
    /// `data_dir/recordings`.
    pub recordings_dir: PathBuf,
    /// `data_dir/cdr`, where `rejected.jsonl` is.
    pub journal_dir: PathBuf,
    /// `data_dir/tts`, the text-to-speech cache.
    pub tts_dir: PathBuf,
    /// Days each is kept; 0 keeps for ever (opt-outs: until withdrawn).
    pub tts_days: u64,
    pub audit_days: u32,
    pub opt_out_days: u32,
    pub rejected_days: u32,
    pub account_closed_days: u32,
}

impl SweepScope {
    /// The stores and clocks of a gateway configured by `cfg`.
    pub fn of(cfg: &crate::config::Config) -> SweepScope {
        SweepScope {
            recordings_dir: cfg.data_dir.join("recordings"),
            journal_dir: cfg.data_dir.join("cdr"),
            tts_dir: cfg.data_dir.join("tts"),
            tts_days: cfg.flow.tts_cache_days,
            audit_days: cfg.cdr.audit_keep_days,
            opt_out_days: cfg.cdr.opt_out_keep_days,
            rejected_days: cfg.cdr.rejected_keep_days,
            account_closed_days: cfg.cdr.account_closed_days,
        }
    }
}

fn days(d: u64) -> std::time::Duration {
    std::time::Duration::from_secs(d.saturating_mul(86_400))
}

/// Removes the files directly in `dir` last modified more than `keep` before `now` (the
/// text-to-speech cache: `flow.tts_cache_days`); returns how many went. A missing folder or
/// an unreadable entry is skipped.
pub fn expire_files(dir: &Path, keep: std::time::Duration, now: std::time::SystemTime) -> u64 {
    let Some(cutoff) = now.checked_sub(keep) else {
        return 0;
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| t < cutoff)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count() as u64
}

/// Stores the configured policies in `retention_policies` (the sweeper joins on them).
pub async fn sync_policies(pool: &PgPool, policies: &[RetentionPolicyConfig]) -> Result<(), QueryError> {
    for p in policies {
        sqlx::query(
            "INSERT INTO retention_policies (name, tenant, keep_for, action, description) \
             VALUES ($1, coalesce($5, ''), make_interval(days => $2), $3, $4) \
             ON CONFLICT (name, tenant) DO UPDATE SET keep_for = EXCLUDED.keep_for, action = EXCLUDED.action, \
             description = EXCLUDED.description",
        )
        .bind(&p.name)
        .bind(p.keep_days as i32)
        .bind(p.action.as_str())
        .bind(&p.description)
        .bind(&p.tenant)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// One sweep, in batches of `batch` rows, until nothing expired is left; then the tables
/// and files without a class ([`sweep_unclassed`]).
pub async fn sweep(pool: &PgPool, batch: i64, scope: &SweepScope) -> Result<SweepReport, QueryError> {
    let mut report = sweep_classed(pool, batch, &scope.recordings_dir).await?;
    sweep_closed_accounts(
        pool,
        batch,
        scope.account_closed_days,
        &scope.recordings_dir,
        &mut report,
    )
    .await?;
    sweep_unclassed(pool, scope, &mut report).await?;
    Ok(report)
}

/// The privacy audit, opt-outs, `rejected.jsonl` and the TTS cache, each on its own clock.
async fn sweep_unclassed(pool: &PgPool, scope: &SweepScope, report: &mut SweepReport) -> Result<(), QueryError> {
    if scope.audit_days > 0 {
        let days = scope.audit_days as i32;
        for sql in [
            "DELETE FROM erasure_requests WHERE completed_at < now() - make_interval(days => $1)",
            "DELETE FROM corrections WHERE at < now() - make_interval(days => $1)",
            // Open requests stay until answered, however old.
            "DELETE FROM subject_requests WHERE completed_at < now() - make_interval(days => $1)",
        ] {
            report.audit_rows_deleted += sqlx::query(sql).bind(days).execute(pool).await?.rows_affected();
        }
    }
    // Room sessions (room, times, size: no caller) stay as long as the longest-kept class.
    report.room_sessions_deleted = sqlx::query(
        "DELETE FROM room_sessions WHERE ended_at < now() - (SELECT max(keep_for) FROM retention_policies)",
    )
    .execute(pool)
    .await?
    .rows_affected();
    if scope.opt_out_days > 0 {
        report.opt_outs_expired =
            sqlx::query("DELETE FROM opt_outs WHERE created_at < now() - make_interval(days => $1)")
                .bind(scope.opt_out_days as i32)
                .execute(pool)
                .await?
                .rows_affected();
    }
    let (journal, rejected_days) = (scope.journal_dir.clone(), scope.rejected_days);
    let (tts, tts_days) = (scope.tts_dir.clone(), scope.tts_days);
    let (rejected, tts_files) = tokio::task::spawn_blocking(move || {
        let now = std::time::SystemTime::now();
        let rejected = match rejected_days {
            0 => Ok(0),
            d => super::writer::expire_rejected(&journal, days(d.into()), now),
        };
        let tts = match tts_days {
            0 => 0,
            d => expire_files(&tts, days(d), now),
        };
        (rejected, tts)
    })
    .await
    .map_err(|e| QueryError::Invalid(format!("retention: {e}")))?;
    report.rejected_expired = rejected.map_err(|e| QueryError::Invalid(format!("rejected.jsonl: {e}")))?;
    report.tts_files_expired = tts_files;
    Ok(())
}

/// The records under a retention class, their events and recordings, and recordings.
async fn sweep_classed(pool: &PgPool, batch: i64, recordings_dir: &Path) -> Result<SweepReport, QueryError> {
    let mut report = SweepReport::default();
    drop_expired_partitions(pool, recordings_dir, &mut report).await?;
    // The tenant's own policy of the class if it has one (`tolk_policy_action`).
    let expired = "tolk_policy_action(c.retention_class, c.tenant) = 'delete' AND c.expires_at < now()";
    delete_calls(pool, batch, expired, 0, recordings_dir, &mut report).await?;
    loop {
        let anonymised = sqlx::query(
            "UPDATE calls SET caller_pseudonym = NULL, caller_masked = NULL, caller_number = NULL, \
             caller_anonymous = true, sip_call_id = 'anonymised', tags = '{}', anonymised_at = now() \
             WHERE (id, started_at) IN ( \
               SELECT c.id, c.started_at FROM calls c \
               WHERE tolk_policy_action(c.retention_class, c.tenant) = 'anonymise' AND c.expires_at < now() \
                 AND NOT c.legal_hold AND c.anonymised_at IS NULL \
               LIMIT $1)",
        )
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        report.anonymised += anonymised;
        if (anonymised as i64) < batch {
            break;
        }
    }
    // Recordings expire on their own clock too (a room's recording has no single call).
    let paths: Vec<(String,)> =
        sqlx::query_as("DELETE FROM recordings WHERE expires_at < now() AND NOT legal_hold RETURNING path")
            .fetch_all(pool)
            .await?;
    let paths: Vec<String> = paths.into_iter().map(|(p,)| p).collect();
    report.recordings_deleted += remove_files(recordings_dir, &paths);
    Ok(report)
}

/// Deletes, in batches of `batch`, the calls `which` names (a condition on `calls c`, where
/// `$2` is `param`; one of ours, never input) and not on hold, with their events and
/// recordings (files included).
async fn delete_calls(
    pool: &PgPool,
    batch: i64,
    which: &'static str,
    param: i32,
    recordings_dir: &Path,
    report: &mut SweepReport,
) -> Result<(), QueryError> {
    let sql = format!(
        "WITH doomed AS ( \
           SELECT c.id, c.started_at FROM calls c WHERE {which} AND NOT c.legal_hold AND $2::int IS NOT NULL LIMIT $1), \
         ev AS (DELETE FROM call_events e USING doomed d WHERE e.call_id = d.id RETURNING 1), \
         rec AS (DELETE FROM recordings r USING doomed d WHERE r.call_id = d.id AND NOT r.legal_hold RETURNING r.path), \
         gone AS (DELETE FROM calls c USING doomed d WHERE c.id = d.id AND c.started_at = d.started_at RETURNING 1) \
         SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM ev), (SELECT array_agg(path) FROM rec)"
    );
    loop {
        let (deleted, events, paths): (i64, i64, Option<Vec<String>>) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(batch)
                .bind(param)
                .fetch_one(pool)
                .await?;
        report.deleted += deleted as u64;
        report.events_deleted += events as u64;
        report.recordings_deleted += remove_files(recordings_dir, &paths.unwrap_or_default());
        if deleted < batch {
            return Ok(());
        }
    }
}

/// Tenants whose account closed more than `days` ago (`tolk cdr tenant close`): their
/// calls with events and recordings, the recordings of their rooms and their opt-outs
/// go, whatever the class; what is on hold stays.
async fn sweep_closed_accounts(
    pool: &PgPool,
    batch: i64,
    days: u32,
    recordings_dir: &Path,
    report: &mut SweepReport,
) -> Result<(), QueryError> {
    // `$1`: the days (here and in `delete_calls`' `$2`).
    let closed: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM tenants WHERE closed_at < now() - make_interval(days => $1)")
            .bind(days as i32)
            .fetch_all(pool)
            .await?;
    if closed.is_empty() {
        return Ok(());
    }
    let closed: Vec<String> = closed.into_iter().map(|(t,)| t).collect();
    report.closed_accounts = closed.len() as u64;
    let which = "c.tenant IN (SELECT name FROM tenants WHERE closed_at < now() - make_interval(days => $2))";
    delete_calls(pool, batch, which, days as i32, recordings_dir, report).await?;
    let paths: Vec<(String,)> = sqlx::query_as(
        "DELETE FROM recordings r USING rooms m WHERE r.room = m.id AND NOT r.legal_hold \
         AND m.tenant = ANY($1) RETURNING r.path",
    )
    .bind(&closed)
    .fetch_all(pool)
    .await?;
    let paths: Vec<String> = paths.into_iter().map(|(p,)| p).collect();
    report.recordings_deleted += remove_files(recordings_dir, &paths);
    report.opt_outs_expired += sqlx::query("DELETE FROM opt_outs WHERE tenant = ANY($1)")
        .bind(&closed)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(())
}

fn remove_files(dir: &Path, paths: &[String]) -> u64 {
    paths
        .iter()
        .filter(|p| super::erasure::remove_under(dir, Path::new(p)))
        .count() as u64
}

/// Drops a monthly partition of `calls` (of a finished month) when every row in it has
/// expired under a `delete` policy and none is on hold: one DROP instead of a million
/// DELETEs. The calls' events and recordings go first.
async fn drop_expired_partitions(
    pool: &PgPool,
    recordings_dir: &Path,
    report: &mut SweepReport,
) -> Result<(), QueryError> {
    let parts: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'calls' \
         AND c.relname::text < 'calls_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM') ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for (name,) in parts {
        // Partition names are ours (calls_YYYYMM); check before splicing one into SQL.
        if !(name.len() == 12 && name.starts_with("calls_") && name[6..].bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let (rows, keep): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE c.legal_hold OR c.expires_at IS NULL OR c.expires_at >= now() \
               OR coalesce(tolk_policy_action(c.retention_class, c.tenant), 'keep') <> 'delete') \
             FROM {name} c"
        )))
        .fetch_one(pool)
        .await?;
        if rows == 0 || keep > 0 {
            continue;
        }
        let mut tx = pool.begin().await?;
        let events = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM call_events WHERE call_id IN (SELECT id FROM {name})"
        )))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let paths: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM recordings WHERE call_id IN (SELECT id FROM {name}) AND NOT legal_hold RETURNING path"
        )))
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let paths: Vec<String> = paths.into_iter().map(|(p,)| p).collect();
        report.recordings_deleted += remove_files(recordings_dir, &paths);
        report.events_deleted += events;
        report.deleted += rows as u64;
        report.partitions_dropped += 1;
        tracing::info!(partition = name, rows, "retention: dropped an expired partition");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_files_older_than_the_cache_days_are_removed() {
        let dir = std::env::temp_dir().join(format!("tolk-tts-expiry-{}-{}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let (old, new) = (dir.join("old.wav"), dir.join("new.wav"));
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"y").unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(now - 31 * day)
            .unwrap();
        assert_eq!(super::expire_files(&dir, 30 * day, now), 1);
        assert!(!old.exists() && new.exists() && dir.join("sub").exists());
        assert_eq!(super::expire_files(&dir.join("missing"), 30 * day, now), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
