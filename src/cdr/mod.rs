//! Call detail records: every call leaves one, in PostgreSQL, with a retention class, and
//! callers are known to the database by pseudonym.
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | the record, its dispositions, the journal entries |
//! | [`journal`] | the append-only local journal that is also the spool |
//! | [`copy`] | binary COPY encoding (pure) |
//! | [`writer`] | the sink calls write to and the task that tails the journal into PostgreSQL |
//! | [`db`] | connection targets and the embedded migrations |
//! | [`embedded`] | the private PostgreSQL cluster when no URL is configured |
//! | [`privacy`] | the pseudonym key and HMAC |
//! | [`query`] | lists, subject-access exports, reports |
//! | [`subject`] | opt-outs, legal holds, erasure by number |
//! | [`retention`] | policies and the sweeper |
//!
//! Must not: block the SIP core on the database (the sink only appends to a file).

pub mod copy;
pub mod correction;
pub mod db;
pub mod embedded;
pub mod erasure;
pub mod journal;
pub mod model;
pub mod privacy;
pub mod query;
pub mod requests;
pub mod retention;
pub mod subject;
pub mod tenants;
pub mod writer;

use crate::config::{Config, RetentionPolicyConfig};
use db::DbTarget;
use embedded::EmbeddedPostgres;
use model::{CallRecord, CallerIdentity, Disposition, JournalEntry, Micros, now_micros};
use privacy::PseudonymKey;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use writer::{CdrSink, Writer, WriterConfig};

/// Errors starting the CDR service.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Key(#[from] privacy::KeyError),
    #[error("private PostgreSQL: {0}")]
    Embedded(#[from] embedded::EmbeddedError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// How the gateway's calls become records: pseudonyms, retention, the node's identity.
#[derive(Debug, Clone)]
pub struct RecordPolicy {
    pub key: PseudonymKey,
    pub node: String,
    pub default_class: String,
    pub policies: Vec<RetentionPolicyConfig>,
    /// The opt-out registry as last loaded from the database.
    pub opt_outs: std::sync::Arc<std::sync::RwLock<subject::OptOuts>>,
}

impl RecordPolicy {
    /// Puts `record` under retention `class`: its expiry, and whether it may keep the caller's
    /// number in clear (never for a caller who opted out of retention). False for an unknown
    /// class (the record is left as it was).
    /// A tenant's own policy of the class (`[[cdr.policies]]` with `tenant`) goes first.
    pub fn apply_class(&self, record: &mut CallRecord, class: &str, caller_e164: Option<&str>) -> bool {
        let tenants = self
            .policies
            .iter()
            .find(|p| p.name == class && p.tenant.is_some() && p.tenant == record.tenant);
        let Some(p) = tenants.or_else(|| self.policies.iter().find(|p| p.name == class && p.tenant.is_none())) else {
            return false;
        };
        record.retention_class = class.to_string();
        record.expires_at = Some(record.started_at + p.keep_days as i64 * 86_400_000_000);
        record.caller.number = if p.clear_number && !record.caller.anonymous {
            caller_e164.map(str::to_string)
        } else {
            None
        };
        true
    }

    /// The record of a new inbound call (revision 0: not written yet) of `tenant`, under
    /// the default retention class. `caller_e164` is the caller's number, `None` when
    /// withheld or absent. The caller's pseudonym is the tenant's ([`PseudonymKey::in_tenant`]);
    /// an opt-out registered under it or under the gateway's pseudonym applies.
    pub fn inbound(
        &self,
        dialled: Option<&str>,
        caller_e164: Option<&str>,
        tenant: Option<&str>,
        sip_call_id: &str,
        started_at: Micros,
    ) -> CallRecord {
        let mut consent = serde_json::Map::new();
        let caller = match caller_e164 {
            Some(n) => {
                let gateways = self.key.pseudonym(n);
                let pseudonym = self.key.in_tenant(&gateways, tenant);
                let named =
                    |set: &std::collections::HashSet<String>| set.contains(&pseudonym) || set.contains(&gateways);
                // Fail closed: a registry that cannot stand for the database (never read, or
                // unreachable for 30 s) may not name a caller who opted out, so nobody is
                // recorded or contacted until it is read again. Retention keeps the cached
                // answer (anonymising every call in an outage would lose the pseudonyms that
                // erasure and subject access need).
                let (retain, record, contact, current) = self
                    .opt_outs
                    .read()
                    .map(|o| {
                        (
                            named(&o.retain),
                            named(&o.record),
                            named(&o.contact),
                            o.is_current(started_at),
                        )
                    })
                    .unwrap_or((false, false, false, false));
                if !current {
                    metrics::counter!("optout_registry_unavailable_calls_total").increment(1);
                }
                let (record, contact) = (record || !current, contact || !current);
                if record {
                    consent.insert("record".into(), false.into());
                }
                if contact {
                    consent.insert("contact".into(), false.into());
                }
                if retain {
                    // Opted out of retention: anonymised from the start.
                    consent.insert("retain".into(), false.into());
                    CallerIdentity {
                        anonymous: true,
                        ..Default::default()
                    }
                } else {
                    CallerIdentity {
                        pseudonym: Some(pseudonym),
                        masked: Some(crate::privacy::mask_number(n)),
                        number: None,
                        anonymous: false,
                    }
                }
            }
            None => CallerIdentity {
                anonymous: true,
                ..Default::default()
            },
        };
        let dialled = dialled.unwrap_or("").to_string();
        let mut record = CallRecord {
            id: uuid::Uuid::now_v7(),
            revision: 0,
            node: self.node.clone(),
            tenant: tenant.map(str::to_string),
            trunk: None,
            direction: "inbound".into(),
            caller,
            dialled_kind: crate::number::classify(&dialled),
            dialled,
            sip_call_id: sip_call_id.to_string(),
            started_at,
            answered_at: None,
            ended_at: None,
            disposition: Disposition::InProgress,
            sip_status: None,
            q850_cause: None,
            hangup_by: None,
            codec: None,
            quality: None,
            flow: None,
            room: None,
            room_session: None,
            role: None,
            language: None,
            recording_id: None,
            consent: serde_json::Value::Object(consent),
            tags: serde_json::json!({}),
            expires_at: None,
            retention_class: self.default_class.clone(),
        };
        // Expiry and the number in clear follow from the class, as for any later class change.
        self.apply_class(&mut record, &self.default_class, caller_e164);
        record
    }
}

/// The running CDR service: the sink for calls, the writer task, the private cluster.
pub struct CdrService {
    pub sink: CdrSink,
    pub policy: RecordPolicy,
    pub target: DbTarget,
    /// For queries, sweeps and erasure (connects lazily: the database may be down).
    pub pool: sqlx::PgPool,
    embedded: Option<EmbeddedPostgres>,
    writer: tokio::task::JoinHandle<()>,
    alive: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// The node id: a UUID kept in `data_dir/node-id` (crash recovery closes only this node's
/// calls).
fn node_id(data_dir: &Path) -> Result<String, CdrError> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).map_err(|e| CdrError::Io(path.display().to_string(), e))?;
    Ok(id)
}

