//! Flow threads. Each active flow runs on its own OS thread with a small stack (verbs block
//! while the call works, so a thread per flow keeps scripts plain sequential code); threads
//! are reused for later flows and end after a minute unused. The number of flows at once is
//! capped, and a call that finds the pool full is refused (503 with Retry-After) before
//! anything is started for it.
//!
//! [`run_flow`] is what every flow goes through, on a thread or in the simulator: the script,
//! then the ending: a script that completes without hanging up ends the call normally; one
//! that fails (an unhandled error, a limit) is recorded in the CDR, the caller hears the
//! apology prompt, and the call is hung up.

use super::FlowLibrary;
use super::engine::{self, FlowEnd};
use super::port::{CallInfo, CallPort, Note, Request, Source};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A flow thread's stack. Enough for the deepest script the limits allow (recursion to
/// `max_call_levels`, each level inside nested expressions; `tests/flows.rs` runs it) with
/// room to spare; unoptimised builds need several times more.
pub const DEFAULT_STACK_BYTES: usize = if cfg!(debug_assertions) { 8 << 20 } else { 1 << 20 };

/// The stack of each flow thread for `[flow]`: `stack_kib`, or the default sized for
/// `max_call_levels` (it is sized for 32 levels; deeper limits get proportionally more).
pub fn stack_bytes(cfg: &crate::config::FlowConfig) -> usize {
    match cfg.stack_kib {
        0 => DEFAULT_STACK_BYTES * cfg.max_call_levels.div_ceil(32),
        k => k * 1024,
    }
}

/// The prompt a caller hears when their flow fails.
pub const APOLOGY_PROMPT: &str = "sorry";
/// Q.850 41 (temporary failure) when a flow fails.
pub const FAILURE_CAUSE: u16 = 41;

/// Runs `flow` for one call, including its ending; returns how the script ended.
pub fn run_flow(
    lib: &FlowLibrary,
    flow: &str,
    port: Box<dyn CallPort>,
    info: CallInfo,
    hung_up: Arc<AtomicBool>,
) -> (FlowEnd, Box<dyn CallPort>) {
    let Some(ast) = lib.get(flow) else {
        let mut port = port;
        let end = FlowEnd::Failed(format!("no flow named `{flow}`"));
        fail(port.as_mut(), &end);
        return (end, port);
    };
    let (end, mut port) = engine::run(&lib.engine, &ast, &lib.limits, port, info, hung_up);
    match &end {
        FlowEnd::Completed => {
            let _ = port.request(Request::Hangup { cause: 16 });
        }
        FlowEnd::Failed(_) => fail(port.as_mut(), &end),
        FlowEnd::CallerHungUp | FlowEnd::FlowHungUp { .. } => {}
    }
    (end, port)
}

fn fail(port: &mut dyn CallPort, end: &FlowEnd) {
    let FlowEnd::Failed(why) = end else { return };
    // Script errors quote the script's values (numbers, URLs): masked before they are
    // logged or filed in the CDR.
    let why = crate::privacy::mask_numbers_in(why).into_owned();
    tracing::warn!(reason = %why, "call flow failed; the caller hears the apology");
    let _ = port.request(Request::Note(Note::FlowError(why)));
    let _ = port.request(Request::Play {
        source: Source::Prompt(APOLOGY_PROMPT.into()),
        barge_in: false,
    });
    let _ = port.request(Request::Hangup { cause: FAILURE_CAUSE });
}

/// A panic's message (its payload is a `&str` or a `String` when it has one), cut short.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    text.chars().take(200).collect()
}

/// The pool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {0} flow slots are busy")]
pub struct Busy(pub usize);

type Job = Box<dyn FnOnce() + Send>;

/// Threads kept for reuse: a flow still has a thread of its own while it runs, but starting
/// one does not pay for creating (and later destroying) a thread and its stack.
#[derive(Default)]
struct PoolState {
    jobs: std::collections::VecDeque<Job>,
    /// Workers waiting for a job that no job has claimed yet.
    idle: usize,
}

struct Pool {
    state: std::sync::Mutex<PoolState>,
    wake: std::sync::Condvar,
    stack_bytes: usize,
}

/// A worker that has waited this long without a flow ends.
const IDLE_THREAD_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

impl Pool {
    /// Runs `job` on an idle worker, or on a new thread when none is idle.
    fn run(self: &Arc<Self>, job: Job) -> std::io::Result<()> {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.idle > 0 {
                st.idle -= 1;
                st.jobs.push_back(job);
                self.wake.notify_one();
                return Ok(());
            }
        }
        let pool = self.clone();
        std::thread::Builder::new()
            .name("flow".into())
            .stack_size(self.stack_bytes)
            .spawn(move || {
                job();
                pool.worker();
            })
            .map(|_| ())
    }

    fn worker(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.idle += 1;
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                job();
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.idle += 1;
                continue;
            }
            let (guard, timeout) = self
                .wake
                .wait_timeout(st, IDLE_THREAD_LIFETIME)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            if timeout.timed_out() && st.jobs.is_empty() {
                st.idle -= 1;
                return;
            }
        }
    }
}

/// Starts flows on their own threads, at most `max` at once.
#[derive(Clone)]
pub struct Runner {
    active: Arc<AtomicUsize>,
    max: usize,
    pool: Arc<Pool>,
}

impl Runner {
    pub fn new(max: usize, stack_bytes: usize) -> Runner {
        Runner {
            active: Arc::new(AtomicUsize::new(0)),
            max,
            pool: Arc::new(Pool {
                state: std::sync::Mutex::new(PoolState::default()),
                wake: std::sync::Condvar::new(),
                stack_bytes,
            }),
        }
    }

    /// Flows running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Runs `flow` on a thread of its own; `done` is called on that thread with the ending.
    pub fn start(
        &self,
        lib: Arc<FlowLibrary>,
        flow: String,
        port: Box<dyn CallPort>,
        info: CallInfo,
        hung_up: Arc<AtomicBool>,
        done: impl FnOnce(FlowEnd) + Send + 'static,
    ) -> Result<(), Busy> {
        // Reserve a slot first, so concurrent starts cannot overshoot.
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .is_err()
        {
            metrics::counter!("flows_refused_total").increment(1);
            return Err(Busy(self.max));
        }
        metrics::gauge!("flows_active").set(self.active() as f64);
        let active = self.active.clone();
        let job: Job = Box::new(move || {
            // A panic (a bug in a verb or in the engine, never a script error: those are
            // `FlowEnd::Failed`) must not leak the slot or leave this reused thread with
            // another call's state: it is caught, the thread's flow state is cleared, and
            // the call ends as a failed flow (the gateway hangs it up).
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_flow(&lib, &flow, port, info, hung_up)
            }));
            let end = match ran {
                Ok((end, _port)) => end,
                Err(panic) => {
                    engine::clear_thread_state();
                    metrics::counter!("flow_panics_total").increment(1);
                    let why = panic_text(panic.as_ref());
                    tracing::error!(
                        flow = %flow,
                        "a flow thread panicked: {}",
                        crate::privacy::mask_numbers_in(&why)
                    );
                    FlowEnd::Failed(format!("internal error in the flow runner: {why}"))
                }
            };
            let n = active.fetch_sub(1, Ordering::AcqRel) - 1;
            metrics::gauge!("flows_active").set(n as f64);
            done(end);
        });
        if self.pool.run(job).is_err() {
            let n = self.active.fetch_sub(1, Ordering::AcqRel) - 1;
            metrics::gauge!("flows_active").set(n as f64);
            return Err(Busy(self.max));
        }
        Ok(())
    }
}
