//! Carrying out what call flows ask, on real calls. A flow thread holds a [`GatewayPort`]:
//! each request goes over one channel to the gateway task, which acts on the SIP core, the
//! media leg, the CDR and the room registry, and answers when the request is done (a prompt
//! finished, digits collected, a timer ran out). When the call ends, the pending request's
//! reply is dropped, which the flow sees as a hangup.
//!
//! Owns: per-call flow state (the digit buffer, the request waiting, its deadline). Must not:
//! block; everything here runs on the gateway task.

use super::accounting::Accounting;
use super::leg::{LegCommand, LegHandle, LegMode, LegReport, spawn_leg};
use super::ports::RtpPort;
use crate::cdr::model::CallEventKind;
use crate::flow::engine::FlowEnd;
use crate::flow::port::{CallPort, Note, PortError, Reply, Request};
use crate::media_files::prompts::PromptCatalog;
use crate::room::conference::{self, Effect};
use crate::room::mixer::MemberOptions;
use crate::room::scheduler::Command;
use crate::room::{JoinRefused, Member, Rooms};
use crate::sip::dialog::{CallRef, UasCore};
use crate::sip::sdp::LocalMedia;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod media_verbs;
mod room_verbs;
mod sip_verbs;

type ReplyTx = oneshot::Sender<Result<Reply, PortError>>;

/// How long a transfer may take before the flow is told it failed.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// From flow threads to the gateway task.
pub enum FlowMsg {
    Request {
        call: CallRef,
        req: Request,
        reply: ReplyTx,
        sent: Instant,
    },
    /// The flow thread is done; the call is hung up if it is still up.
    Finished { call: CallRef, end: FlowEnd },
}

impl FlowMsg {
    /// When a request was sent (now for other messages).
    pub fn sent_at(&self) -> Instant {
        match self {
            FlowMsg::Request { sent, .. } => *sent,
            FlowMsg::Finished { .. } => Instant::now(),
        }
    }
}

/// The port a flow thread holds for its call.
pub struct GatewayPort {
    pub call: CallRef,
    pub tx: mpsc::Sender<FlowMsg>,
}

impl CallPort for GatewayPort {
    fn request(&mut self, req: Request) -> Result<Reply, PortError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(FlowMsg::Request {
                call: self.call,
                req,
                reply,
                sent: Instant::now(),
            })
            .map_err(|_| PortError::HungUp)?;
        rx.blocking_recv().unwrap_or(Err(PortError::HungUp))
    }
}

/// The RTP port and SDP a call will answer with.
pub struct MediaSlot {
    pub port: RtpPort,
    pub local: LocalMedia,
}

/// What starting a media leg needs.
pub struct LegSetup {
    pub rtp_timeout: Duration,
    pub prompts: Option<Arc<PromptCatalog>>,
    pub reports: mpsc::Sender<LegReport>,
    pub recordings_dir: PathBuf,
    /// Text-to-speech WAVs, by a hash of their text (`data_dir/tts`).
    pub tts_dir: PathBuf,
    /// Retention classes `retention(class)` may name.
    pub classes: Vec<String>,
    /// For the opt-out registry (None without CDRs).
    pub pool: Option<sqlx::PgPool>,
    /// Tones the room hears when a member joins or leaves (names or specifications; "" none).
    pub join_tone: String,
    pub leave_tone: String,
}

/// What the handlers act on.
pub struct Ctx<'a> {
    pub core: &'a mut UasCore,
    pub legs: &'a mut HashMap<CallRef, LegHandle>,
    pub accounting: Option<&'a mut Accounting>,
    pub rooms: &'a Rooms,
    pub now: Instant,
}

enum Wait {
    Ring {
        until: Instant,
    },
    Play {
        barge_in: bool,
    },
    Collect {
        max: usize,
        terminators: String,
        deadline: Instant,
        between: Duration,
        digits: String,
    },
    Record {
        until: Instant,
        id: String,
        stopping: bool,
    },
    Echo {
        until: Instant,
    },
    /// In a room until the call ends.
    Join,
    /// A REFER is out; its outcome comes as a `TransferResult`.
    Transfer {
        until: Instant,
    },
}

