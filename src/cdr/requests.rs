//! The register of data-subject requests (GDPR Art. 12(3), 15-17, 21): every access,
//! erasure, correction or objection request from the day it was received to the day it was
//! answered, with its due date (`cdr.request_due_days`, 30 by default). An operator logs a
//! request when it arrives (`tolk cdr requests add`, `POST /api/v1/requests`); carrying it
//! out (`tolk cdr export`, `erase`, `correct`) answers the subject's open requests of that
//! kind, and an operation asked with no request logged is registered as received and
//! answered at once, so the register is complete either way. Rows name the subject by
//! [`subject_ref`](super::erasure::subject_ref), never by pseudonym or number.

use super::query::{QueryError, json_rows, time_error};
use sqlx::PgConnection;

/// What a subject asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A copy of what is held (Art. 15): `tolk cdr export`.
    Access,
    /// Erasure (Art. 17): `tolk cdr erase`.
    Erasure,
    /// Correction (Art. 16): `tolk cdr correct`.
    Correction,
    /// Objection to processing (Art. 21): an opt-out (`tolk optout add`).
    Objection,
}

impl RequestKind {
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Access,
        RequestKind::Erasure,
        RequestKind::Correction,
        RequestKind::Objection,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Access => "access",
            RequestKind::Erasure => "erasure",
            RequestKind::Correction => "correction",
            RequestKind::Objection => "objection",
        }
    }

    pub fn parse(s: &str) -> Result<RequestKind, QueryError> {
        RequestKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            QueryError::Invalid(format!(
                "`{s}` is not a request kind (access, erasure, correction, objection)"
            ))
        })
    }
}

/// A request as it arrives.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub kind: RequestKind,
    /// [`subject_ref`](super::erasure::subject_ref) of the subject's pseudonym.
    pub subject_ref: &'a str,
    /// When it was received, if not now (any PostgreSQL timestamptz text: `2026-12-01`).
    pub received_at: Option<&'a str>,
    /// Or when it was received as the journal knew it (a request queued during an outage).
    pub received_micros: Option<super::model::Micros>,
    pub requested_by: &'a str,
    /// The operator's note; numbers in it are masked before it is stored.
    pub note: &'a str,
    pub due_days: u32,
}

/// The fields of a listed request (`tolk cdr requests --format json`, `GET /api/v1/requests`).
const REQUEST_JSON: &str = "json_build_object(\
    'id', id, 'kind', kind, 'subject', left(subject_ref, 12), 'received_at', received_at, \
    'due_at', due_at, 'days_left', CASE WHEN completed_at IS NULL \
        THEN floor(extract(epoch FROM due_at - now()) / 86400)::int END, \
    'overdue', completed_at IS NULL AND due_at < now(), 'completed_at', completed_at, \
    'requested_by', requested_by, 'note', note, 'outcome', outcome)";

/// The columns of [`list`]'s rows for a table or CSV, in order.
pub const REQUEST_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "subject",
    "received_at",
    "due_at",
    "days_left",
    "overdue",
    "completed_at",
    "requested_by",
    "note",
];

/// Logs a request received; returns it as listed.
pub async fn log(conn: &mut PgConnection, r: &NewRequest<'_>) -> Result<serde_json::Value, QueryError> {
    let sql = format!(
        "INSERT INTO subject_requests (id, kind, subject_ref, received_at, due_at, requested_by, note) \
         SELECT $1, $2, $3, t, t + make_interval(days => $6), $4, $5 \
         FROM (SELECT coalesce($7::timestamptz, to_timestamp($8::float8 / 1e6), now()) AS t) r \
         RETURNING {REQUEST_JSON}::text"
    );
    let (text,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(uuid::Uuid::now_v7())
        .bind(r.kind.as_str())
        .bind(r.subject_ref)
        .bind(r.requested_by)
        .bind(crate::privacy::mask_numbers_in(r.note).into_owned())
        .bind(r.due_days as i32)
        .bind(r.received_at)
        .bind(r.received_micros.map(|t| t as f64))
        .fetch_one(conn)
        .await
        .map_err(|e| time_error(e, r.received_at))?;
    serde_json::from_str(&text).map_err(|e| QueryError::Invalid(e.to_string()))
}

/// Answers the subject's open requests of `kind` with `outcome` (what was done); when none
/// was logged, registers one received `received_at` (or now) and answered now. Returns the
/// ids answered. Runs on `conn` (inside the operation's transaction, so the register and the
/// operation commit together).
pub async fn answer(
    conn: &mut PgConnection,
    r: &NewRequest<'_>,
    outcome: &serde_json::Value,
) -> Result<Vec<uuid::Uuid>, QueryError> {
    let answered: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "UPDATE subject_requests SET completed_at = now(), outcome = $3 \
         WHERE subject_ref = $1 AND kind = $2 AND completed_at IS NULL RETURNING id",
    )
    .bind(r.subject_ref)
    .bind(r.kind.as_str())
    .bind(outcome)
    .fetch_all(&mut *conn)
    .await?;
    if !answered.is_empty() {
        return Ok(answered.into_iter().map(|(i,)| i).collect());
    }
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO subject_requests (id, kind, subject_ref, received_at, due_at, completed_at, requested_by, note, outcome) \
         SELECT $1, $2, $3, t, t + make_interval(days => $6), now(), $4, $5, $7 \
         FROM (SELECT coalesce($8::timestamptz, to_timestamp($9::float8 / 1e6), now()) AS t) r",
    )
    .bind(id)
    .bind(r.kind.as_str())
    .bind(r.subject_ref)
    .bind(r.requested_by)
    .bind(crate::privacy::mask_numbers_in(r.note).into_owned())
    .bind(r.due_days as i32)
    .bind(outcome)
    .bind(r.received_at)
    .bind(r.received_micros.map(|t| t as f64))
    .execute(&mut *conn)
    .await
    .map_err(|e| time_error(e, r.received_at))?;
    Ok(vec![id])
}

/// Closes one open request without an operation (refused, withdrawn, identity not
/// proved: the note says why); false when there is no such open request.
pub async fn close(conn: &mut PgConnection, id: uuid::Uuid, note: &str) -> Result<bool, QueryError> {
    let r = sqlx::query(
        "UPDATE subject_requests SET completed_at = now(), \
         outcome = jsonb_build_object('closed', $2::text) WHERE id = $1 AND completed_at IS NULL",
    )
    .bind(id)
    .bind(crate::privacy::mask_numbers_in(note).into_owned())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Requests, oldest due first: the open ones, or with `all` the answered ones too (newest
/// answered last); with `subject_ref`, one subject's.
pub async fn list(
    conn: &mut PgConnection,
    all: bool,
    subject_ref: Option<&str>,
) -> Result<Vec<serde_json::Value>, QueryError> {
    let sql = format!(
        "SELECT {REQUEST_JSON}::text FROM subject_requests \
         WHERE ($1 OR completed_at IS NULL) AND ($2::text IS NULL OR subject_ref = $2) \
         ORDER BY completed_at NULLS FIRST, due_at, id"
    );
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(all)
        .bind(subject_ref)
        .fetch_all(conn)
        .await?;
    Ok(json_rows(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written_and_others_are_refused_with_the_list() {
        for k in RequestKind::ALL {
            assert_eq!(RequestKind::parse(k.as_str()).unwrap(), k);
        }
        let e = RequestKind::parse("delete").unwrap_err().to_string();
        assert!(e.contains("access, erasure, correction, objection"), "{e}");
    }
}
