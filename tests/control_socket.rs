//! The local control socket (issue 17): the CLI reaches a running gateway with no admin
//! token configured, and says so clearly when none runs.

mod common;

use common::{Gateway, ensure_database, http_request};
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

    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(40)).is_some(), "the gateway stops");
    gw.keep_data = false;
    assert!(!socket.exists(), "the socket goes with the gateway");
    for args in [&["rooms", "list"][..], &["dialplan", "reload"][..]] {
        let why = fails(&dir, args);
        assert!(why.contains("no gateway is running"), "{args:?}: {why}");
        assert!(why.contains("control.sock"), "names the socket: {why}");
    }
}