/// Where the database is, starting the private cluster when no URL is configured.
pub async fn resolve_target(cfg: &Config) -> Result<(DbTarget, Option<EmbeddedPostgres>), CdrError> {
    match cfg.database.url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => Ok((DbTarget::Url(url.to_string()), None)),
        None => {
            let dir = cfg.data_dir.clone();
            let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
                .await
                .map_err(|e| CdrError::Io("private PostgreSQL".into(), std::io::Error::other(e.to_string())))??;
            Ok((pg.target(), Some(pg)))
        }
    }
}

/// Keeps the opt-out registry fresh (every 10 s), the retention policies in the database,
/// and runs the retention sweeper every `sweep_every` (never when zero).
async fn housekeeping(
    pool: sqlx::PgPool,
    opt_outs: std::sync::Arc<std::sync::RwLock<subject::OptOuts>>,
    policies: Vec<RetentionPolicyConfig>,
    sweep_every: Duration,
    scope: retention::SweepScope,
) {
    let mut policies_synced = false;
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        match subject::load_opt_outs(&pool).await {
            Ok(o) => {
                if let Ok(mut w) = opt_outs.write() {
                    *w = o;
                }
            }
            Err(e) => tracing::debug!(error = %e, "opt-out registry not refreshed"),
        }
        if !policies_synced {
            policies_synced = retention::sync_policies(&pool, &policies).await.is_ok();
        }
        let due = !sweep_every.is_zero() && last_sweep.is_none_or(|t| t.elapsed() >= sweep_every);
        if policies_synced && due {
            last_sweep = Some(tokio::time::Instant::now());
            match retention::sweep(&pool, 5000, &scope).await {
                Ok(r) if r != retention::SweepReport::default() => {
                    tracing::info!(
                        deleted = r.deleted,
                        anonymised = r.anonymised,
                        events = r.events_deleted,
                        recordings = r.recordings_deleted,
                        partitions = r.partitions_dropped,
                        audit_rows = r.audit_rows_deleted,
                        opt_outs = r.opt_outs_expired,
                        rejected = r.rejected_expired,
                        tts_files = r.tts_files_expired,
                        "retention sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; retried at the next interval"),
            }
        }
    }
}

