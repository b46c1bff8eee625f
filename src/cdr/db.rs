//! Connecting to PostgreSQL and migrating the CDR schema (`migrations/`, embedded in the
//! binary so an installed `tolk` needs no source tree).

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, SqlStr};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

/// The schema's migrations, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "cdr", include_str!("../../migrations/0001_cdr.sql")),
    (
        2,
        "erasure everywhere",
        include_str!("../../migrations/0002_erasure_everywhere.sql"),
    ),
    (
        3,
        "subject requests",
        include_str!("../../migrations/0003_subject_requests.sql"),
    ),
    (4, "tenants", include_str!("../../migrations/0004_tenants.sql")),
];

/// Errors reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL: {0}")]
    Url(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrating the CDR schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Where the database is: a URL (`postgres://...`) or a private cluster's socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    Url(String),
    Socket {
        dir: std::path::PathBuf,
        database: String,
        user: String,
    },
}

impl DbTarget {
    /// Connection options, quiet (statement logging off: statements carry no numbers, but
    /// they are noise at CDR rates).
    pub fn options(&self) -> Result<PgConnectOptions, DbError> {
        let opts = match self {
            DbTarget::Url(u) => PgConnectOptions::from_str(u).map_err(|e| DbError::Url(e.to_string()))?,
            DbTarget::Socket { dir, database, user } => {
                PgConnectOptions::new().socket(dir).database(database).username(user)
            }
        };
        Ok(opts.application_name("tolk").disable_statement_logging())
    }
}

/// The embedded migrator.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// A small pool for queries (reports, sweeps, erasure); the writer has its own connection.
pub async fn pool(target: &DbTarget, max: u32) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(target.options()?)
        .await?)
}

/// A pool that connects on first use (it does not fail when the database is down).
pub fn lazy_pool(target: &DbTarget, max: u32) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(target.options()?))
}

/// Brings the schema up to date and creates this month's and the next month's partitions.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    sqlx::query("SELECT tolk_ensure_partitions(now(), now() + interval '1 month')")
        .execute(pool)
        .await?;
    Ok(())
}

/// Connects and brings the schema up to date (migrations take an advisory lock, so several
/// gateways starting together are safe). Creates this month's and the next month's
/// partitions.
pub async fn prepare(target: &DbTarget) -> Result<PgPool, DbError> {
    let pool = pool(target, 4).await?;
    migrator().run(&pool).await?;
    sqlx::query("SELECT tolk_ensure_partitions(now(), now() + interval '1 month')")
        .execute(&pool)
        .await?;
    Ok(pool)
}
