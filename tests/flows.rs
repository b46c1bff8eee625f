//! Call flows without a phone: the shipped flows through the simulator with their expected
//! transcripts, the sandbox's limits, the runner's isolation, and the dialplan.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tolk::dialplan::{Dialplan, Target};
use tolk::flow::FlowLibrary;
use tolk::flow::engine::{FlowEnd, Limits};
use tolk::flow::port::{CallInfo, Note};
use tolk::flow::runner::Runner;
use tolk::flow::sim::{SimReport, SimulatedCall, simulate};
use tolk::media_files::prompts::PromptCatalog;
use tolk::number::DialledKind;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> FlowLibrary {
    FlowLibrary::compile_dir(&root().join("dialplans/flows"), Limits::default()).expect("shipped flows compile")
}

fn catalog() -> Option<Arc<PromptCatalog>> {
    Some(Arc::new(
        PromptCatalog::load(&root().join("sounds")).expect("sounds catalog"),
    ))
}

fn info() -> CallInfo {
    CallInfo {
        masked: "+1555123****".into(),
        pseudonym: "ab12".into(),
        dialled: "+18005550100".into(),
        toll_free: true,
        ..Default::default()
    }
}

/// The transcript without timestamps.
fn steps(r: &SimReport) -> Vec<String> {
    r.transcript
        .iter()
        .map(|l| l.split_once("] ").map(|(_, s)| s.to_string()).unwrap_or_default())
        .collect()
}

fn run(lib: &FlowLibrary, flow: &str, keys: &str, hangup_after: Option<u64>) -> (FlowEnd, SimReport) {
    let (caller, _) = SimulatedCall::new(keys, hangup_after.map(Duration::from_secs), catalog(), false);
    simulate(lib, flow, info(), caller.with_room_roles(shipped_room_roles()))
}

/// `room_role` as the shipped rooms.toml answers it.
fn shipped_room_roles() -> tolk::flow::sim::RoomRoles {
    let rooms = tolk::room::settings::load(&root().join("dialplans")).expect("shipped rooms.toml");
    tolk::dialplan::room_roles(tolk::room::settings::table(rooms))
}

/// Prompt lines carry their length (`play x (2.9 s)`): compare names only.
fn names(steps: &[String]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s.find(" (") {
            Some(i) if s.starts_with("play ") || s.starts_with("tone ") => s[..i].to_string(),
            _ => s.clone(),
        })
        .collect()
}

#[test]
fn conference_with_the_room_pin_joins_as_participant() {
    let lib = shipped();
    let (end, r) = run(&lib, "conference", "1234#", Some(120));
    assert_eq!(end, FlowEnd::CallerHungUp);
    assert_eq!(
        names(&steps(&r)),
        vec![
            "answer",
            "play conf-enter-pin",
            "collect -> \"1234\", ended by #",
            "tag role = participant",
            "play conf-joined",
            "join_conference demo as participant",
            "caller hangs up",
        ]
    );
    assert_eq!(r.rooms, vec!["demo"]);
    assert!(r.answered);
}

#[test]
fn conference_wrong_pin_then_moderator_pin() {
    let lib = shipped();
    let (end, r) = run(&lib, "conference", "1111#9999#", Some(120));
    assert_eq!(end, FlowEnd::CallerHungUp);
    assert_eq!(
        names(&steps(&r)),
        vec![
            "answer",
            "play conf-enter-pin",
            "collect -> \"1111\", ended by #",
            "play conf-invalid-pin",
            "play conf-enter-pin",
            "collect -> \"9999\", ended by #",
            "tag role = moderator",
            "play conf-joined",
            "join_conference demo as moderator",
            "caller hangs up",
        ]
    );
}

#[test]
fn conference_three_wrong_pins_say_goodbye_and_hang_up() {
    let lib = shipped();
    // The second try gets no input at all (",": the caller stays silent until the timeout).
    let (end, r) = run(&lib, "conference", "1#,5555#", None);
    assert_eq!(end, FlowEnd::FlowHungUp { cause: 16 });
    assert_eq!(
        names(&steps(&r)),
        vec![
            "answer",
            "play conf-enter-pin",
            "collect -> \"1\", ended by #",
            "play conf-invalid-pin",
            "play conf-enter-pin",
            "collect -> \"\", timed out",
            "play conf-enter-pin",
            "collect -> \"5555\", ended by #",
            "tag conference = no valid PIN",
            "play goodbye",
            "hangup (cause 16)",
        ]
    );
    assert!(r.rooms.is_empty());
    // The silent try waited the flow's 8 s timeout in virtual time.
    assert!(r.elapsed > Duration::from_secs(8), "{:?}", r.elapsed);
}

