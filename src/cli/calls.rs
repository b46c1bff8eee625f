//! `tolk calls ...`: the calls in progress on the running gateway (control socket, else
//! admin API), and an operator's hang-up.

use super::remote;
use super::{CallsCommand, Format};
use tolk::config::Config;

/// The columns of `tolk calls list`, in order.
const COLUMNS: &[&str] = &[
    "call", "caller", "dialled", "tenant", "flow", "state", "step", "room", "role", "codec", "seconds",
];

pub fn command(cfg: Config, token: Option<String>, command: CallsCommand) -> anyhow::Result<()> {
    let gateway = remote::reach(&cfg, token)
        .map_err(|e| anyhow::anyhow!("{e}\n(no gateway answers: no call is in progress here)"))?;
    match command {
        CallsCommand::List { format } => {
            let body = gateway.call("GET", "/api/v1/calls", None)?;
            let calls = body["calls"].as_array().cloned().unwrap_or_default();
            match format {
                Format::Json => calls.iter().for_each(|c| println!("{c}")),
                Format::Csv => print!("{}", tolk::cdr::query::render(&calls, COLUMNS, true)),
                Format::Table if calls.is_empty() => println!("no calls in progress"),
                Format::Table => print!("{}", tolk::cdr::query::render(&calls, COLUMNS, false)),
            }
        }
        CallsCommand::Hangup { call } => {
            gateway.call("POST", &format!("/api/v1/calls/{call}/hangup"), None)?;
            println!("call {call} hung up");
        }
    }
    Ok(())
}