impl Wait {
    /// What the flow is doing, for the operator's list of live calls.
    fn name(&self) -> &'static str {
        match self {
            Wait::Ring { .. } => "ring",
            Wait::Play { .. } => "play",
            Wait::Collect { .. } => "collect",
            Wait::Record { .. } => "record",
            Wait::Echo { .. } => "echo",
            Wait::Join => "room",
            Wait::Transfer { .. } => "transfer",
        }
    }
}

struct Pending {
    wait: Wait,
    reply: ReplyTx,
}

struct FlowCall {
    hung_up: Arc<AtomicBool>,
    slot: Option<MediaSlot>,
    answered: bool,
    /// The media leg's PCM rate (text-to-speech is made at it, off the gateway task).
    pcm_rate: u32,
    rung: bool,
    digits: VecDeque<char>,
    /// Prompts and tones sent to the leg and not reported done yet.
    plays_outstanding: u32,
    /// A play that could not start (unknown prompt): the next reply says so.
    play_error: Option<String>,
    pending: Option<Pending>,
    /// The deadline this call has in `FlowCalls::timers`.
    armed: Option<Instant>,
    /// Why the call is leaving its room (asked by its own key); a member taken out by
    /// someone else has none and was ejected.
    leaving: Option<&'static str>,
    /// Who enters PINs on this call, for counting wrong ones across calls.
    pin_caller: PinIdentity,
    /// Roles a PIN gave this call, per room: what `join_conference` may ask for.
    granted: HashMap<String, &'static str>,
    /// The booth an interpreter's PIN gave, per interpretation room.
    booths: HashMap<String, u8>,
    /// Whether the flow's last verb (notes and logs aside) took keys from the caller: a
    /// `consent()` that undoes an opt-out needs one (the caller's own choice, this step).
    keys_this_step: bool,
}

/// How the PIN guess counting knows a caller: `key` (the pseudonym, or a stand-in) and how
/// logs show them (masked).
#[derive(Debug, Clone, Default)]
pub struct PinIdentity {
    pub key: String,
    pub shown: String,
}

/// When a call's waiting request must be looked at again.
fn deadline_of(fc: &FlowCall) -> Option<Instant> {
    match &fc.pending.as_ref()?.wait {
        Wait::Ring { until } | Wait::Echo { until } | Wait::Transfer { until } => Some(*until),
        Wait::Record {
            until, stopping: false, ..
        } => Some(*until),
        Wait::Collect { deadline, .. } => Some(*deadline),
        _ => None,
    }
}

/// Every call a flow drives.
pub struct FlowCalls {
    calls: HashMap<CallRef, FlowCall>,
    /// Deadlines of waiting requests, exactly one entry per call that has one (`armed`).
    timers: std::collections::BTreeSet<(Instant, CallRef)>,
    setup: LegSetup,
}

fn reply(p: Pending, r: Result<Reply, PortError>) {
    let _ = p.reply.send(r);
}

/// Answers the flow's request.
fn done(tx: ReplyTx, r: Result<Reply, PortError>) {
    let _ = tx.send(r);
}

fn failed(msg: impl Into<String>) -> Result<Reply, PortError> {
    Err(PortError::Failed(msg.into()))
}

/// Whether the caller opted out of recording (their record's consent says so).
fn opted_out_of_recording(r: &crate::cdr::model::CallRecord) -> bool {
    r.consent.get("record") == Some(&serde_json::Value::Bool(false))
}

/// RFC 3398 §7.2.4.1 mapping of a Q.850 cause to a SIP status, for a flow that hangs up
/// before answering (a SIP status is used as given).
fn status_for_cause(cause: u16) -> u16 {
    match cause {
        400..=699 => cause,
        1..=3 | 26 => 404,
        17 => 486,
        18 => 408,
        19 | 20 | 31 => 480,
        21 | 55 | 57 | 87 => 403,
        22 => 410,
        27 => 502,
        28 => 484,
        29 | 69 | 79 => 501,
        65 => 488,
        102 => 504,
        34 | 38 | 41 | 42 | 47 | 58 | 88 => 503,
        16 => 603,
        _ => 500,
    }
}

