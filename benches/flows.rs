//! How many concurrent flows the runner holds, and what each costs: N callers run the shipped
//! conference flow (answer, PIN gather, tag, prompt) through a port that answers at once,
//! and all of them then wait inside `join_conference`, as callers in rooms do. Measured:
//! the time to start them all, resident memory and threads while they wait, per flow.
//!
//! - `cargo bench --bench flows`: N in `FLOWS` (default `1000 2000 4000`).
//! - `cargo test` runs it with 50 flows as a smoke test (every flow reaches the room).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tolk::flow::FlowLibrary;
use tolk::flow::engine::{FlowEnd, Limits};
use tolk::flow::port::{CallInfo, CallPort, PortError, Reply, Request};
use tolk::flow::runner::{DEFAULT_STACK_BYTES, Runner};

/// Released when the measurement is taken.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    waiting: AtomicUsize,
}

struct BenchPort {
    keys: Vec<char>,
    gate: Arc<Gate>,
}

impl CallPort for BenchPort {
    fn request(&mut self, req: Request) -> Result<Reply, PortError> {
        match req {
            Request::Collect { .. } => {
                let digits: String = self.keys.drain(..).take_while(|c| *c != '#').collect();
                Ok(Reply::Digits {
                    digits,
                    terminator: Some('#'),
                    timed_out: false,
                })
            }
            Request::Play { .. } => Ok(Reply::Played { interrupted: false }),
            // The shipped rooms.toml's participant PIN for `demo` (the keys above).
            Request::RoomRole { room, pin } if room == "demo" && pin == "1234" => Ok(Reply::Role("participant".into())),
            Request::RoomRole { .. } => Ok(Reply::Role(String::new())),
            Request::JoinConference { .. } => {
                self.gate.waiting.fetch_add(1, Ordering::SeqCst);
                let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
                while !*open {
                    open = self.gate.cv.wait(open).unwrap_or_else(|p| p.into_inner());
                }
                Err(PortError::HungUp)
            }
            _ => Ok(Reply::Done),
        }
    }
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(lib: &Arc<FlowLibrary>, n: usize) {
    let runner = Runner::new(n, DEFAULT_STACK_BYTES);
    let gate = Arc::new(Gate::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let rss_before = status_field("VmRSS:");
    let threads_before = status_field("Threads:");
    let started = Instant::now();
    for _ in 0..n {
        let port = BenchPort {
            keys: "1234#".chars().collect(),
            gate: gate.clone(),
        };
        let tx = tx.clone();
        runner
            .start(
                lib.clone(),
                "conference".into(),
                Box::new(port),
                CallInfo::default(),
                Arc::new(AtomicBool::new(false)),
                move |end| {
                    let _ = tx.send(end);
                },
            )
            .expect("a flow slot");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while gate.waiting.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "flows did not all reach the room");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ramp = started.elapsed();
    let rss = status_field("VmRSS:");
    let threads = status_field("Threads:");
    {
        let mut open = gate.open.lock().unwrap_or_else(|p| p.into_inner());
        *open = true;
        gate.cv.notify_all();
    }
    for _ in 0..n {
        let end = rx.recv_timeout(Duration::from_secs(60)).expect("every flow ends");
        assert_eq!(end, FlowEnd::CallerHungUp);
    }
    println!(
        "{n:>5} flows in the room: started in {:>6.0} ms ({:>5.1} us/flow), RSS +{:>6.1} MiB ({:>5.1} KiB/flow), threads +{}",
        ramp.as_secs_f64() * 1e3,
        ramp.as_secs_f64() * 1e6 / n as f64,
        rss.saturating_sub(rss_before) as f64 / 1024.0,
        rss.saturating_sub(rss_before) as f64 / n as f64,
        threads.saturating_sub(threads_before),
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dialplans/flows");
    let lib = Arc::new(FlowLibrary::compile_dir(&dir, Limits::default()).expect("shipped flows"));
    if !bench {
        measure(&lib, 50);
        return;
    }
    // Each size in a fresh process, so threads and memory of one run do not blur the next.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let n = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--one N");
        measure(&lib, n);
        return;
    }
    let counts = std::env::var("FLOWS").unwrap_or_else(|_| "1000 2000 4000".into());
    let exe = std::env::current_exe().expect("own path");
    for n in counts.split_whitespace() {
        let status = std::process::Command::new(&exe)
            .args(["--bench", "--one", n])
            .status()
            .expect("run a measurement");
        assert!(status.success(), "the measurement of {n} flows failed");
    }
}