#[test]
fn assistant_nine_opts_out_of_recording() {
    let lib = shipped();
    let (end, r) = run(&lib, "assistant", "9", None);
    assert_eq!(end, FlowEnd::Completed);
    let s = names(&steps(&r));
    assert_eq!(
        &s[..5],
        &[
            "answer",
            "play assistant-menu",
            "collect -> \"9\"",
            "opt_out record",
            "play optout-confirmed",
        ]
    );
    // Back to the menu; no further input: goodbye and the call ends.
    assert_eq!(s.last().map(String::as_str), Some("hangup (cause 16)"));
    assert!(s.contains(&"play goodbye".to_string()));
    assert_eq!(r.notes, vec![Note::OptOut("record".into())]);
}

#[test]
fn assistant_one_goes_to_the_conference_and_zero_to_the_operator() {
    let lib = shipped();
    let (_, r) = run(&lib, "assistant", "1 1234#", Some(100));
    let s = names(&steps(&r));
    assert!(s.contains(&"join_conference demo as participant".to_string()), "{s:?}");
    let (end, r) = run(&lib, "assistant", "0", None);
    assert_eq!(end, FlowEnd::FlowHungUp { cause: 16 });
    let s = names(&steps(&r));
    assert!(s.contains(&"transfer to +15550100000".to_string()), "{s:?}");
}

#[test]
fn echo_flow_beeps_then_echoes() {
    let lib = shipped();
    let (end, r) = run(&lib, "echo", "", Some(30));
    assert_eq!(end, FlowEnd::CallerHungUp);
    assert_eq!(
        names(&steps(&r)),
        vec!["answer", "tone beep", "echo up to 3600 s", "caller hangs up"]
    );
}

