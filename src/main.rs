//! The `tolk` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tolk::config::Config;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let cfg = load(config.as_deref())?;
            println!("configuration OK\n{cfg:#?}");
            Ok(())
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

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("configuration error: {e}"))
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
