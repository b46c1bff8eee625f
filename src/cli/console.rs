//! `tolk console url`: a one-time sign-in link to the running gateway's web console,
//! asked for through its control socket (or the admin API with a token).

use super::ConsoleCommand;
use super::remote;
use tolk::config::Config;

pub fn command(cfg: Config, token: Option<String>, command: ConsoleCommand) -> anyhow::Result<()> {
    let gateway = remote::reach(&cfg, token)
        .map_err(|e| anyhow::anyhow!("{e}\n(the console is served by the running gateway)"))?;
    match command {
        ConsoleCommand::Url { next } => {
            let body = serde_json::json!({ "next": next.unwrap_or_default() }).to_string();
            let answer = gateway.call("POST", "/api/v1/console/links", Some(&body))?;
            let url = answer["url"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the gateway's answer has no url: {answer}"))?;
            println!("{url}");
            eprintln!(
                "(opens the console once, within {} s; the browser then keeps a session cookie)",
                answer["expires_in_seconds"].as_u64().unwrap_or(300)
            );
        }
    }
    Ok(())
}