fn lib_with(script: &str, limits: Limits) -> Result<FlowLibrary, Vec<tolk::file_text::FileError>> {
    let dir = std::env::temp_dir().join(format!("tolk-flow-{}-{}", std::process::id(), fastrand_id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.rhai"), script).unwrap();
    let r = FlowLibrary::compile_dir(&dir, limits);
    std::fs::remove_dir_all(&dir).ok();
    r
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn failed_with(end: &FlowEnd, needle: &str) -> bool {
    matches!(end, FlowEnd::Failed(why) if why.to_lowercase().contains(needle))
}

/// A failed flow records why, plays the apology and hangs up with cause 41.
fn assert_apology(r: &SimReport) {
    let s = names(&steps(r));
    assert!(matches!(r.notes.last(), Some(Note::FlowError(_))), "{s:?}");
    assert_eq!(
        &s[s.len() - 2..],
        &["play sorry".to_string(), "hangup (cause 41)".to_string()]
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_step_budget() {
    let limits = Limits {
        step_budget: Duration::from_millis(200),
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let lib = lib_with("answer(); let n = 0; loop { n += 1; }", limits).unwrap();
    let started = Instant::now();
    let (end, r) = run(&lib, "f", "", None);
    assert!(failed_with(&end, "budget"), "{end:?}");
    assert_apology(&r);
    // Stopped by the budget, not by anything else (generous bound for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_operations_limit() {
    let limits = Limits {
        step_budget: Duration::from_secs(3600),
        max_operations: 100_000,
        ..Limits::default()
    };
    let lib = lib_with("let n = 0; while true { n += 1; }", limits).unwrap();
    let (end, r) = run(&lib, "f", "", None);
    assert!(failed_with(&end, "operations"), "{end:?}");
    assert_apology(&r);
}

#[test]
fn deep_recursion_a_huge_string_and_a_huge_array_are_stopped() {
    let lib = lib_with("fn f(n) { f(n + 1) } f(0);", Limits::default()).unwrap();
    let (end, _) = run(&lib, "f", "", None);
    assert!(failed_with(&end, "stack overflow"), "{end:?}");

    let lib = lib_with("let s = \"x\"; loop { s += s; }", Limits::default()).unwrap();
    let (end, _) = run(&lib, "f", "", None);
    assert!(failed_with(&end, "too large"), "{end:?}");

    let lib = lib_with("let a = []; loop { a.push(1); }", Limits::default()).unwrap();
    let (end, _) = run(&lib, "f", "", None);
    assert!(failed_with(&end, "too large"), "{end:?}");
}

/// The worst a script can do to the stack: recursion to the call-depth limit, every level
/// deep inside a nested expression. It must end in an error, not a crashed gateway.
fn deepest_script() -> String {
    let nested = (0..11).fold("f(n - 1)".to_string(), |acc, _| format!("1 + ({acc})"));
    format!("fn f(n) {{ if n > 0 {{ {nested} }} else {{ 0 }} }} f(1000);")
}

#[test]
fn deep_recursion_fits_the_flow_threads_stack() {
    // The runner's threads are small; the call depth limit must trip before the stack does.
    let runner = Runner::new(4, tolk::flow::runner::DEFAULT_STACK_BYTES);
    let lib = Arc::new(lib_with(&deepest_script(), Limits::default()).unwrap());
    let (call, _report) = SimulatedCall::new("", None, None, false);
    let end = run_on(&runner, lib, Box::new(call))
        .recv_timeout(Duration::from_secs(60))
        .expect("the flow thread finished");
    assert!(failed_with(&end, "stack overflow"), "{end:?}");
}

#[test]
fn eval_imports_and_files_are_refused_at_compile_time() {
    for (script, needle) in [
        ("eval(\"answer()\");", "eval"),
        ("import \"x\" as x;", "import"),
        ("let t = open_file(\"/etc/passwd\");", "open_file"),
        ("plya(\"goodbye\");", "did you mean `play`"),
    ] {
        let errors = match lib_with(script, Limits::default()) {
            Ok(_) => panic!("{script} compiled"),
            Err(e) => e,
        };
        let text = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
        assert!(text.contains(needle), "{script}: {text}");
        assert!(text.contains("f.rhai:1"), "{text}");
    }
}

#[test]
fn a_hangup_cannot_be_caught() {
    // The caller hangs up during the first prompt; the script tries to carry on.
    let script = r#"
        fn inner() { play("goodbye"); }
        answer();
        try { inner(); } catch (e) { log("caught"); }
        log("still running");
    "#;
    let lib = lib_with(script, Limits::default()).unwrap();
    let (end, r) = run(&lib, "f", "", Some(0));
    assert_eq!(end, FlowEnd::CallerHungUp);
    assert!(
        !steps(&r)
            .iter()
            .any(|s| s.contains("caught") || s.contains("still running")),
        "{:?}",
        r.transcript
    );
}

#[test]
fn gather_accepts_a_validation_function_and_menu_an_array() {
    let script = r#"
        answer();
        let code = gather(#{ digits: 6, tries: 2, valid: |d| d.len() == 4 });
        log(`code ${code}`);
        let key = menu(#{ options: ["1", "2"] });
        log(`key ${key}`);
    "#;
    let lib = lib_with(script, Limits::default()).unwrap();
    // The first entry is too long for the validator, the second passes; then 7 (not an
    // option), then 2.
    let (end, r) = run(&lib, "f", "12345#4321#72", None);
    assert_eq!(end, FlowEnd::Completed);
    let logs: Vec<String> = steps(&r).into_iter().filter(|s| s.starts_with("log: ")).collect();
    assert_eq!(logs, vec!["log: code 4321", "log: key 2"]);
}

#[test]
fn http_reaches_allowed_endpoints_only() {
    use std::io::{Read, Write};
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", server.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&req).contains("\"pin\"") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = "{\"ok\":true,\"name\":\"Ada\"}";
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    let script = format!(
        r#"
        let r = http(#{{ url: "{base}check", method: "POST", json: #{{ pin: "1234" }} }});
        log(`status ${{r.status}} ok ${{r.json.ok}} name ${{r.json.name}}`);
        try {{ http(#{{ url: "http://127.0.0.1:1/elsewhere" }}); }} catch (e) {{ log(`refused: ${{e}}`); }}
    "#
    );
    let limits = Limits {
        http_allow: vec![base.clone()],
        ..Limits::default()
    };
    let lib = lib_with(&script, limits).unwrap();
    let (end, r) = run(&lib, "f", "", None);
    assert_eq!(end, FlowEnd::Completed, "{:?}", r.transcript);
    let request = seen.join().unwrap();
    assert!(request.starts_with("POST /check HTTP/1.1"), "{request}");
    assert!(request.contains("{\"pin\":\"1234\"}"), "{request}");
    let logs: Vec<String> = steps(&r).into_iter().filter(|s| s.starts_with("log: ")).collect();
    assert!(
        logs.contains(&"log: status 200 ok true name Ada".to_string()),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("refused") && l.contains("allow-list")),
        "{logs:?}"
    );
}

#[test]
fn a_caller_who_opted_out_of_recording_is_not_recorded() {
    let script = r#"
        answer();
        opt_out("record");
        try { record(#{ max_secs: 5 }); log("recorded"); } catch (e) { log(`${e}`); }
    "#;
    let lib = lib_with(script, Limits::default()).unwrap();
    let (end, r) = run(&lib, "f", "", None);
    assert_eq!(end, FlowEnd::Completed);
    let logs: Vec<String> = steps(&r).into_iter().filter(|s| s.starts_with("log: ")).collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("opted out of recording"), "{logs:?}");
}

#[test]
fn bad_verb_arguments_are_catchable_errors_with_a_clear_message() {
    let script = r#"
        try { gather(#{ digits: 0 }); } catch (e) { log(`1: ${e}`); }
        try { menu(#{ options: ["12"] }); } catch (e) { log(`2: ${e}`); }
        try { gather(#{ colour: "red" }); } catch (e) { log(`3: ${e}`); }
        try { play("no-such-prompt"); } catch (e) { log(`4: ${e}`); }
        try { opt_out("everything"); } catch (e) { log(`5: ${e}`); }
    "#;
    let lib = lib_with(script, Limits::default()).unwrap();
    let (end, r) = run(&lib, "f", "", None);
    assert_eq!(end, FlowEnd::Completed);
    let logs: Vec<String> = steps(&r).into_iter().filter(|s| s.starts_with("log: ")).collect();
    assert_eq!(logs.len(), 5, "{logs:?}");
    assert!(
        logs[0].contains("`digits` must be a whole number from 1 to 64"),
        "{logs:?}"
    );
    assert!(logs[1].contains("single key"), "{logs:?}");
    assert!(logs[2].contains("unknown option `colour`"), "{logs:?}");
    assert!(logs[3].contains("no-such-prompt"), "{logs:?}");
    assert!(logs[4].contains("record, retain or contact"), "{logs:?}");
}

#[test]
fn a_runaway_flow_does_not_disturb_other_calls() {
    let limits = Limits {
        step_budget: Duration::from_millis(300),
        ..Limits::default()
    };
    let runaway = Arc::new(lib_with("answer(); loop { }", limits).unwrap());
    let good = Arc::new(shipped());
    let runner = Runner::new(8, 512 * 1024);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reports = Vec::new();
    for i in 0..6 {
        let (lib, flow, keys) = if i % 2 == 0 {
            (runaway.clone(), "f", "")
        } else {
            (good.clone(), "conference", "1234#")
        };
        let (call, report) = SimulatedCall::new(keys, Some(Duration::from_secs(60)), catalog(), false);
        let call = call.with_room_roles(shipped_room_roles());
        reports.push((flow, report));
        let tx = tx.clone();
        runner
            .start(
                lib,
                flow.into(),
                Box::new(call),
                info(),
                Arc::new(AtomicBool::new(false)),
                move |end| {
                    let _ = tx.send((i, end));
                },
            )
            .unwrap();
    }
    let mut ends = Vec::new();
    for _ in 0..6 {
        ends.push(rx.recv_timeout(Duration::from_secs(60)).expect("every flow ends"));
    }
    ends.sort_by_key(|(i, _)| *i);
    for (i, end) in ends {
        if i % 2 == 0 {
            assert!(failed_with(&end, "budget"), "{i}: {end:?}");
        } else {
            assert_eq!(end, FlowEnd::CallerHungUp, "{i}");
            let r = reports[i].1.lock().unwrap();
            assert!(r.rooms == vec!["demo".to_string()], "{:?}", r.transcript);
        }
    }
    assert_eq!(runner.active(), 0);
}

#[test]
fn the_runner_refuses_beyond_its_cap() {
    let runner = Runner::new(2, 256 * 1024);
    let lib = Arc::new(lib_with("answer(); echo(10);", Limits::default()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let mut gates = Vec::new();
    for _ in 0..2 {
        // Each call blocks in its port until released, holding its slot.
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        gates.push(gate_tx);
        let tx = tx.clone();
        runner
            .start(
                lib.clone(),
                "f".into(),
                Box::new(Blocking(gate_rx)),
                info(),
                Arc::new(AtomicBool::new(false)),
                move |e| {
                    let _ = tx.send(e);
                },
            )
            .unwrap();
    }
    let (call, _) = SimulatedCall::new("", None, None, false);
    let refused = runner.start(
        lib.clone(),
        "f".into(),
        Box::new(call),
        info(),
        Arc::new(AtomicBool::new(false)),
        |_| {},
    );
    assert!(refused.is_err());
    drop(gates);
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(runner.active(), 0);
}

/// A port that waits for its gate, then reports the caller gone.
/// A port with a bug: it panics on the first request.
struct Panicking;

impl tolk::flow::port::CallPort for Panicking {
    fn request(
        &mut self,
        _: tolk::flow::port::Request,
    ) -> Result<tolk::flow::port::Reply, tolk::flow::port::PortError> {
        panic!("a bug in a verb")
    }
}

/// Starts flow `f` of `lib` on `runner` with `port`; its ending arrives on the receiver.
fn run_on(
    runner: &Runner,
    lib: Arc<FlowLibrary>,
    port: Box<dyn tolk::flow::port::CallPort>,
) -> std::sync::mpsc::Receiver<FlowEnd> {
    let (tx, rx) = std::sync::mpsc::channel();
    runner
        .start(
            lib,
            "f".into(),
            port,
            info(),
            Arc::new(AtomicBool::new(false)),
            move |end| {
                let _ = tx.send(end);
            },
        )
        .expect("a free slot");
    rx
}

#[test]
fn a_panic_on_a_flow_thread_fails_that_call_only_and_frees_its_slot() {
    // One slot: the flow after the panic must get it back, on the same reused thread, and
    // run with its own state (not the panicked call's port or budget).
    let runner = Runner::new(1, 256 * 1024);
    let lib = Arc::new(lib_with("answer(); play(\"goodbye\");", Limits::default()).unwrap());
    let end = run_on(&runner, lib.clone(), Box::new(Panicking))
        .recv_timeout(Duration::from_secs(30))
        .expect("the panicked flow ends");
    assert!(failed_with(&end, "a bug in a verb"), "{end:?}");
    assert_eq!(runner.active(), 0, "the slot is free again");
    let (call, report) = SimulatedCall::new("", None, catalog(), false);
    let end = run_on(&runner, lib, Box::new(call))
        .recv_timeout(Duration::from_secs(30))
        .expect("the next flow ends");
    assert_eq!(end, FlowEnd::Completed);
    let r = report.lock().unwrap();
    assert!(r.transcript.iter().any(|l| l.contains("goodbye")), "{:?}", r.transcript);
}

struct Blocking(std::sync::mpsc::Receiver<()>);

impl tolk::flow::port::CallPort for Blocking {
    fn request(
        &mut self,
        _: tolk::flow::port::Request,
    ) -> Result<tolk::flow::port::Reply, tolk::flow::port::PortError> {
        let _ = self.0.recv();
        Err(tolk::flow::port::PortError::HungUp)
    }
}

fn plan(text: &str) -> Result<Dialplan, Vec<tolk::file_text::FileError>> {
    Dialplan::from_text(
        Path::new("dialplans"),
        Path::new("numbers.toml"),
        text,
        Arc::new(shipped()),
        &["standard".to_string(), "billing".to_string()],
    )
}

#[test]
fn the_shipped_dialplan_routes_the_demo_numbers() {
    let d = Dialplan::load(&root().join("dialplans"), Limits::default(), &[]).expect("shipped dialplan");
    let m = d.route("18005550100", None);
    assert_eq!(m.target, Target::Flow("conference".into()));
    assert_eq!(m.dialled, "+18005550100");
    assert_eq!(m.kind, DialledKind::TollFree);
    assert_eq!(m.tenant.as_deref(), Some("demo"));
    assert_eq!(m.retention.as_deref(), Some("standard"));
    assert_eq!(m.tags.get("product").map(String::as_str), Some("conference"));
    assert_eq!(d.route("+15550100200", None).target, Target::Flow("assistant".into()));
    assert_eq!(d.route("5550100300", None).target, Target::Flow("echo".into()));
    assert_eq!(d.route("+15550100999", None).target, Target::Reject(404));
    assert_eq!(d.route("alice", None).target, Target::Reject(404));
}

#[test]
fn most_specific_route_wins_and_trunks_override() {
    let d = plan(
        r#"
[[route]]
pattern = "+1555*"
flow = "echo"

[[route]]
pattern = "+1555010XXXX"
flow = "assistant"

[[route]]
number = "+15550100300"
flow = "conference"
retention = "billing"

[[route]]
number = "+15550100300"
trunk = "carrier-b"
flow = "echo"

[[route]]
pattern = "+44800*"
reject = 403

[default]
flow = "echo"
"#,
    )
    .unwrap();
    assert_eq!(d.route("+15550100300", None).target, Target::Flow("conference".into()));
    assert_eq!(
        d.route("+15550100300", Some("carrier-a")).target,
        Target::Flow("conference".into())
    );
    assert_eq!(
        d.route("+15550100300", Some("carrier-b")).target,
        Target::Flow("echo".into())
    );
    assert_eq!(d.route("+15550100301", None).target, Target::Flow("assistant".into()));
    assert_eq!(d.route("+1555999", None).target, Target::Flow("echo".into()));
    assert_eq!(d.route("+448001234567", None).target, Target::Reject(403));
    assert_eq!(d.route("+4930123456", None).source, "numbers.toml:24 (default)");
    assert_eq!(d.route("+15550100300", None).retention.as_deref(), Some("billing"));
}

#[test]
fn a_bad_dialplan_is_rejected_whole_with_file_line_and_reason() {
    let errors = plan(
        r#"
[[route]]
number = "+18005550100"
flow = "conference"

[[route]]
number = "+18005550101"
flow = "no-such-flow"

[[route]]
pattern = "+1800Q"
flow = "echo"

[[route]]
number = "+18005550100"
flow = "echo"

[[route]]
number = "+18005550102"
flow = "echo"
retention = "forever"

[[route]]
number = "+18005550103"
reject = 200
"#,
    )
    .err()
    .expect("rejected");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let expect = [
        ("numbers.toml:6:", "no-such-flow"),
        ("numbers.toml:10:", "`Q`"),
        ("numbers.toml:14:", "routed twice"),
        ("numbers.toml:18:", "forever"),
        ("numbers.toml:23:", "400 to 699"),
    ];
    assert_eq!(text.len(), expect.len(), "{text:#?}");
    for ((prefix, needle), got) in expect.iter().zip(&text) {
        assert!(got.starts_with(prefix) && got.contains(needle), "{got}");
    }
    let syntax = plan("[[route]\nnumber = 1").err().unwrap();
    assert!(syntax[0].to_string().starts_with("numbers.toml:1:"), "{:?}", syntax);
    let unknown = plan("[[route]]\nnumbr = \"+1\"\nflow = \"echo\"").err().unwrap();
    assert!(unknown[0].to_string().contains("numbr"), "{:?}", unknown);
}

#[test]
fn a_hangup_stops_a_script_that_is_computing() {
    // No verb is waiting: the engine's progress check sees the hangup flag.
    let limits = Limits {
        step_budget: Duration::from_secs(3600),
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let lib = Arc::new(lib_with("answer(); let n = 0; loop { n += 1; }", limits).unwrap());
    let runner = Runner::new(2, tolk::flow::runner::DEFAULT_STACK_BYTES);
    let hung_up = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (call, _) = SimulatedCall::new("", None, None, false);
    runner
        .start(lib, "f".into(), Box::new(call), info(), hung_up.clone(), move |end| {
            let _ = tx.send(end);
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "still computing");
    hung_up.store(true, std::sync::atomic::Ordering::Relaxed);
    let end = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("stopped after the hangup");
    assert_eq!(end, FlowEnd::CallerHungUp);
}

#[test]
fn the_simulators_transcript_masks_the_numbers_a_flow_logs() {
    let lib = lib_with(
        "answer(); log(\"callback +14155550123 at 2026-12-07\"); hangup();",
        Limits::default(),
    )
    .unwrap();
    let (call, _) = SimulatedCall::new("", None, None, false);
    let (end, report) = simulate(&lib, "f", info(), call);
    assert!(!matches!(end, FlowEnd::Failed(_)), "{end:?}");
    assert!(
        report
            .transcript
            .iter()
            .any(|l| l.ends_with("log: callback +1415555**** at 2026-12-07")),
        "{:?}",
        report.transcript
    );
    assert!(!report.transcript.iter().any(|l| l.contains("4155550123")));
}
