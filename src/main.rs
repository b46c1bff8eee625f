//! The `tolk` command line.

use anyhow::Context;
use cdr::{CdrCommand, OptoutCommand, cdr_command, optout_command};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tolk::config::Config;

#[path = "cli/calls.rs"]
mod calls;
#[path = "cli/cdr.rs"]
mod cdr;
#[path = "cli/console.rs"]
mod console;
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
    /// Calls in progress on the running gateway (through its control socket, else its admin
    /// API): list them, hang one up.
    Calls {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Admin API token, for a gateway whose control socket is not at hand.
        #[arg(long, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// The running gateway's web console (`/console/` on the admin listener).
    Console {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Admin API token, for a gateway whose control socket is not at hand.
        #[arg(long, global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// The opt-out registry (by pseudonym: numbers are not stored); through the running
    /// gateway when there is one, else on the database directly.
    Optout {
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: OptoutCommand,
    },
    /// Shell completions for tolk (`tolk completions bash > /etc/bash_completion.d/tolk`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page, as roff (`tolk man | man -l -`; or into man1/tolk.1).
    Man,
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
enum CallsCommand {
    /// The calls in progress, oldest first (callers masked): state, what the flow does,
    /// room, codec, seconds so far.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// End a call (by its `call` id from `list`): BYE when answered, 480 before.
    Hangup { call: u64 },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Print a one-time sign-in link (good for 5 minutes, once): it opens a session in the
    /// browser (an HttpOnly, SameSite cookie) and goes to the page.
    Url {
        /// The page to open: rooms, calls, records, reports or privacy (default: the
        /// dashboard).
        #[arg(long)]
        next: Option<String>,
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
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "tolk", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Calls { config, token, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            calls::command(cfg, token, command)
        }
        Command::Console { config, token, command } => {
            let cfg = load(config.as_deref())?;
            quiet_logs();
            console::command(cfg, token, command)
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
