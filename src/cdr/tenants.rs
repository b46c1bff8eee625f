//! Tenants as the records know them (`tenants`: each tenant that has had a call, filed by
//! the CDR writer) and the end of a tenant's account: closing it starts a clock
//! (`cdr.account_closed_days`, 30) after which the retention sweep deletes everything of the
//! tenant's (calls with their events and recordings, its rooms' recordings, its opt-outs),
//! whatever the class; what is under legal hold stays. Reopening before then stops the clock.

use super::query::{QueryError, json_rows, time_error};
use sqlx::PgPool;

/// The tenants, with when each closed and when its data goes (`delete_after`).
pub async fn list(pool: &PgPool, closed_days: u32) -> Result<Vec<serde_json::Value>, QueryError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT json_build_object('tenant', name, 'first_seen', first_seen, 'closed_at', closed_at, \
           'delete_after', closed_at + make_interval(days => $1))::text FROM tenants ORDER BY name",
    )
    .bind(closed_days as i32)
    .fetch_all(pool)
    .await?;
    Ok(json_rows(rows))
}

/// The columns of [`list`]'s rows, in order.
pub const TENANT_COLUMNS: &[&str] = &["tenant", "first_seen", "closed_at", "delete_after"];

/// Closes `tenant`'s account at `at` (PostgreSQL timestamptz text; default now), known or
/// not yet (a tenant closed before its records arrive is closed all the same); returns it as
/// listed.
pub async fn close(
    pool: &PgPool,
    tenant: &str,
    at: Option<&str>,
    closed_days: u32,
) -> Result<serde_json::Value, QueryError> {
    if tenant.trim().is_empty() {
        return Err(QueryError::Invalid("name the tenant".into()));
    }
    sqlx::query(
        "INSERT INTO tenants (name, closed_at) VALUES ($1, coalesce($2::timestamptz, now())) \
         ON CONFLICT (name) DO UPDATE SET closed_at = EXCLUDED.closed_at",
    )
    .bind(tenant)
    .bind(at)
    .execute(pool)
    .await
    .map_err(|e| time_error(e, at))?;
    one(pool, tenant, closed_days).await
}

/// Reopens `tenant`'s account (its clock stops); false when it was not closed.
pub async fn reopen(pool: &PgPool, tenant: &str) -> Result<bool, QueryError> {
    let r = sqlx::query("UPDATE tenants SET closed_at = NULL WHERE name = $1 AND closed_at IS NOT NULL")
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

async fn one(pool: &PgPool, tenant: &str, closed_days: u32) -> Result<serde_json::Value, QueryError> {
    list(pool, closed_days)
        .await?
        .into_iter()
        .find(|t| t["tenant"] == tenant)
        .ok_or_else(|| QueryError::Invalid(format!("no tenant `{tenant}`")))
}