impl FlowCalls {
    pub fn new(setup: LegSetup) -> FlowCalls {
        FlowCalls {
            calls: HashMap::new(),
            timers: std::collections::BTreeSet::new(),
            setup,
        }
    }

    /// A flow is about to start for `call`, which will answer with `slot`.
    pub fn add(&mut self, call: CallRef, slot: MediaSlot, hung_up: Arc<AtomicBool>, pin_caller: PinIdentity) {
        self.calls.insert(
            call,
            FlowCall {
                hung_up,
                slot: Some(slot),
                answered: false,
                pcm_rate: 8_000,
                rung: false,
                digits: VecDeque::new(),
                plays_outstanding: 0,
                play_error: None,
                pending: None,
                armed: None,
                leaving: None,
                pin_caller,
                granted: HashMap::new(),
                booths: HashMap::new(),
                keys_this_step: false,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The next time a waiting request must be answered.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Brings `call`'s entry in the timer set up to date with its waiting request.
    fn arm(&mut self, call: CallRef) {
        let Some(fc) = self.calls.get_mut(&call) else { return };
        let want = deadline_of(fc);
        if want == fc.armed {
            return;
        }
        if let Some(old) = fc.armed.take() {
            self.timers.remove(&(old, call));
        }
        if let Some(at) = want {
            self.timers.insert((at, call));
            fc.armed = Some(at);
        }
    }

    /// A message from a flow thread.
    pub fn handle(&mut self, msg: FlowMsg, ctx: &mut Ctx) {
        match msg {
            FlowMsg::Finished { call, end } => {
                match &end {
                    FlowEnd::Failed(why) => {
                        let reason = crate::privacy::mask_numbers_in(why);
                        tracing::info!(call = call.0, reason = %reason, "flow failed");
                    }
                    other => tracing::debug!(call = call.0, end = ?other, "flow finished"),
                }
                if self.calls.contains_key(&call) {
                    // Normally the flow hung up itself; this is the safety net.
                    let _ = ctx.core.hangup(call, ctx.now);
                }
            }
            FlowMsg::Request { call, req, reply, .. } => {
                let Some(fc) = self.calls.get_mut(&call) else {
                    let _ = reply.send(Err(PortError::HungUp));
                    return;
                };
                if fc.hung_up.load(Ordering::Relaxed) {
                    let _ = reply.send(Err(PortError::HungUp));
                    return;
                }
                if let Some(old) = fc.pending.take() {
                    // A flow waits for each reply; a second request means the first was
                    // abandoned. Answer it so nothing leaks.
                    reply_err(old, "superseded");
                }
                Self::start_request(&self.setup, fc, call, req, reply, ctx);
                self.arm(call);
            }
        }
    }

    fn start_request(setup: &LegSetup, fc: &mut FlowCall, call: CallRef, req: Request, tx: ReplyTx, ctx: &mut Ctx) {
        // A step ends with the next verb that does something on the call.
        if !matches!(req, Request::Note(_) | Request::Log(_) | Request::RoomRole { .. }) {
            fc.keys_this_step = false;
        }
        match req {
            Request::Answer => sip_verbs::answer(setup, fc, call, tx, ctx),
            Request::Ring(d) => sip_verbs::ring(fc, call, tx, ctx, d),
            Request::Play { source, barge_in } => media_verbs::play(setup, fc, call, tx, ctx, source, barge_in),
            Request::Collect {
                max,
                terminators,
                first,
                between,
            } => media_verbs::collect(fc, tx, ctx, max, terminators, first, between),
            Request::Record { max, beep, .. } => media_verbs::record(setup, fc, call, tx, ctx, max, beep),
            Request::Echo { max } => media_verbs::echo(fc, call, tx, ctx, max),
            Request::JoinConference { room, role, muted } => {
                room_verbs::join_conference(setup, fc, call, tx, ctx, room_verbs::Join { room, role, muted })
            }
            Request::JoinInterpretation { room, role, language } => {
                room_verbs::join_interpretation(fc, call, tx, ctx, room, role, language)
            }
            Request::Transfer { target } => sip_verbs::transfer(fc, call, tx, ctx, target),
            Request::Hangup { cause } => sip_verbs::hangup(fc, call, tx, ctx, cause),
            Request::RoomRole { room, pin } => room_verbs::room_role(fc, call, tx, ctx, room, pin),
            Request::Note(note) => done(tx, Self::note(setup, call, note, fc.keys_this_step, ctx)),
            Request::Log(text) => {
                // A flow logs what it likes: the numbers in it are masked before it is written.
                tracing::info!(call = call.0, "flow log: {}", crate::privacy::mask_numbers_in(&text));
                done(tx, Ok(Reply::Done))
            }
        }
    }

    fn note(
        setup: &LegSetup,
        call: CallRef,
        note: Note,
        keys_this_step: bool,
        ctx: &mut Ctx,
    ) -> Result<Reply, PortError> {
        let Some(a) = ctx.accounting.as_deref_mut() else {
            // Without CDRs there is nowhere to note anything; the flow need not care.
            return Ok(Reply::Done);
        };
        match note {
            Note::Tag { key, value } => a.annotate(call, |r| {
                if !r.tags.is_object() {
                    r.tags = serde_json::json!({});
                }
                if let Some(m) = r.tags.as_object_mut() {
                    m.insert(key, value.into());
                }
            }),
            Note::FlowError(why) => a.annotate(call, |r| {
                if let Some(m) = r.tags.as_object_mut() {
                    m.insert("flow_error".into(), why.into());
                }
            }),
            Note::Retention(class) => {
                if !a.set_retention(call, &class) {
                    return failed(format!(
                        "retention: `{class}` is not a retention class (have: {})",
                        setup.classes.join(", ")
                    ));
                }
            }
            Note::Consent(scope) => {
                // An opt-out (the registry's, the fail-closed default, or the caller's own in
                // this call) is undone only by the caller: keys pressed in this step.
                let opted_out = a
                    .record(call)
                    .is_some_and(|r| r.consent.get(&scope) == Some(&serde_json::Value::Bool(false)));
                if opted_out && !keys_this_step {
                    return failed(format!(
                        "consent: the caller opted out of `{scope}`; only the caller can undo that, \
                         by keys pressed in the same step (gather, then consent)"
                    ));
                }
                a.annotate(call, |r| {
                    if let Some(m) = r.consent.as_object_mut() {
                        m.insert(scope.clone(), true.into());
                    }
                });
                if opted_out {
                    a.event(
                        call,
                        CallEventKind::Consent {
                            scope,
                            source: "keypad",
                        },
                    );
                }
            }
            Note::OptOut(scope) => {
                a.annotate(call, |r| {
                    if let Some(m) = r.consent.as_object_mut() {
                        m.insert(scope.clone(), false.into());
                    }
                });
                a.event(
                    call,
                    CallEventKind::OptOut {
                        scope: scope.clone(),
                        source: "flow",
                    },
                );
                // Under the pseudonym the call's tenant gives the caller, for that tenant.
                let tenant = a.record(call).and_then(|r| r.tenant.clone());
                match (a.caller_pseudonym(call), setup.pool.clone()) {
                    (Some(pseudonym), Some(pool)) => {
                        tokio::spawn(keep_trying("opt-out registry write", move || {
                            let (pool, pseudonym, scope, tenant) =
                                (pool.clone(), pseudonym.clone(), scope.clone(), tenant.clone());
                            async move {
                                crate::cdr::subject::opt_out(&pool, &pseudonym, tenant.as_deref(), &scope, "flow").await
                            }
                        }));
                    }
                    (None, _) => tracing::info!(
                        call = call.0,
                        "opt-out from an anonymous caller: noted on the call only"
                    ),
                    _ => {}
                }
            }
        }
        Ok(Reply::Done)
    }

    /// Moves buffered digits into a waiting collection; answers it when it is complete.
    fn feed_digits(fc: &mut FlowCall, now: Instant) {
        let Some(Pending {
            wait:
                Wait::Collect {
                    max,
                    terminators,
                    deadline,
                    between,
                    digits,
                },
            ..
        }) = fc.pending.as_mut()
        else {
            return;
        };
        let mut outcome = None;
        while let Some(d) = fc.digits.pop_front() {
            if terminators.contains(d) {
                outcome = Some(Some(d));
                break;
            }
            digits.push(d);
            *deadline = now + *between;
            if digits.chars().count() >= *max {
                outcome = Some(None);
                break;
            }
        }
        if let Some(terminator) = outcome {
            let digits = std::mem::take(digits);
            fc.keys_this_step = !digits.is_empty();
            if let Some(p) = fc.pending.take() {
                reply(
                    p,
                    Ok(Reply::Digits {
                        digits,
                        terminator,
                        timed_out: false,
                    }),
                );
            }
        }
    }

    /// A keypad digit from any source.
    pub fn digit(&mut self, call: CallRef, digit: char, ctx: &mut Ctx) {
        self.digit_inner(call, digit, ctx);
        self.arm(call);
    }

    /// A key pressed in a room: the conference keypad map.
    fn room_key(&mut self, call: CallRef, digit: char, ctx: &mut Ctx) {
        for effect in conference::on_key(ctx.rooms, call.0, digit) {
            match effect {
                Effect::Play(names) => {
                    let Some((room, _)) = ctx.rooms.member(call.0) else {
                        continue;
                    };
                    let (Some(shard), Some(pcm)) = (ctx.rooms.shard(&room), ctx.rooms.render(&names)) else {
                        continue;
                    };
                    let _ = shard.send(Command::PlayTo {
                        call: call.0,
                        pcm,
                        what: "room:keypad".into(),
                    });
                }
                Effect::Leave(reason) => {
                    if let Some(fc) = self.calls.get_mut(&call) {
                        fc.leaving = Some(reason);
                    }
                    match ctx.legs.get(&call) {
                        Some(leg) if ctx.rooms.scheduler().is_some() => {
                            let _ = leg.commands.try_send(LegCommand::LeaveRoom);
                        }
                        // No mixer: nothing to take back.
                        _ => self.left_room(call, ctx),
                    }
                }
                Effect::Eject(other) => {
                    if let Some((room, _)) = ctx.rooms.member(other) {
                        let _ = ctx.rooms.eject(&room, other);
                    }
                }
            }
        }
    }

    fn digit_inner(&mut self, call: CallRef, digit: char, ctx: &mut Ctx) {
        let in_room = self
            .calls
            .get(&call)
            .and_then(|fc| fc.pending.as_ref())
            .is_some_and(|p| matches!(p.wait, Wait::Join));
        if in_room {
            return self.room_key(call, digit, ctx);
        }
        let Some(fc) = self.calls.get_mut(&call) else { return };
        match fc.pending.as_mut().map(|p| &mut p.wait) {
            Some(Wait::Play { barge_in: true }) => {
                fc.digits.push_back(digit);
                if let Some(leg) = ctx.legs.get(&call) {
                    let _ = leg.commands.try_send(LegCommand::Stop);
                }
                if let Some(p) = fc.pending.take() {
                    reply(p, Ok(Reply::Played { interrupted: true }));
                }
            }
            Some(Wait::Record { stopping, .. }) => {
                // Any key ends a recording.
                if !*stopping {
                    *stopping = true;
                    if let Some(leg) = ctx.legs.get(&call) {
                        let _ = leg.commands.try_send(LegCommand::StopRecording);
                    }
                }
            }
            Some(Wait::Collect { .. }) => {
                fc.digits.push_back(digit);
                Self::feed_digits(fc, ctx.now);
            }
            _ => {
                // Type-ahead for the next gather (bounded).
                if fc.digits.len() < 64 {
                    fc.digits.push_back(digit);
                }
            }
        }
    }

    /// A prompt or tone the leg played ended (or could not start).
    pub fn playback_done(&mut self, call: CallRef, what: &str, ok: bool) {
        let Some(fc) = self.calls.get_mut(&call) else { return };
        if what.starts_with("room:") {
            return; // played by the room (keypad answers), not by the flow
        }
        fc.plays_outstanding = fc.plays_outstanding.saturating_sub(1);
        if !ok {
            fc.play_error = Some(match what.strip_prefix("say:") {
                Some(why) => format!("say: {why}"),
                None => format!("play: no prompt or tone `{what}`"),
            });
        }
        if fc.plays_outstanding == 0
            && matches!(fc.pending.as_ref().map(|p| &p.wait), Some(Wait::Play { .. }))
            && let Some(p) = fc.pending.take()
        {
            match fc.play_error.take() {
                Some(e) => reply(p, failed(e)),
                None => reply(p, Ok(Reply::Played { interrupted: false })),
            }
        }
    }

    /// The far end's answer to a transfer (RFC 3515): 2xx transferred, else refused or failed.
    pub fn transfer_result(&mut self, call: CallRef, status: u16) {
        let Some(fc) = self.calls.get_mut(&call) else { return };
        if matches!(fc.pending.as_ref().map(|p| &p.wait), Some(Wait::Transfer { .. }))
            && let Some(p) = fc.pending.take()
        {
            if (200..300).contains(&status) {
                reply(p, Ok(Reply::Done));
            } else {
                reply(p, failed(format!("transfer: the far end answered {status}")));
            }
        }
        self.arm(call);
    }

    /// A recording the flow asked for was finalised.
    pub fn recording_done(&mut self, call: CallRef, seconds: f64, error: Option<String>) {
        let Some(fc) = self.calls.get_mut(&call) else { return };
        if let Some(Pending {
            wait: Wait::Record { id, .. },
            ..
        }) = fc.pending.as_ref()
        {
            let id = id.clone();
            if let Some(p) = fc.pending.take() {
                match error {
                    None => reply(p, Ok(Reply::Recorded { id, seconds })),
                    Some(e) => reply(p, failed(format!("record: {e}"))),
                }
            }
        }
    }

    /// Answers requests whose time is up.
    pub fn poll(&mut self, ctx: &mut Ctx) {
        let now = ctx.now;
        let mut due_calls = Vec::new();
        while let Some(&(at, call)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, call));
            if let Some(fc) = self.calls.get_mut(&call) {
                fc.armed = None;
            }
            due_calls.push(call);
        }
        for &call in &due_calls {
            let Some(fc) = self.calls.get_mut(&call) else { continue };
            let call = &call;
            let due = match fc.pending.as_mut().map(|p| &mut p.wait) {
                Some(Wait::Ring { until }) | Some(Wait::Echo { until }) | Some(Wait::Transfer { until }) => {
                    *until <= now
                }
                Some(Wait::Collect { deadline, .. }) => *deadline <= now,
                Some(Wait::Record { until, stopping, .. }) => {
                    if !*stopping && *until <= now {
                        *stopping = true;
                        if let Some(leg) = ctx.legs.get(call) {
                            let _ = leg.commands.try_send(LegCommand::StopRecording);
                        }
                    }
                    false
                }
                _ => false,
            };
            if !due {
                continue;
            }
            let Some(p) = fc.pending.take() else { continue };
            match p.wait {
                Wait::Echo { .. } => {
                    if let Some(leg) = ctx.legs.get(call) {
                        let _ = leg.commands.try_send(LegCommand::Mode(LegMode::Silence));
                    }
                    reply(p, Ok(Reply::Done));
                }
                Wait::Collect { ref digits, .. } => {
                    let digits = digits.clone();
                    fc.keys_this_step = !digits.is_empty();
                    reply(
                        p,
                        Ok(Reply::Digits {
                            digits,
                            terminator: None,
                            timed_out: true,
                        }),
                    );
                }
                Wait::Transfer { .. } => reply(p, failed("transfer: no outcome within 30 s")),
                _ => reply(p, Ok(Reply::Done)),
            }
        }
        for call in due_calls {
            self.arm(call);
        }
    }

    /// The calls with a flow: each with what its flow waits for (`ring`, `play`, `collect`,
    /// `record`, `room`...; `running` while it computes) and whether it was answered.
    pub fn live(&self) -> impl Iterator<Item = (CallRef, &'static str, bool)> + '_ {
        self.calls.iter().map(|(call, fc)| {
            (
                *call,
                fc.pending.as_ref().map_or("running", |p| p.wait.name()),
                fc.answered,
            )
        })
    }

    /// An operator hangs up `call`: BYE when answered, 480 before; its flow sees a hangup
    /// at its next verb. False when there is no such call.
    pub fn hang_up(&mut self, call: CallRef, ctx: &mut Ctx) -> bool {
        let Some(fc) = self.calls.get(&call) else { return false };
        let r = if fc.answered {
            ctx.core.hangup(call, ctx.now)
        } else {
            ctx.core.reject(call, 480, ctx.now)
        };
        fc.hung_up.store(true, Ordering::Relaxed);
        r.is_ok()
    }

    /// The call ended: the flow's pending request sees a hangup; the member leaves its room.
    pub fn ended(&mut self, call: CallRef, ctx: &mut Ctx) {
        if let Some(fc) = self.calls.remove(&call) {
            if let Some(at) = fc.armed {
                self.timers.remove(&(at, call));
            }
            fc.hung_up.store(true, Ordering::Relaxed);
            drop(fc.pending);
            self.leave_registry(call, "hung up", ctx);
        }
    }

    /// The room gave the call's media back (the member left by key or was ejected): the
    /// flow's `join_conference` returns why.
    pub fn left_room(&mut self, call: CallRef, ctx: &mut Ctx) {
        let Some(fc) = self.calls.get_mut(&call) else { return };
        let reason = fc.leaving.take().unwrap_or_else(|| ctx.rooms.take_reason(call.0));
        if matches!(fc.pending.as_ref().map(|p| &p.wait), Some(Wait::Join))
            && let Some(p) = fc.pending.take()
        {
            reply(p, Ok(Reply::Left { reason: reason.into() }));
        }
        self.leave_registry(call, reason, ctx);
    }

    fn leave_registry(&self, call: CallRef, reason: &str, ctx: &mut Ctx) {
        let Some((room, left)) = ctx.rooms.leave(call.0) else {
            return;
        };
        tracing::info!(call = call.0, room, reason, "left the room");
        if let Some(a) = ctx.accounting.as_deref_mut() {
            a.event(
                call,
                CallEventKind::LeftRoom {
                    room: room.clone(),
                    reason: reason.to_string(),
                },
            );
        }
        if left > 0
            && let Some(pcm) = ctx.rooms.render(std::slice::from_ref(&self.setup.leave_tone))
        {
            ctx.rooms.play_room(&room, pcm);
        }
    }
}

fn reply_err(p: Pending, why: &str) {
    reply(p, failed(why));
}

/// Writes something the database must eventually hold (the opt-out registry, a recording's
/// row) with backoff, off the gateway task; the journal (the call's record and events) holds
/// the fact meanwhile, so giving up loses no choice.
async fn keep_trying<F, Fut>(what: &'static str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::cdr::query::QueryError>>,
{
    let mut backoff = Duration::from_secs(1);
    for attempt in 0..10u32 {
        match write().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    tracing::error!("{what} gave up; the call's CDR and events in the journal hold it");
}

#[cfg(test)]
mod tests {
    use super::status_for_cause;

    #[test]
    fn causes_map_to_sip_statuses() {
        assert_eq!(status_for_cause(17), 486);
        assert_eq!(status_for_cause(1), 404);
        assert_eq!(status_for_cause(41), 503);
        assert_eq!(status_for_cause(16), 603);
        assert_eq!(status_for_cause(486), 486);
        assert_eq!(status_for_cause(99), 500);
    }
}
