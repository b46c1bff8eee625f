//! `tolk rooms ...`: live rooms on the running gateway (control socket, else admin API).

use super::RoomsCommand;
use super::remote;
use tolk::config::Config;

pub fn command(cfg: Config, token: Option<String>, command: RoomsCommand) -> anyhow::Result<()> {
    let gateway = remote::reach(&cfg, token)?;
    let base = "/api/v1/rooms";
    let (method, path) = match &command {
        RoomsCommand::Events => return gateway.follow(&format!("{base}/events")),
        RoomsCommand::List => ("GET", String::new()),
        RoomsCommand::Show { room } => ("GET", format!("/{room}")),
        RoomsCommand::Mute { room, call } => ("POST", format!("/{room}/members/{call}/mute")),
        RoomsCommand::Unmute { room, call } => ("POST", format!("/{room}/members/{call}/unmute")),
        RoomsCommand::Deaf { room, call } => ("POST", format!("/{room}/members/{call}/deaf")),
        RoomsCommand::Undeaf { room, call } => ("POST", format!("/{room}/members/{call}/undeaf")),
        RoomsCommand::Eject { room, call } => ("POST", format!("/{room}/members/{call}/eject")),
        RoomsCommand::Lock { room } => ("POST", format!("/{room}/lock")),
        RoomsCommand::Unlock { room } => ("POST", format!("/{room}/unlock")),
        RoomsCommand::Record { room } => ("POST", format!("/{room}/record")),
        RoomsCommand::PauseRecording { room } => ("POST", format!("/{room}/pause-recording")),
        RoomsCommand::ResumeRecording { room } => ("POST", format!("/{room}/resume-recording")),
        RoomsCommand::StopRecording { room } => ("POST", format!("/{room}/stop-recording")),
    };
    let body = gateway.call(method, &format!("{base}{path}"), None)?;
    match command {
        RoomsCommand::List => {
            let rooms = body["rooms"].as_array().cloned().unwrap_or_default();
            if rooms.is_empty() {
                println!("no rooms with members");
            }
            for room in rooms {
                print_room(&room);
            }
        }
        RoomsCommand::Show { .. } => print_room(&body),
        _ => println!("{}", serde_json::to_string(&body)?),
    }
    Ok(())
}

fn print_room(room: &serde_json::Value) {
    let flag = |k: &str, name: &str| {
        if room[k] == true {
            format!(" {name}")
        } else {
            String::new()
        }
    };
    println!(
        "{}  {} members{}{}{}",
        room["name"].as_str().unwrap_or("?"),
        room["members"].as_array().map(|m| m.len()).unwrap_or(0),
        flag("locked", "locked"),
        flag("waiting", "waiting-for-moderator"),
        if room["recording"].is_string() {
            " recording"
        } else {
            ""
        }
    );
    println!("  {:<8} {:<16} {:<11} state", "call", "caller", "role");
    for m in room["members"].as_array().cloned().unwrap_or_default() {
        let states: Vec<&str> = [
            ("muted", "muted"),
            ("deaf", "deaf"),
            ("held", "on-hold"),
            ("talking", "talking"),
        ]
        .iter()
        .filter(|(k, _)| m[*k] == true)
        .map(|(_, n)| *n)
        .collect();
        println!(
            "  {:<8} {:<16} {:<11} {}",
            m["call"],
            m["caller"].as_str().unwrap_or("?"),
            m["role"].as_str().unwrap_or("?"),
            states.join(",")
        );
    }
}
