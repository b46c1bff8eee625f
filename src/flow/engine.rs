//! The Rhai engine flows run in: built raw (the standard library of strings, arrays, maps and
//! maths, nothing that touches files, the network or the clock), no `eval`, no modules, and
//! hard limits on operations, call depth, expression depth and data sizes. A wall-clock budget
//! per step (the script's own work between two verbs) is enforced through `on_progress`, which
//! also ends the script at its next operation once the caller hangs up.
//!
//! One [`Engine`] and one compiled [`AST`] per flow are shared by every flow thread (Rhai's
//! `sync` feature); per-call state lives in a thread-local set by [`run`].

use super::api;
use super::port::{CallInfo, CallPort};
use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Position};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Limits applied to every flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations over the whole flow.
    pub max_operations: u64,
    /// Script function call depth.
    pub max_call_levels: usize,
    /// Wall-clock time a script may compute between two verbs.
    pub step_budget: Duration,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
    /// URL prefixes `http(...)` may reach (empty: `http` is disabled).
    pub http_allow: Vec<String>,
}

/// `[flow]` as the engine applies it.
impl From<&crate::config::FlowConfig> for Limits {
    fn from(cfg: &crate::config::FlowConfig) -> Limits {
        Limits {
            max_operations: cfg.max_operations,
            max_call_levels: cfg.max_call_levels,
            step_budget: Duration::from_millis(cfg.step_budget_ms),
            http_allow: cfg.http_allow.clone(),
            ..Default::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 20_000_000,
            max_call_levels: 32,
            step_budget: DEFAULT_STEP_BUDGET,
            max_string_bytes: 64 * 1024,
            max_array_len: 10_000,
            max_map_len: 10_000,
            http_allow: Vec::new(),
        }
    }
}

/// Token values of `ErrorTerminated`, the one error a script cannot catch.
pub(crate) const STOP_HANGUP: &str = "caller hung up";
pub(crate) const STOP_FLOW_HANGUP: &str = "flow hung up";
pub(crate) const STOP_BUDGET: &str = "step time budget exceeded";

/// The step budget when none is configured (`flow.step_budget_ms`).
const DEFAULT_STEP_BUDGET: Duration = Duration::from_millis(500);

thread_local! {
    /// The call this thread's flow runs for.
    pub(crate) static PORT: RefCell<Option<Box<dyn CallPort>>> = RefCell::new(None);
    pub(crate) static INFO: RefCell<CallInfo> = RefCell::new(CallInfo::default());
    /// When the current step must end (None while a verb waits for the call).
    static STEP_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static STEP_BUDGET: Cell<Duration> = const { Cell::new(DEFAULT_STEP_BUDGET) };
    static HUNG_UP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
    /// `flow.http_allow` for this thread's flow.
    pub(crate) static HTTP_ALLOW: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The Q.850 cause of a `hangup(cause)` by the flow.
    pub(crate) static FLOW_HANGUP_CAUSE: Cell<Option<u16>> = const { Cell::new(None) };
}

/// A verb is waiting for the call: the script is not computing.
pub(crate) fn pause_step() {
    STEP_DEADLINE.with(|d| d.set(None));
}

/// The verb returned: a new step begins.
pub(crate) fn resume_step() {
    let budget = STEP_BUDGET.with(Cell::get);
    STEP_DEADLINE.with(|d| d.set(Some(Instant::now() + budget)));
}

/// An error the script cannot catch, ending the flow.
pub(crate) fn stop(token: &str) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(token.to_string()),
        Position::NONE,
    ))
}

/// The engine every flow shares.
pub fn build(limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .set_max_variables(1_000)
        .set_max_functions(256)
        .set_max_modules(0)
        .set_strict_variables(true);
    // No evaluating strings as code, no modules (no file resolver is installed either).
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.disable_symbol("export");
    engine.on_progress(|ops| {
        if ops % 256 != 0 {
            return None;
        }
        if HUNG_UP.with(|h| h.borrow().as_ref().is_some_and(|f| f.load(Ordering::Relaxed))) {
            return Some(Dynamic::from(STOP_HANGUP.to_string()));
        }
        match STEP_DEADLINE.with(Cell::get) {
            Some(deadline) if Instant::now() > deadline => Some(Dynamic::from(STOP_BUDGET.to_string())),
            _ => None,
        }
    });
    engine.on_print(|s| {
        let _ = api::with_port(|p| p.request(super::port::Request::Log(s.to_string())));
    });
    engine.on_debug(|s, _, _| {
        let _ = api::with_port(|p| p.request(super::port::Request::Log(s.to_string())));
    });
    api::register(&mut engine);
    engine
}

/// How a flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowEnd {
    /// The script ran to its end.
    Completed,
    /// The caller hung up while the flow ran.
    CallerHungUp,
    /// The flow called `hangup(cause)`.
    FlowHungUp { cause: u16 },
    /// An error the script did not handle, or a limit: the reason, for the log and the CDR.
    Failed(String),
}

/// Runs `ast` on this thread for the call behind `port`. `hung_up` turns true when the call
/// ends, so a script computing between verbs stops at its next operation.
pub fn run(
    engine: &Engine,
    ast: &AST,
    limits: &Limits,
    port: Box<dyn CallPort>,
    info: CallInfo,
    hung_up: Arc<AtomicBool>,
) -> (FlowEnd, Box<dyn CallPort>) {
    PORT.with(|p| *p.borrow_mut() = Some(port));
    INFO.with(|i| *i.borrow_mut() = info);
    HUNG_UP.with(|h| *h.borrow_mut() = Some(hung_up));
    STEP_BUDGET.with(|b| b.set(limits.step_budget));
    HTTP_ALLOW.with(|a| a.borrow_mut().clone_from(&limits.http_allow));
    FLOW_HANGUP_CAUSE.with(|c| c.set(None));
    resume_step();
    let result = engine.run_ast(ast);
    pause_step();
    HUNG_UP.with(|h| *h.borrow_mut() = None);
    let port = PORT
        .with(|p| p.borrow_mut().take())
        .expect("the port is put back after every verb");
    let end = match result {
        Ok(()) => FlowEnd::Completed,
        Err(e) => classify(&e),
    };
    (end, port)
}

/// Forgets this thread's flow state (the port, the call's info, the step clock, the
/// allowances): after a panic cut [`run`] short, so the thread's next flow starts clean.
pub(crate) fn clear_thread_state() {
    PORT.with(|p| *p.borrow_mut() = None);
    INFO.with(|i| *i.borrow_mut() = CallInfo::default());
    STEP_DEADLINE.with(|d| d.set(None));
    STEP_BUDGET.with(|b| b.set(DEFAULT_STEP_BUDGET));
    HUNG_UP.with(|h| *h.borrow_mut() = None);
    HTTP_ALLOW.with(|a| a.borrow_mut().clear());
    FLOW_HANGUP_CAUSE.with(|c| c.set(None));
}

fn classify(e: &EvalAltResult) -> FlowEnd {
    match e {
        EvalAltResult::ErrorTerminated(token, _) => match token.clone().into_string().unwrap_or_default().as_str() {
            STOP_HANGUP => FlowEnd::CallerHungUp,
            STOP_FLOW_HANGUP => FlowEnd::FlowHungUp {
                cause: FLOW_HANGUP_CAUSE.with(Cell::get).unwrap_or(16),
            },
            other => FlowEnd::Failed(other.to_string()),
        },
        EvalAltResult::Exit(..) => FlowEnd::Completed,
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => classify(inner),
        other => FlowEnd::Failed(other.to_string()),
    }
}
