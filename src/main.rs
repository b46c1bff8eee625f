//! The `tolk` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tolk::config::Config;

#[path = "cli/remote.rs"]
mod remote;
#[path = "cli/rooms.rs"]
mod rooms;

#[derive(Parser)]
#[command(
    name = "tolk",
    version,
    about = "A telephony gateway: SIP trunks, scripted assistants, conference and interpretation rooms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults when no configuration file exists).
    Serve {
        /// Configuration file (default: ./tolk.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective settings.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Call detail records: list, report, export, erase, hold, sweep.
    Cdr {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// Call flows: check them, or run one against a simulated caller (no phone needed).
    Flow {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Conference rooms on the running gateway (through its control socket, else its admin
    /// API): list, mute, eject, lock, record, and follow events.
    Rooms {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Admin API token, for a gateway whose control socket is not at hand (default:
        /// TOLK_API_TOKEN, else the first of admin.tokens); not needed on the gateway's machine.
        #[arg(long, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: RoomsCommand,
    },
    /// The opt-out registry (by pseudonym: numbers are not stored); through the running
    /// gateway when there is one, else on the database directly.
    Optout {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: OptoutCommand,
    },
    /// The dialplan of the running gateway.
    Dialplan {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DialplanCommand,
    },
}

#[derive(Subcommand)]
enum DialplanCommand {
    /// Load the dialplan again (as SIGHUP does) and say what changed or what is wrong; the
    /// plan in force keeps serving when the new one has errors.
    Reload,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum CdrCommand {
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
    /// Everything held about a caller, as JSON (a subject access request).
    Export {
        #[arg(long)]
        number: String,
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
    /// Run the retention sweeper now.
    Sweep,
}

#[derive(Subcommand)]
enum FlowCommand {
    /// Compile and lint flows (unknown functions, typos in verbs); exit 1 on any error.
    Check {
        /// Flow files (`.rhai`), or a dialplan directory to check with its numbers.toml.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a flow against a simulated caller and print each verb and its result.
    Run {
        file: PathBuf,
        /// The number the caller dialled.
        #[arg(long, default_value = "+18005550100")]
        number: String,
        /// The caller's number (shown masked; `anonymous` for a withheld identity).
        #[arg(long, default_value = "+15551234567")]
        caller: String,
        /// Keys the caller presses while the flow collects (`,` = no input this time,
        /// `w` = wait a second).
        #[arg(long, default_value = "")]
        digits: String,
        /// The caller hangs up after this long (`10s`, `500ms`, `2m`).
        #[arg(long)]
        hangup_after: Option<String>,
    },
}

#[derive(Subcommand)]
enum RoomsCommand {
    /// Rooms with members (numbers masked).
    List,
    /// One room.
    Show {
        room: String,
    },
    /// Mute or unmute a member (by call id, from `list`).
    Mute {
        room: String,
        call: u64,
    },
    Unmute {
        room: String,
        call: u64,
    },
    /// Make a member deaf (hears nothing, still heard) or hear again.
    Deaf {
        room: String,
        call: u64,
    },
    Undeaf {
        room: String,
        call: u64,
    },
    /// Take a member out of the room.
    Eject {
        room: String,
        call: u64,
    },
    /// No new participants (moderators may still join) / open again.
    Lock {
        room: String,
    },
    Unlock {
        room: String,
    },
    /// Start, pause, resume or stop recording the room's mix.
    Record {
        room: String,
    },
    PauseRecording {
        room: String,
    },
    ResumeRecording {
        room: String,
    },
    StopRecording {
        room: String,
    },
    /// Print room events as they happen (joins, leaves, talking, recording) until Ctrl-C.
    Events,
}

#[derive(Subcommand)]
enum OptoutCommand {
    /// Register an opt-out: record, retain or contact.
    Add {
        #[arg(long)]
        number: String,
        #[arg(long)]
        scope: String,
        #[arg(long, default_value = "cli")]
        source: String,
    },
    /// Withdraw an opt-out.
    Remove {
        #[arg(long)]
        number: String,
        #[arg(long)]
        scope: String,
    },
    /// The registry (pseudonyms shortened).
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = load(config.as_deref())?;
            println!("configuration OK\n{cfg:#?}");
            Ok(())
        }
        Command::Cdr { config, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            cdr_command(cfg, command)
        }
        Command::Flow { config, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            flow_command(cfg, command)
        }
        Command::Rooms { config, token, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            rooms::command(cfg, token, command)
        }
        Command::Dialplan { config, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            match command {
                DialplanCommand::Reload => {
                    let answer = remote::reach(&cfg, None)?.call("POST", "/api/v1/dialplan/reload", None)?;
                    println!("{}", answer["summary"].as_str().unwrap_or("dialplan reloaded"));
                    Ok(())
                }
            }
        }
        Command::Optout { config, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            optout_command(cfg, command)
        }
        Command::Serve { config } => {
            let cfg = load(config.as_deref())?;
            tracing_subscriber::fmt()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cfg.log.level).context("log.level")?)
                .init();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = tx.send(true);
                });
                tolk::gateway::run(cfg, rx, None).await
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
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
        let key = tolk::cdr::privacy::PseudonymKey::load_or_create(&cfg.key_file())?;
        Ok(Db { pool, key, embedded })
    }

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

fn cdr_command(cfg: Config, command: CdrCommand) -> anyhow::Result<()> {
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
                    limit,
                    after,
                    format,
                } => {
                    let caller_pseudonym = number.as_deref().map(|n| db.pseudonym(n)).transpose()?;
                    let dialled = dialled.map(|d| tolk::number::normalise(&d).unwrap_or(d));
                    let rows = query::list(
                        &db.pool,
                        &query::ListFilter {
                            from,
                            to,
                            caller_pseudonym,
                            dialled,
                            tenant,
                            disposition,
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
                CdrCommand::Export { number } => {
                    let p = db.pseudonym(&number)?;
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&query::export_subject(&db.pool, &p).await?)?
                    );
                }
                CdrCommand::Hold { id, number, release } => {
                    let p = number.as_deref().map(|n| db.pseudonym(n)).transpose()?;
                    let n = tolk::cdr::subject::set_hold(&db.pool, id, p.as_deref(), !release).await?;
                    println!("{} record(s) {}", n, if release { "released" } else { "on hold" });
                }
                CdrCommand::Sweep => {
                    let recordings = cfg.data_dir.join("recordings");
                    let r = tolk::cdr::retention::sweep(&db.pool, 5000, &recordings).await?;
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
            let (sink, wake) = tolk::cdr::writer::CdrSink::new(journal);
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let (target, _) = tolk::cdr::resolve_target(cfg).await?;
            let writer = tolk::cdr::writer::Writer::new(target, &journal_dir, Default::default())
                .with_erasure_stores(tolk::cdr::erasure::ErasureStores::under(&cfg.data_dir));
            let task = tokio::spawn(writer.run(sink.clone(), wake, stop_rx, std::time::Duration::from_secs(5)));
            let compacted = tolk::cdr::writer::compact(&sink, &p, std::time::Duration::from_secs(30)).await;
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
                    let stores = tolk::cdr::erasure::ErasureStores::under(&cfg.data_dir);
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

fn optout_command(cfg: Config, command: OptoutCommand) -> anyhow::Result<()> {
    use tolk::cdr::subject;
    if let Some(gateway) = remote::running(&cfg) {
        return optout_through(&gateway, command);
    }
    runtime()?.block_on(async move {
        let db = Db::open(&cfg).await?;
        let result: anyhow::Result<()> = async {
            match command {
                OptoutCommand::Add { number, scope, source } => {
                    subject::opt_out(&db.pool, &db.pseudonym(&number)?, &scope, &source).await?;
                    println!("opt-out registered ({scope})");
                }
                OptoutCommand::Remove { number, scope } => {
                    if subject::opt_in(&db.pool, &db.pseudonym(&number)?, &scope).await? {
                        println!("opt-out withdrawn ({scope})");
                    } else {
                        anyhow::bail!("no {scope} opt-out for that number");
                    }
                }
                OptoutCommand::List { format } => {
                    let rows = subject::list_opt_outs(&db.pool).await?;
                    print_rows(&rows, &["pseudonym", "scope", "source", "since"], format);
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
        OptoutCommand::Add { number, scope, source } => {
            let body = serde_json::json!({ "number": number, "scope": scope, "source": source }).to_string();
            gateway.call("POST", "/api/v1/optouts", Some(&body))?;
            println!("opt-out registered ({scope})");
        }
        OptoutCommand::Remove { number, scope } => {
            let body = serde_json::json!({ "number": number, "scope": scope }).to_string();
            gateway.call("DELETE", "/api/v1/optouts", Some(&body))?;
            println!("opt-out withdrawn ({scope})");
        }
        OptoutCommand::List { format } => {
            let answer = gateway.call("GET", "/api/v1/optouts", None)?;
            let rows = answer["opt_outs"].as_array().cloned().unwrap_or_default();
            print_rows(&rows, &["pseudonym", "scope", "source", "since"], format);
        }
    }
    Ok(())
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let cfg = Config::load(path).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    tolk::gateway::check_config(&cfg).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    Ok(cfg)
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a duration (10s, 500ms, 2m)"))?;
    if !(0.0..=86_400.0).contains(&(v * scale)) {
        anyhow::bail!("`{text}`: between 0 and 24 hours");
    }
    Ok(std::time::Duration::from_secs_f64(v * scale))
}

fn flow_command(cfg: Config, command: FlowCommand) -> anyhow::Result<()> {
    use tolk::dialplan::Dialplan;
    use tolk::flow::{FlowLibrary, engine::FlowEnd, port::CallInfo, sim};
    let limits = tolk::flow::engine::Limits::from(&cfg.flow);
    match command {
        FlowCommand::Check { files } => {
            let mut failed = false;
            for f in files {
                let result = if f.is_dir() {
                    let classes: Vec<String> = cfg.retention_policies().into_iter().map(|p| p.name).collect();
                    Dialplan::load(&f, limits.clone(), &classes)
                        .map(|d| format!("dialplan with flows {}", d.flows.names().join(", ")))
                } else {
                    FlowLibrary::empty(limits.clone())
                        .compile_file(&f)
                        .map(|_| "ok".to_string())
                };
                match result {
                    Ok(what) => println!("{}: {what}", f.display()),
                    Err(errors) => {
                        failed = true;
                        for e in errors {
                            eprintln!("{e}");
                        }
                    }
                }
            }
            if failed {
                anyhow::bail!("some flows did not pass");
            }
            Ok(())
        }
        FlowCommand::Run {
            file,
            number,
            caller,
            digits,
            hangup_after,
        } => {
            let mut lib = FlowLibrary::empty(limits);
            let mut room_roles = None;
            let ast = lib.compile_file(&file).map_err(|errors| {
                anyhow::anyhow!(
                    "{}",
                    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
                )
            })?;
            lib.insert("main", ast);
            // PINs of rooms.toml beside the flows directory (dialplans/rooms.toml).
            if let Some(dir) = file.parent().and_then(|p| p.parent()) {
                let rooms = tolk::room::settings::load(dir).map_err(|errors| {
                    anyhow::anyhow!(
                        "{}",
                        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
                    )
                })?;
                room_roles = Some(tolk::dialplan::room_roles(tolk::room::settings::table(rooms)));
            }
            let dialled = tolk::number::normalise(&number)
                .ok_or_else(|| anyhow::anyhow!("--number `{number}` is not a phone number"))?;
            let caller_e164 = tolk::number::normalise(&caller);
            let info = CallInfo {
                masked: caller_e164
                    .as_deref()
                    .map(tolk::privacy::mask_number)
                    .unwrap_or_else(|| "anonymous".into()),
                pseudonym: if caller_e164.is_some() {
                    "simulated".into()
                } else {
                    String::new()
                },
                anonymous: caller_e164.is_none(),
                toll_free: tolk::number::classify(&dialled) == tolk::number::DialledKind::TollFree,
                dialled,
                trunk: "simulator".into(),
                tenant: String::new(),
            };
            let catalog = tolk::media_files::prompts::PromptCatalog::load(&cfg.sounds_dir)
                .map(std::sync::Arc::new)
                .map_err(|e| eprintln!("warning: {e}; every prompt takes one second"))
                .ok();
            let hangup = hangup_after.as_deref().map(parse_duration).transpose()?;
            let (mut caller, _) = sim::SimulatedCall::new(&digits, hangup, catalog, true);
            if let Some(roles) = room_roles {
                caller = caller.with_room_roles(roles);
            }
            let (end, _) = sim::simulate(&lib, "main", info, caller);
            match end {
                FlowEnd::Completed => println!("flow completed"),
                FlowEnd::CallerHungUp => println!("flow ended: the caller hung up"),
                FlowEnd::FlowHungUp { cause } => println!("flow hung up (cause {cause})"),
                FlowEnd::Failed(why) => anyhow::bail!("flow failed: {why}"),
            }
            Ok(())
        }
    }
}

/// Commands print results on stdout; warnings go to stderr.
fn quiet_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
