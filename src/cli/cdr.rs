//! `tolk cdr ...` and `tolk optout ...`: call records, the subject request register,
//! corrections and the opt-out registry. Reads and register changes go to the database;
//! what the running gateway owns (the journal an erasure must compact, the registry it
//! checks calls against) goes through it (`remote`).

use super::{Format, remote, runtime};
use tolk::config::Config;

#[derive(clap::Subcommand)]
pub enum CdrCommand {
    /// Records, oldest first; `--format json` prints one JSON object per line.
    List {
        /// From this time (`2026-11-01`, `2026-11-01T12:00Z`).
        #[arg(long)]
        from: Option<String>,
        /// Before this time.
        #[arg(long)]
        to: Option<String>,
        /// Calls from this caller's number.
        #[arg(long)]
        number: Option<String>,
        /// Calls to this dialled number.
        #[arg(long)]
        dialled: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        disposition: Option<String>,
        /// Calls that were in this room.
        #[arg(long)]
        room: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Continue after this cursor (the last record's `cursor`).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Calls, answered, ASR, billable minutes, peak concurrency and quality per group.
    Report {
        /// day, tenant, number, trunk, room, language, or interpretation (listener minutes
        /// per channel, interpreter live minutes per booth).
        #[arg(long, default_value = "day")]
        by: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Everything held about a caller, as JSON: answers their access request (registered
    /// as answered now when none was logged).
    Export {
        #[arg(long)]
        number: String,
        #[arg(long, default_value = "cli")]
        requested_by: String,
    },
    /// Correct a caller's records (GDPR Art. 16): `language` and `tags.<key>` only; the
    /// other fields record what happened on the call. Answers their correction requests.
    Correct {
        #[arg(long)]
        number: String,
        /// One call of theirs only (its record id).
        #[arg(long)]
        id: Option<uuid::Uuid>,
        /// `FIELD=VALUE`, e.g. `--set tags.account=A-17 --set language=fr`.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// A field to clear, e.g. `--clear tags.note`.
        #[arg(long = "clear", value_name = "FIELD")]
        clear: Vec<String>,
        #[arg(long, default_value = "cli")]
        requested_by: String,
    },
    /// The subject request register: open requests by due date (`add` logs one as it
    /// arrives, `close` closes one without carrying it out).
    #[command(args_conflicts_with_subcommands = true)]
    Requests {
        #[command(subcommand)]
        action: Option<RequestsCommand>,
        /// Answered requests too.
        #[arg(long)]
        all: bool,
        /// One caller's requests.
        #[arg(long)]
        number: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Erase a caller from every store: journal, database, recordings.
    Erase {
        #[arg(long)]
        number: String,
        #[arg(long, default_value = "cli")]
        requested_by: String,
    },
    /// Set (or with --release, lift) a legal hold on a record (a call's id, or a recording's:
    /// room recordings too) or on a caller's records.
    Hold {
        #[arg(long)]
        id: Option<uuid::Uuid>,
        #[arg(long)]
        number: Option<String>,
        #[arg(long)]
        release: bool,
    },
    /// Tenants and their accounts: `close` starts the clock after which all their data is
    /// deleted (`cdr.account_closed_days`), `reopen` stops it.
    #[command(args_conflicts_with_subcommands = true)]
    Tenants {
        #[command(subcommand)]
        action: Option<TenantsCommand>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Run the retention sweeper now.
    Sweep,
}

#[derive(clap::Subcommand)]
pub enum RequestsCommand {
    /// Log a request as it arrives; its clock (`cdr.request_due_days`) starts then.
    Add {
        /// access, erasure, correction or objection.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        number: String,
        /// When it was received, if not now (`2026-12-01`, `2026-12-01T09:30Z`).
        #[arg(long)]
        received: Option<String>,
        /// The operator's note (numbers in it are masked).
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long, default_value = "cli")]
        requested_by: String,
    },
    /// Close an open request without carrying it out (refused, withdrawn...).
    Close {
        #[arg(long)]
        id: uuid::Uuid,
        #[arg(long)]
        note: String,
    },
}

#[derive(clap::Subcommand)]
pub enum TenantsCommand {
    /// The tenant's account closed (at `--at`, default now).
    Close {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        at: Option<String>,
    },
    /// The tenant's account is open again: its data is kept by class again.
    Reopen {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(clap::Subcommand)]
pub enum OptoutCommand {
    /// Register an opt-out: record, retain or contact.
    Add {
        #[arg(long)]
        number: String,
        #[arg(long)]
        scope: String,
        #[arg(long, default_value = "cli")]
        source: String,
        /// For one tenant's calls only (default: every call).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Withdraw an opt-out (for one tenant's calls, or by default wherever it was made).
    Remove {
        #[arg(long)]
        number: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The registry (pseudonyms shortened).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// The database, the pseudonym key, and the private cluster if this command started it.
struct Db {
    pool: sqlx::PgPool,
    key: tolk::cdr::privacy::PseudonymKey,
    embedded: Option<tolk::cdr::embedded::EmbeddedPostgres>,
}

impl Db {
    async fn open(cfg: &Config) -> anyhow::Result<Db> {
        let (target, embedded) = tolk::cdr::resolve_target(cfg).await?;
        let pool = tolk::cdr::db::prepare(&target).await?;
        tolk::cdr::retention::sync_policies(&pool, &cfg.retention_policies()).await?;
        let key = tolk::cdr::privacy::pseudonym_key(cfg)?;
        Ok(Db { pool, key, embedded })
    }

    /// Every pseudonym the records give the caller: the gateway's and each tenant's.
    async fn pseudonyms(&self, number: &str) -> anyhow::Result<Vec<String>> {
        let p = self.pseudonym(number)?;
        Ok(tolk::cdr::subject::pseudonyms_of(&self.pool, &self.key, &p).await?)
    }

    /// The gateway's pseudonym of a number: the subject's name in the register and audits.
    fn pseudonym(&self, number: &str) -> anyhow::Result<String> {
        let n = tolk::number::normalise(number).ok_or_else(|| anyhow::anyhow!("`{number}` is not a phone number"))?;
        Ok(self.key.pseudonym(&n))
    }

    async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded.filter(|p| p.started) {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
}

fn print_rows(rows: &[serde_json::Value], columns: &[&str], format: Format) {
    match format {
        Format::Json => {
            for r in rows {
                println!("{r}");
            }
        }
        Format::Csv => print!("{}", tolk::cdr::query::render(rows, columns, true)),
        Format::Table => print!("{}", tolk::cdr::query::render(rows, columns, false)),
    }
}

pub fn cdr_command(cfg: Config, command: CdrCommand) -> anyhow::Result<()> {
    use tolk::cdr::query;
    runtime()?.block_on(async move {
        if let CdrCommand::Erase { number, requested_by } = &command {
            return erase(&cfg, number, requested_by).await;
        }
        let db = Db::open(&cfg).await?;
        let result: anyhow::Result<()> = async {
            match command {
                CdrCommand::List {
                    from,
                    to,
                    number,
                    dialled,
                    tenant,
                    disposition,
                    room,
                    limit,
                    after,
                    format,
                } => {
                    let caller_pseudonyms = match number.as_deref() {
                        Some(n) => Some(db.pseudonyms(n).await?),
                        None => None,
                    };
                    let dialled = dialled.map(|d| tolk::number::normalise(&d).unwrap_or(d));
                    let rows = query::list(
                        &db.pool,
                        &query::ListFilter {
                            from,
                            to,
                            caller_pseudonyms,
                            dialled,
                            tenant,
                            disposition,
                            room,
                            limit,
                            after,
                        },
                    )
                    .await?;
                    print_rows(&rows, query::LIST_COLUMNS, format);
                }
                CdrCommand::Report { by, from, to, format } => {
                    let by = query::ReportBy::parse(&by)?;
                    let rows = query::report(&db.pool, by, from.as_deref(), to.as_deref()).await?;
                    print_rows(&rows, by.columns(), format);
                }
                CdrCommand::Export { number, requested_by } => {
                    let p = db.pseudonym(&number)?;
                    let due = cfg.cdr.request_due_days;
                    let export = tolk::cdr::subject::answer_access(&db.pool, &db.key, &p, &requested_by, due).await?;
                    println!("{}", serde_json::to_string_pretty(&export)?);
                }
                CdrCommand::Correct {
                    number,
                    id,
                    set,
                    clear,
                    requested_by,
                } => {
                    let pairs = set
                        .iter()
                        .map(|s| {
                            s.split_once('=')
                                .map(|(f, v)| (f.to_string(), v.to_string()))
                                .ok_or_else(|| anyhow::anyhow!("`--set {s}`: write FIELD=VALUE"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let c = tolk::cdr::correction::Correction::from_pairs(&pairs, &clear, id, &requested_by)?;
                    let subject = tolk::cdr::erasure::subject_ref(&db.pseudonym(&number)?);
                    let all = db.pseudonyms(&number).await?;
                    let mut conn = db.pool.acquire().await?;
                    let due = cfg.cdr.request_due_days;
                    let report = tolk::cdr::correction::correct(&mut conn, &all, &subject, &c, due).await?;
                    println!("{}", serde_json::to_string(&report)?);
                }
                CdrCommand::Requests {
                    action,
                    all,
                    number,
                    format,
                } => requests_command(&cfg, &db, action, all, number, format).await?,
                CdrCommand::Hold { id, number, release } => {
                    let p = match number.as_deref() {
                        Some(n) => Some(db.pseudonyms(n).await?),
                        None => None,
                    };
                    let n = tolk::cdr::subject::set_hold(&db.pool, id, p.as_deref(), !release).await?;
                    println!("{} record(s) {}", n, if release { "released" } else { "on hold" });
                }
                CdrCommand::Tenants { action, format } => {
                    use tolk::cdr::tenants;
                    let days = cfg.cdr.account_closed_days;
                    match action {
                        None => print_rows(&tenants::list(&db.pool, days).await?, tenants::TENANT_COLUMNS, format),
                        Some(TenantsCommand::Close { tenant, at }) => {
                            println!("{}", tenants::close(&db.pool, &tenant, at.as_deref(), days).await?)
                        }
                        Some(TenantsCommand::Reopen { tenant }) => {
                            if !tenants::reopen(&db.pool, &tenant).await? {
                                anyhow::bail!("tenant `{tenant}` is not closed");
                            }
                            println!("tenant `{tenant}` reopened");
                        }
                    }
                }
                CdrCommand::Sweep => {
                    let scope = tolk::cdr::retention::SweepScope::of(&cfg);
                    let r = tolk::cdr::retention::sweep(&db.pool, 5000, &scope).await?;
                    println!("{}", serde_json::to_string(&r)?);
                }
                CdrCommand::Erase { .. } => unreachable!("handled above"),
            }
            Ok(())
        }
        .await;
        db.close().await;
        result
    })
}

/// `tolk cdr requests ...`: the register.
async fn requests_command(
    cfg: &Config,
    db: &Db,
    action: Option<RequestsCommand>,
    all: bool,
    number: Option<String>,
    format: Format,
) -> anyhow::Result<()> {
    use tolk::cdr::erasure::subject_ref;
    use tolk::cdr::requests;
    let mut conn = db.pool.acquire().await?;
    match action {
        None => {
            let subject = number
                .as_deref()
                .map(|n| db.pseudonym(n))
                .transpose()?
                .map(|p| subject_ref(&p));
            let rows = requests::list(&mut conn, all, subject.as_deref()).await?;
            print_rows(&rows, requests::REQUEST_COLUMNS, format);
        }
        Some(RequestsCommand::Add {
            kind,
            number,
            received,
            note,
            requested_by,
        }) => {
            let subject = subject_ref(&db.pseudonym(&number)?);
            let row = requests::log(
                &mut conn,
                &requests::NewRequest {
                    kind: requests::RequestKind::parse(&kind)?,
                    subject_ref: &subject,
                    received_at: received.as_deref(),
                    received_micros: None,
                    requested_by: &requested_by,
                    note: &note,
                    due_days: cfg.cdr.request_due_days,
                },
            )
            .await?;
            println!("{row}");
        }
        Some(RequestsCommand::Close { id, note }) => {
            if !requests::close(&mut conn, id, &note).await? {
                anyhow::bail!("no open request {id}");
            }
            println!("request {id} closed");
        }
    }
    Ok(())
}

/// Erasure needs the journal: through the running gateway when it holds the journal,
/// else here (drain the journal into the database, compact it, erase).
async fn erase(cfg: &Config, number: &str, requested_by: &str) -> anyhow::Result<()> {
    use tolk::cdr::journal::{Journal, JournalError};
    let journal_dir = cfg.data_dir.join("cdr");
    match Journal::open(&journal_dir) {
        // The gateway holds the journal: it erases (control socket, else admin API).
        Err(JournalError::Locked(_)) => {
            let body = serde_json::json!({ "number": number, "requested_by": requested_by }).to_string();
            let report = remote::reach(cfg, None)
                .map_err(|e| {
                    anyhow::anyhow!("the CDR journal is locked by a running gateway, which must do the erasure: {e}")
                })?
                .call("POST", "/api/v1/erasures", Some(&body))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok((journal, _)) => {
            let db = Db::open(cfg).await?;
            let p = db.pseudonym(number)?;
            let all = db.pseudonyms(number).await?;
            let (sink, wake) = tolk::cdr::writer::CdrSink::new(journal);
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let (target, _) = tolk::cdr::resolve_target(cfg).await?;
            let writer = tolk::cdr::writer::Writer::new(target, &journal_dir, Default::default())
                .with_erasure_stores(tolk::cdr::erasure::ErasureStores::under(&cfg.data_dir, db.key.clone()));
            let task = tokio::spawn(writer.run(sink.clone(), wake, stop_rx, std::time::Duration::from_secs(5)));
            let compacted = tolk::cdr::writer::compact(&sink, &all, std::time::Duration::from_secs(30)).await;
            let _ = stop.send(true);
            let _ = task.await;
            let result = match compacted {
                Ok(spooled) => {
                    let request = tolk::cdr::erasure::Erasure {
                        pseudonym: &p,
                        policy: tolk::cdr::erasure::ErasurePolicy::of(&cfg.cdr),
                        requested_by,
                        requested_at: None,
                        spool_entries: spooled,
                    };
                    let stores = tolk::cdr::erasure::ErasureStores::under(&cfg.data_dir, db.key.clone());
                    let r = tolk::cdr::erasure::erase_with(&db.pool, &request, &stores).await?;
                    println!("{}", serde_json::to_string(&r)?);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
            db.close().await;
            result
        }
    }
}

pub fn optout_command(cfg: Config, command: OptoutCommand) -> anyhow::Result<()> {
    use tolk::cdr::subject;
    if let Some(gateway) = remote::running(&cfg) {
        return optout_through(&gateway, command);
    }
    runtime()?.block_on(async move {
        let db = Db::open(&cfg).await?;
        let result: anyhow::Result<()> = async {
            match command {
                OptoutCommand::Add {
                    number,
                    scope,
                    source,
                    tenant,
                } => {
                    let p = db.pseudonym(&number)?;
                    let (tenant, due) = (tenant.as_deref(), cfg.cdr.request_due_days);
                    subject::opt_out_on_request(&db.pool, &db.key, &p, tenant, &scope, &source, due).await?;
                    println!("opt-out registered ({scope})");
                }
                OptoutCommand::Remove { number, scope, tenant } => {
                    let p = db.pseudonym(&number)?;
                    let all = subject::opt_in_pseudonyms(&db.pool, &db.key, &p, tenant.as_deref()).await?;
                    if subject::opt_in(&db.pool, &all, &scope).await? {
                        println!("opt-out withdrawn ({scope})");
                    } else {
                        anyhow::bail!("no {scope} opt-out for that number");
                    }
                }
                OptoutCommand::List { format } => {
                    let rows = subject::list_opt_outs(&db.pool).await?;
                    print_rows(&rows, tolk::cdr::subject::OPT_OUT_COLUMNS, format);
                }
            }
            Ok(())
        }
        .await;
        db.close().await;
        result
    })
}

/// `tolk optout ...` through the running gateway, which owns the registry it checks calls
/// against.
fn optout_through(gateway: &remote::Reach, command: OptoutCommand) -> anyhow::Result<()> {
    match command {
        OptoutCommand::Add {
            number,
            scope,
            source,
            tenant,
        } => {
            let body =
                serde_json::json!({ "number": number, "scope": scope, "source": source, "tenant": tenant }).to_string();
            gateway.call("POST", "/api/v1/optouts", Some(&body))?;
            println!("opt-out registered ({scope})");
        }
        OptoutCommand::Remove { number, scope, tenant } => {
            let body = serde_json::json!({ "number": number, "scope": scope, "tenant": tenant }).to_string();
            gateway.call("DELETE", "/api/v1/optouts", Some(&body))?;
            println!("opt-out withdrawn ({scope})");
        }
        OptoutCommand::List { format } => {
            let answer = gateway.call("GET", "/api/v1/optouts", None)?;
            let rows = answer["opt_outs"].as_array().cloned().unwrap_or_default();
            print_rows(&rows, tolk::cdr::subject::OPT_OUT_COLUMNS, format);
        }
    }
    Ok(())
}