impl CdrService {
    /// Opens the journal, loads (or creates) the pseudonym key, finds or starts the database,
    /// migrates it when reachable, and starts the writer. A database that is down is not an
    /// error: records are spooled until it is back.
    pub async fn start(cfg: &Config) -> Result<CdrService, CdrError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| CdrError::Io(cfg.data_dir.display().to_string(), e))?;
        let journal_dir = cfg.data_dir.join("cdr");
        let (journal, torn) = journal::Journal::open(&journal_dir)?;
        if torn > 0 {
            tracing::warn!(bytes = torn, "CDR journal: a torn last entry from a crash was removed");
        }
        let key = privacy::pseudonym_key(cfg)?;
        let node = node_id(&cfg.data_dir)?;
        let (target, embedded) = resolve_target(cfg).await?;
        let pool = db::lazy_pool(&target, 4)?;
        match tokio::time::timeout(Duration::from_secs(10), db::migrate(&pool)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "CDR database not ready; records are spooled until it is"),
            Err(_) => tracing::warn!("CDR database did not answer in 10 s; records are spooled until it does"),
        }
        let (sink, wake) = CdrSink::new(journal);
        // Calls a crash or kill cut off are closed at the last time this node was alive.
        let alive_path = journal_dir.join("alive");
        let alive_at = std::fs::metadata(&alive_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64);
        let now = now_micros();
        sink.write(JournalEntry::CloseInterrupted {
            node: node.clone(),
            started_before: now,
            alive_at: alive_at.unwrap_or(now).min(now),
        });
        let alive = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let _ = std::fs::write(&alive_path, b"");
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let writer_cfg = WriterConfig {
            batch_rows: cfg.cdr.batch_rows,
            batch_wait: Duration::from_millis(cfg.cdr.batch_wait_ms),
        };
        let writer = Writer::new(target.clone(), &journal_dir, writer_cfg)
            .with_erasure_stores(erasure::ErasureStores::under(&cfg.data_dir, key.clone()));
        let writer = tokio::spawn(writer.run(sink.clone(), wake, stop_rx, Duration::from_secs(5)));
        // Read once before the first call (bounded: a database that does not answer leaves
        // the registry unread, and calls fail closed until housekeeping reads it).
        let first = tokio::time::timeout(Duration::from_secs(3), subject::load_opt_outs(&pool)).await;
        let registry = match first {
            Ok(Ok(o)) => o,
            _ => {
                tracing::warn!("the opt-out registry could not be read: calls are not recorded until it is");
                subject::OptOuts::default()
            }
        };
        let opt_outs = std::sync::Arc::new(std::sync::RwLock::new(registry));
        let housekeeping = tokio::spawn(housekeeping(
            pool.clone(),
            opt_outs.clone(),
            cfg.retention_policies(),
            Duration::from_secs(cfg.cdr.sweep_interval_secs),
            retention::SweepScope::of(cfg),
        ));
        Ok(CdrService {
            sink,
            policy: RecordPolicy {
                key,
                node,
                default_class: cfg.cdr.default_retention.clone(),
                policies: cfg.retention_policies(),
                opt_outs,
            },
            target,
            pool,
            embedded,
            writer,
            alive,
            housekeeping,
            stop,
        })
    }

    /// Lets the writer drain (up to 5 s), then stops the private cluster if we run one.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.writer.await;
        self.alive.abort();
        self.housekeeping.abort();
        self.pool.close().await;
        // A clean stop: no call of this node is in progress any more.
        let _ = std::fs::write(self.sink.dir().join("alive"), b"");
        if let Some(pg) = self.embedded {
            match tokio::task::spawn_blocking(move || pg.stop()).await {
                Ok(Ok(())) => tracing::info!("stopped the private PostgreSQL cluster"),
                Ok(Err(e)) => tracing::warn!(error = %e, "stopping the private PostgreSQL cluster"),
                Err(_) => {}
            }
        }
    }

    /// The journal directory.
    pub fn journal_dir(&self) -> PathBuf {
        self.sink.dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(registry: subject::OptOuts) -> RecordPolicy {
        RecordPolicy {
            key: PseudonymKey::from_bytes([7; 32]),
            node: "test".into(),
            default_class: "standard".into(),
            policies: Vec::new(),
            opt_outs: std::sync::Arc::new(std::sync::RwLock::new(registry)),
        }
    }

    fn consent(p: &RecordPolicy, at: Micros) -> serde_json::Value {
        p.inbound(Some("+18005550100"), Some("+14155550123"), None, "c1", at)
            .consent
    }

    #[test]
    fn a_registry_that_cannot_stand_for_the_database_fails_closed() {
        let now = 1_800_000_000_000_000;
        let opted_out = serde_json::json!({ "record": false, "contact": false });
        // Never read: nobody is recorded or contacted.
        assert_eq!(consent(&policy(subject::OptOuts::default()), now), opted_out);
        // Read 5 s ago and naming nobody: the caller is recorded.
        let fresh = subject::OptOuts {
            loaded_at: Some(now - 5_000_000),
            ..Default::default()
        };
        assert_eq!(consent(&policy(fresh.clone()), now), serde_json::json!({}));
        // Unrefreshed for 30 s (the database unreachable since): closed again.
        assert_eq!(consent(&policy(fresh), now + 25_000_001), opted_out);
        // A caller the registry names stays opted out whatever its age.
        let p = policy(subject::OptOuts::default());
        let pseudonym = p.key.pseudonym("+14155550123");
        let named = subject::OptOuts {
            record: [pseudonym].into(),
            loaded_at: Some(now),
            ..Default::default()
        };
        assert_eq!(consent(&policy(named), now)["record"], false);
    }

    #[test]
    fn a_tenants_calls_name_the_caller_by_its_own_pseudonym_and_honour_both_opt_outs() {
        let now = 1_800_000_000_000_000;
        let n = "+14155550123";
        let p = policy(subject::OptOuts::default());
        let gateways = p.key.pseudonym(n);
        let acme = p.key.in_tenant(&gateways, Some("acme"));
        let call = |p: &RecordPolicy, tenant| p.inbound(Some("+18005550100"), Some(n), tenant, "c1", now);
        let rec = call(&p, Some("acme"));
        assert_eq!(rec.caller.pseudonym.as_deref(), Some(acme.as_str()));
        assert_eq!(rec.tenant.as_deref(), Some("acme"));
        assert_eq!(call(&p, None).caller.pseudonym.as_deref(), Some(gateways.as_str()));
        let registry = |record: &str| subject::OptOuts {
            record: [record.to_string()].into(),
            loaded_at: Some(now),
            ..Default::default()
        };
        // An opt-out for every call (the gateway's pseudonym) holds in acme's calls; one
        // made in acme's calls holds there and not in another tenant's.
        assert_eq!(
            call(&policy(registry(&gateways)), Some("acme")).consent["record"],
            false
        );
        assert_eq!(call(&policy(registry(&acme)), Some("acme")).consent["record"], false);
        assert!(
            call(&policy(registry(&acme)), Some("globex"))
                .consent
                .get("record")
                .is_none()
        );
        assert!(call(&policy(registry(&acme)), None).consent.get("record").is_none());
    }

    #[test]
    fn a_tenants_own_policy_of_a_class_replaces_the_class_for_its_calls() {
        let mut p = policy(subject::OptOuts::default());
        let class = |name: &str, days, tenant: Option<&str>| crate::config::RetentionPolicyConfig {
            name: name.into(),
            keep_days: days,
            action: crate::config::RetentionAction::Delete,
            clear_number: false,
            description: String::new(),
            tenant: tenant.map(str::to_string),
        };
        p.policies = vec![class("standard", 395, None), class("standard", 30, Some("acme"))];
        let now = 1_800_000_000_000_000;
        let day = 86_400_000_000;
        let expiry = |tenant| {
            p.inbound(Some("+18005550100"), Some("+14155550123"), tenant, "c1", now)
                .expires_at
        };
        assert_eq!(expiry(Some("acme")), Some(now + 30 * day));
        assert_eq!(expiry(Some("globex")), Some(now + 395 * day));
        assert_eq!(expiry(None), Some(now + 395 * day));
    }
}
