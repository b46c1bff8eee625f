//! `[cdr]`: call detail records, their retention classes (for every tenant, or one
//! tenant's own), erasure and the privacy clocks. Re-exported from `config`.

use serde::Deserialize;
use std::path::PathBuf;

/// What erasure by number does to the room recordings the caller was heard in
/// (`cdr.erasure_room_recordings`): the other members are in them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomRecordingErasure {
    Delete,
    Keep,
}

impl RoomRecordingErasure {
    /// The name kept in the erasure audit row.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomRecordingErasure::Delete => "delete",
            RoomRecordingErasure::Keep => "keep",
        }
    }
}

/// What happens to a record whose time is up or whose caller asked for erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionAction {
    Delete,
    Anonymise,
}

impl RetentionAction {
    /// The name stored in `retention_policies.action` and accepted by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionAction::Delete => "delete",
            RetentionAction::Anonymise => "anonymise",
        }
    }

    pub fn from_name(name: &str) -> Option<RetentionAction> {
        match name {
            "delete" => Some(RetentionAction::Delete),
            "anonymise" => Some(RetentionAction::Anonymise),
            _ => None,
        }
    }
}

/// `[cdr]`: call detail records, their retention and pseudonyms.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// Write CDRs at all. Off only for tests and benchmarks of other parts: a gateway that
    /// bills needs them.
    pub enabled: bool,
    /// Entries per COPY batch.
    pub batch_rows: usize,
    /// How long the writer lets a batch gather.
    pub batch_wait_ms: u64,
    /// The retention class of a call no dialplan rule classifies.
    pub default_retention: String,
    /// The caller-pseudonym key (HMAC-SHA256); default `<data_dir>/keys/pseudonym.key`.
    pub key_file: Option<PathBuf>,
    /// Retention policies by class name; the defaults are seeded when this is empty.
    pub policies: Vec<RetentionPolicyConfig>,
    /// How often the gateway runs the retention sweeper (0: never; `tolk cdr sweep` runs it
    /// by hand).
    pub sweep_interval_secs: u64,
    /// What erasure by number does to the caller's records: `delete` or `anonymise`.
    pub erasure_action: RetentionAction,
    /// Whether erasure by number deletes the room recordings the caller was heard in
    /// (`delete`, the default) or keeps them (`keep`); the audit row says which.
    pub erasure_room_recordings: RoomRecordingErasure,
    /// Days a subject request may stay open before it is overdue (GDPR Art. 12(3): a month).
    pub request_due_days: u32,
    /// Days the privacy audit (erasure and correction audits, answered subject requests) is
    /// kept after the request was answered; open requests are never swept.
    pub audit_keep_days: u32,
    /// Days an opt-out stands (0: until the caller withdraws it, the default).
    pub opt_out_keep_days: u32,
    /// Days a record PostgreSQL refused stays in `rejected.jsonl` for an operator to look at.
    pub rejected_keep_days: u32,
    /// Whether each tenant's calls pseudonymise callers under a key of their own (derived
    /// from `key_file`), so one caller of two tenants cannot be linked across them.
    pub tenant_pseudonyms: bool,
    /// Days after a tenant's account closes (`tolk cdr tenant close`) that their records,
    /// recordings and opt-outs are deleted.
    pub account_closed_days: u32,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            enabled: true,
            batch_rows: 1000,
            batch_wait_ms: 100,
            default_retention: "standard".into(),
            key_file: None,
            policies: Vec::new(),
            sweep_interval_secs: 3600,
            erasure_action: RetentionAction::Delete,
            erasure_room_recordings: RoomRecordingErasure::Delete,
            request_due_days: 30,
            audit_keep_days: 3 * 365,
            opt_out_keep_days: 0,
            rejected_keep_days: 30,
            tenant_pseudonyms: true,
            account_closed_days: 30,
        }
    }
}

/// `[[cdr.policies]]`: how long a class of records is kept and what happens then.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicyConfig {
    pub name: String,
    pub keep_days: u32,
    /// `delete` or `anonymise`.
    pub action: RetentionAction,
    /// Whether records of this class may hold the caller's number in clear (else only the
    /// pseudonym and the masked form).
    #[serde(default)]
    pub clear_number: bool,
    #[serde(default)]
    pub description: String,
    /// The tenant whose calls this policy is for: a tenant's policy of a class replaces the
    /// policy of the same name for that tenant's calls (none: every tenant's).
    #[serde(default)]
    pub tenant: Option<String>,
}

impl super::Config {
    /// The retention policies: the configured ones, with the seeded defaults when none is
    /// configured for every tenant (tenants' own policies alone replace nothing).
    pub fn retention_policies(&self) -> Vec<RetentionPolicyConfig> {
        if self.cdr.policies.iter().any(|p| p.tenant.is_none()) {
            return self.cdr.policies.clone();
        }
        let mut all = self.default_policies();
        all.extend(self.cdr.policies.iter().cloned());
        all
    }

    fn default_policies(&self) -> Vec<RetentionPolicyConfig> {
        let p = |name: &str, keep_days, action, clear_number, description: &str| RetentionPolicyConfig {
            name: name.into(),
            keep_days,
            action,
            clear_number,
            description: description.into(),
            tenant: None,
        };
        vec![
            p(
                "standard",
                395,
                RetentionAction::Anonymise,
                false,
                "communications data: 13 months, then anonymised",
            ),
            p(
                "billing",
                3650,
                RetentionAction::Anonymise,
                false,
                "invoiced calls: 10 years, then anonymised",
            ),
            p(
                "identifiable",
                30,
                RetentionAction::Delete,
                true,
                "records that keep the number in clear: deleted after 30 days",
            ),
            p(
                "feedback",
                365,
                RetentionAction::Delete,
                false,
                "feedback scores: 12 months",
            ),
        ]
    }
}
