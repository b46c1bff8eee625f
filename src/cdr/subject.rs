//! Data-subject operations: the opt-out registry and legal holds (erasure by number is
//! `erasure`). All by pseudonym: the number a requester gives is turned into its pseudonym
//! before any query.

use super::query::{QueryError, json_rows};
use sqlx::PgPool;
use std::collections::HashSet;

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

/// The tenants the database knows: every tenant that has had a call (the writer files
/// them), open or closed.
pub async fn tenants(pool: &PgPool) -> Result<Vec<String>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM tenants ORDER BY name")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// Every pseudonym the subject whose gateway pseudonym is `pseudonym` has in the database:
/// the gateway's and each known tenant's ([`PseudonymKey::all_pseudonyms`]).
pub async fn pseudonyms_of(
    pool: &PgPool,
    key: &super::privacy::PseudonymKey,
    pseudonym: &str,
) -> Result<Vec<String>, QueryError> {
    Ok(key.all_pseudonyms(pseudonym, &tenants(pool).await?))
}

/// Registers an opt-out (idempotent): `pseudonym` as the records of `tenant` name the caller
/// (the gateway's pseudonym and no tenant: every tenant's calls).
pub async fn opt_out(
    pool: &PgPool,
    pseudonym: &str,
    tenant: Option<&str>,
    scope: &str,
    source: &str,
) -> Result<(), QueryError> {
    check_scope(scope)?;
    sqlx::query(
        "INSERT INTO opt_outs (pseudonym, scope, source, tenant) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (pseudonym, scope) DO NOTHING",
    )
    .bind(pseudonym)
    .bind(scope)
    .bind(source)
    .bind(tenant)
    .execute(pool)
    .await?;
    Ok(())
}

/// The columns of [`list_opt_outs`]' rows, in order.
pub const OPT_OUT_COLUMNS: &[&str] = &["pseudonym", "scope", "tenant", "source", "since"];

/// The pseudonyms an opt-out of the subject is withdrawn under: `tenant`'s calls only, or
/// (none) wherever it was made.
pub async fn opt_in_pseudonyms(
    pool: &PgPool,
    key: &super::privacy::PseudonymKey,
    pseudonym: &str,
    tenant: Option<&str>,
) -> Result<Vec<String>, QueryError> {
    match tenant {
        Some(t) => Ok(vec![key.in_tenant(pseudonym, Some(t))]),
        None => pseudonyms_of(pool, key, pseudonym).await,
    }
}

/// Withdraws the opt-outs of `scope` registered under any of `pseudonyms`; true when there
/// was one.
pub async fn opt_in(pool: &PgPool, pseudonyms: &[String], scope: &str) -> Result<bool, QueryError> {
    check_scope(scope)?;
    let r = sqlx::query("DELETE FROM opt_outs WHERE pseudonym = ANY($1) AND scope = $2")
        .bind(pseudonyms)
        .bind(scope)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// All opt-outs (pseudonyms shortened to 12 characters for display).
pub async fn list_opt_outs(pool: &PgPool) -> Result<Vec<serde_json::Value>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT json_build_object('pseudonym', left(pseudonym, 12), 'scope', scope, 'tenant', tenant, \
         'source', source, 'since', created_at)::text FROM opt_outs ORDER BY created_at, pseudonym, scope",
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

/// Sets or releases the legal hold on one record or on all records of a caller (under any
/// of their pseudonyms); returns how many records changed.
pub async fn set_hold(
    pool: &PgPool,
    id: Option<uuid::Uuid>,
    pseudonyms: Option<&[String]>,
    hold: bool,
) -> Result<u64, QueryError> {
    if id.is_none() && pseudonyms.is_none() {
        return Err(QueryError::Invalid("a hold needs a record id or a number".into()));
    }
    let calls = sqlx::query(
        "UPDATE calls SET legal_hold = $3 WHERE (($1::uuid IS NOT NULL AND id = $1) OR ($2::text[] IS NOT NULL AND caller_pseudonym = ANY($2))) \
         AND legal_hold <> $3",
    )
    .bind(id)
    .bind(pseudonyms)
    .bind(hold)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE recordings SET legal_hold = $3 WHERE ($1::uuid IS NOT NULL AND call_id = $1) OR ($2::text[] IS NOT NULL AND caller_pseudonym = ANY($2))",
    )
    .bind(id)
    .bind(pseudonyms)
    .bind(hold)
    .execute(pool)
    .await?;
    // `id` may name a recording itself: a room recording (no caller of its own) is held so,
    // and neither retention nor an erasure of its members removes it until released.
    let recordings = sqlx::query(
        "UPDATE recordings SET legal_hold = $2 WHERE $1::uuid IS NOT NULL AND id = $1 AND legal_hold <> $2",
    )
    .bind(id)
    .bind(hold)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(calls + recordings)
}

/// Answers a subject access request (GDPR Art. 15): everything held about the subject
/// ([`export_subject`](super::query::export_subject)) with their requests, registered as
/// answered ([`requests::answer`](super::requests::answer)).
pub async fn answer_access(
    pool: &PgPool,
    key: &super::privacy::PseudonymKey,
    pseudonym: &str,
    requested_by: &str,
    due_days: u32,
) -> Result<serde_json::Value, QueryError> {
    use super::requests::{NewRequest, RequestKind};
    let all = pseudonyms_of(pool, key, pseudonym).await?;
    let mut export = super::query::export_subject(pool, &all).await?;
    let subject = super::erasure::subject_ref(pseudonym);
    let outcome = serde_json::json!({
        "calls": export["calls"].as_array().map_or(0, Vec::len),
        "recordings": export["recordings"].as_array().map_or(0, Vec::len),
        "room_recordings": export["room_recordings"].as_array().map_or(0, Vec::len),
    });
    let mut conn = pool.acquire().await?;
    let request = NewRequest {
        kind: RequestKind::Access,
        subject_ref: &subject,
        received_at: None,
        received_micros: None,
        requested_by,
        note: "",
        due_days,
    };
    super::requests::answer(&mut conn, &request, &outcome).await?;
    export["requests"] = super::requests::list(&mut conn, true, Some(&subject)).await?.into();
    Ok(export)
}

/// Registers an opt-out an operator was asked for (an objection, GDPR Art. 21), for one
/// tenant's calls or (none) every call, and answers the subject's open objection requests.
pub async fn opt_out_on_request(
    pool: &PgPool,
    key: &super::privacy::PseudonymKey,
    pseudonym: &str,
    tenant: Option<&str>,
    scope: &str,
    source: &str,
    due_days: u32,
) -> Result<(), QueryError> {
    use super::requests::{NewRequest, RequestKind};
    opt_out(pool, &key.in_tenant(pseudonym, tenant), tenant, scope, source).await?;
    let subject = super::erasure::subject_ref(pseudonym);
    let request = NewRequest {
        kind: RequestKind::Objection,
        subject_ref: &subject,
        received_at: None,
        received_micros: None,
        requested_by: source,
        note: "",
        due_days,
    };
    let mut conn = pool.acquire().await?;
    super::requests::answer(&mut conn, &request, &serde_json::json!({ "opt_out": scope })).await?;
    Ok(())
}
