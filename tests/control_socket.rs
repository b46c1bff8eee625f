//! The local control socket (issue 17): the CLI reaches a running gateway with no admin
//! token configured, and says so clearly when none runs.

mod common;

use common::{Gateway, Uac, ensure_database, http_request, sdp_offer};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn tolk(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(args)
        .current_dir(data_dir)
        .env("TOLK_DATA_DIR", data_dir)
        .env("TOLK_DATABASE_URL", ensure_database("tolk_it"))
        .env_remove("TOLK_API_TOKEN")
        .output()
        .expect("run tolk")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = tolk(data_dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tolk {args:?} failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(data_dir: &Path, args: &[&str]) -> String {
    let out = tolk(data_dir, args);
    assert!(!out.status.success(), "tolk {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_reaches_a_running_gateway_without_tokens_and_says_when_none_runs() {
    let mut gw = Gateway::start(&[]);
    let dir = gw.data_dir.clone();
    let socket = dir.join("control.sock");
    let mode = std::fs::metadata(&socket).expect("control socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner only");

    // No admin.tokens: the TCP API stays shut, the socket serves the owner.
    let (status, _) = http_request(gw.admin, "GET", "/api/v1/rooms", None, "");
    assert_eq!(status, 403);
    assert!(ok(&dir, &["rooms", "list"]).contains("no rooms with members"));
    let missing = fails(&dir, &["rooms", "show", "no-such-room"]);
    assert!(missing.contains("404") && missing.contains("no such room"), "{missing}");
    assert!(!ok(&dir, &["dialplan", "reload"]).trim().is_empty());

    // Opt-outs go through the gateway, which owns the registry calls are checked against.
    let number = "+14155550987";
    ok(&dir, &["optout", "add", "--number", number, "--scope", "record"]);
    let listed = ok(&dir, &["optout", "list", "--format", "json"]);
    assert!(listed.contains("\"record\""), "{listed}");
    assert!(
        !listed.contains("4155550987"),
        "the registry holds pseudonyms only: {listed}"
    );
    ok(&dir, &["optout", "remove", "--number", number, "--scope", "record"]);
    let again = fails(&dir, &["optout", "remove", "--number", number, "--scope", "record"]);
    assert!(again.contains("no such opt-out"), "{again}");

    // Erasure while the gateway holds the CDR journal: done by the gateway.
    let report = ok(
        &dir,
        &["cdr", "erase", "--number", number, "--requested-by", "ticket 17"],
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).expect("erasure report");
    assert!(report["request_id"].is_string(), "{report}");
    assert_eq!(report["calls"], 0, "{report}");

    // Live calls: an echo call in progress is listed (masked) and an operator hangs it up.
    assert!(ok(&dir, &["calls", "list"]).contains("no calls in progress"));
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::from(gw.sip, "+15550100300", "+14155550123");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let listed = ok(&dir, &["calls", "list", "--format", "json"]);
    let calls: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(calls.len(), 1, "{listed}");
    let call = &calls[0];
    assert_eq!(
        (&call["caller"], &call["state"], &call["codec"], &call["flow"]),
        (
            &serde_json::json!("+1415555****"),
            &serde_json::json!("answered"),
            &serde_json::json!("PCMU"),
            &serde_json::json!("echo")
        ),
        "{call}"
    );
    assert!(call["step"].is_string() && call["record"].is_string(), "{call}");
    assert!(!listed.contains("4155550123"), "never the number: {listed}");
    let id = call["call"].as_u64().unwrap().to_string();
    assert!(ok(&dir, &["calls", "hangup", &id]).contains("hung up"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let bye = loop {
        match uac.recv(Duration::from_millis(500)) {
            Some(m) if m.starts_with("BYE ") => break Some(m),
            Some(_) => {}
            None if std::time::Instant::now() > deadline => break None,
            None => {}
        }
    };
    let bye = bye.expect("the operator's hang-up sends BYE");
    uac.respond_ok(&bye);
    let gone = fails(&dir, &["calls", "hangup", &id]);
    assert!(gone.contains("404") && gone.contains("no such call"), "{gone}");
    assert!(ok(&dir, &["calls", "list"]).contains("no calls in progress"));

    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(40)).is_some(), "the gateway stops");
    gw.keep_data = false;
    assert!(!socket.exists(), "the socket goes with the gateway");
    for args in [
        &["rooms", "list"][..],
        &["dialplan", "reload"][..],
        &["calls", "list"][..],
    ] {
        let why = fails(&dir, args);
        assert!(why.contains("no gateway is running"), "{args:?}: {why}");
        assert!(why.contains("control.sock"), "names the socket: {why}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_commands_themselves() {
    let dir = common::unique_dir("completions");
    std::fs::create_dir_all(&dir).unwrap();
    let bash = ok(&dir, &["completions", "bash"]);
    let script = dir.join("tolk.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().expect("bash");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Loaded, it completes the subcommands.
    let probe = format!(
        "source {}; COMP_WORDS=(tolk ca); COMP_CWORD=1; _tolk tolk ca tolk; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").arg("-c").arg(&probe).output().expect("bash");
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        words.lines().any(|w| w == "calls"),
        "bash completes `tolk ca` to calls: {words:?}"
    );
    for shell in ["zsh", "fish"] {
        assert!(ok(&dir, &["completions", shell]).contains("calls"), "{shell}");
    }
    let man = ok(&dir, &["man"]).replace("\\-", "-"); // roff escapes hyphens
    assert!(
        man.starts_with(".ie") || man.contains(".TH tolk"),
        "roff: {}",
        &man[..man.len().min(200)]
    );
    for command in [
        "serve",
        "check-config",
        "cdr",
        "calls",
        "rooms",
        "optout",
        "dialplan",
        "flow",
    ] {
        assert!(man.contains(command), "the man page names `{command}`");
    }
    assert!(fails(&dir, &["completions", "tcsh"]).contains("invalid value"));
    let _ = std::fs::remove_dir_all(&dir);
}
