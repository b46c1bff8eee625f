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
use crate::flow::engine::FlowEnd;
use crate::flow::port::{CallPort, Note, PortError, Reply, Request, Source};
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
    pub fn add(&mut self, call: CallRef, slot: MediaSlot, hung_up: Arc<AtomicBool>) {
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
                    FlowEnd::Failed(why) => tracing::info!(call = call.0, reason = %why, "flow failed"),
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
        let now = ctx.now;
        let done = |tx: ReplyTx, r: Result<Reply, PortError>| {
            let _ = tx.send(r);
        };
        match req {
            Request::Answer => {
                if fc.answered {
                    return done(tx, Ok(Reply::Done));
                }
                let Some(slot) = fc.slot.take() else {
                    return done(tx, failed("answer: the call has no media slot"));
                };
                match ctx.core.answer(call, slot.local, now) {
                    Ok(media) => {
                        metrics::counter!("calls_total", "outcome" => "answered").increment(1);
                        if let Some(a) = ctx.accounting.as_deref_mut() {
                            let codec = media.as_ref().map(|m| m.codec.encoding_name());
                            a.answered(call, codec, crate::clock::now_micros());
                        }
                        if let Some(m) = &media {
                            fc.pcm_rate = super::leg::pcm_rate(m.codec);
                        }
                        let leg = spawn_leg(
                            call,
                            slot.port,
                            media,
                            setup.rtp_timeout,
                            setup.prompts.clone(),
                            setup.reports.clone(),
                        );
                        let _ = leg.commands.try_send(LegCommand::Mode(LegMode::Silence));
                        ctx.legs.insert(call, leg);
                        fc.answered = true;
                        done(tx, Ok(Reply::Done))
                    }
                    Err(e) => {
                        metrics::counter!("calls_total", "outcome" => "not_acceptable").increment(1);
                        done(tx, failed(format!("answer: {e}")))
                    }
                }
            }
            Request::Ring(d) => {
                if fc.answered {
                    return done(tx, failed("ring: the call is already answered"));
                }
                if !fc.rung {
                    let _ = ctx.core.ring(call, now);
                    if let Some(a) = ctx.accounting.as_deref_mut() {
                        a.ringing(call);
                    }
                    fc.rung = true;
                }
                fc.pending = Some(Pending {
                    wait: Wait::Ring { until: now + d },
                    reply: tx,
                });
            }
            Request::Play { source, barge_in } => {
                let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
                    return done(tx, failed("play: answer the call first"));
                };
                if barge_in && !fc.digits.is_empty() {
                    // Type-ahead: the caller already answered the prompt.
                    return done(tx, Ok(Reply::Played { interrupted: true }));
                }
                let cmd = match source {
                    Source::Prompt(name) => LegCommand::Play(name),
                    Source::Tone(spec) => LegCommand::Tone(spec),
                    Source::Say(text) => {
                        // Spoken off this task; the leg (or the failure) reports it done.
                        spawn_tts(
                            call,
                            text,
                            setup.tts_dir.clone(),
                            fc.pcm_rate,
                            leg.commands.clone(),
                            setup.reports.clone(),
                        );
                        fc.plays_outstanding += 1;
                        fc.play_error = None;
                        fc.pending = Some(Pending {
                            wait: Wait::Play { barge_in },
                            reply: tx,
                        });
                        return;
                    }
                };
                if leg.commands.try_send(cmd).is_err() {
                    return done(tx, failed("play: the media leg is busy"));
                }
                fc.plays_outstanding += 1;
                fc.play_error = None;
                fc.pending = Some(Pending {
                    wait: Wait::Play { barge_in },
                    reply: tx,
                });
            }
            Request::Collect {
                max,
                terminators,
                first,
                between,
            } => {
                fc.pending = Some(Pending {
                    wait: Wait::Collect {
                        max,
                        terminators,
                        deadline: now + first,
                        between,
                        digits: String::new(),
                    },
                    reply: tx,
                });
                Self::feed_digits(fc, now);
            }
            Request::Record { max, beep, silence: _ } => {
                let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
                    return done(tx, failed("record: answer the call first"));
                };
                if let Err(e) = std::fs::create_dir_all(&setup.recordings_dir) {
                    return done(tx, failed(format!("record: {e}")));
                }
                let record = ctx.accounting.as_deref().and_then(|a| a.record(call));
                if record.is_some_and(opted_out_of_recording) {
                    return done(tx, failed("record: the caller opted out of recording"));
                }
                let uuid = uuid::Uuid::now_v7();
                let id = uuid.to_string();
                let file = format!("{id}.wav");
                let path = setup.recordings_dir.join(&file);
                // Filed before a byte is written: the journalled event names the file even if
                // the call or the gateway dies mid-recording, and erasure and retention use it.
                if let Some(a) = ctx.accounting.as_deref_mut() {
                    a.annotate(call, |r| r.recording_id = Some(uuid));
                    a.event(call, "recording", serde_json::json!({ "id": id, "file": file }));
                    if let Some(r) = a.record(call) {
                        let row = crate::cdr::model::RecordingRow {
                            id: uuid,
                            call_id: Some(r.id),
                            room: None,
                            room_session: None,
                            path: file.clone(),
                            started_at: crate::clock::now_micros(),
                            ended_at: None,
                            seconds: None,
                            caller_pseudonym: r.caller.pseudonym.clone(),
                            retention_class: r.retention_class.clone(),
                            expires_at: r.expires_at,
                        };
                        a.journal(crate::cdr::model::JournalEntry::Recording(Box::new(row)));
                    }
                }
                if beep {
                    let _ = leg.commands.try_send(LegCommand::Tone("beep".into()));
                    fc.plays_outstanding += 1;
                }
                let _ = leg.commands.try_send(LegCommand::Record(path));
                fc.digits.clear();
                fc.pending = Some(Pending {
                    wait: Wait::Record {
                        until: now + max,
                        id,
                        stopping: false,
                    },
                    reply: tx,
                });
            }
            Request::Echo { max } => {
                let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
                    return done(tx, failed("echo: answer the call first"));
                };
                let _ = leg.commands.try_send(LegCommand::Mode(LegMode::Echo));
                fc.pending = Some(Pending {
                    wait: Wait::Echo { until: now + max },
                    reply: tx,
                });
            }
            Request::JoinConference { room, role, muted } => {
                if !fc.answered {
                    return done(tx, failed("join_conference: answer the call first"));
                }
                let caller = ctx
                    .accounting
                    .as_deref()
                    .and_then(|a| a.caller_view(call))
                    .map(|(masked, _, _)| masked)
                    .unwrap_or_else(|| "anonymous".into());
                let member = Member::new(call.0, caller, &role, muted, crate::clock::now_micros());
                // A recording already running (one this join starts by policy is announced to
                // the whole room and filed on every member's record by the room events).
                let recording_before = ctx.rooms.get(&room).and_then(|r| r.recording);
                let (session, members, waiting) = match ctx.rooms.join(&room, member) {
                    Ok(joined) => joined,
                    Err(refused) => {
                        let (prompt, reason) = match refused {
                            JoinRefused::Locked => ("conf-locked", "locked"),
                            JoinRefused::Full => ("sorry", "full"),
                        };
                        tracing::info!(call = call.0, room, reason, "room refused the caller");
                        // Tell the caller, then answer the flow.
                        if let Some(leg) = ctx.legs.get(&call) {
                            let _ = leg.commands.try_send(LegCommand::Play(prompt.into()));
                            fc.plays_outstanding += 1;
                        }
                        return done(tx, Ok(Reply::Left { reason: reason.into() }));
                    }
                };
                tracing::info!(call = call.0, room, role, members, "joined the room");
                if let Some(a) = ctx.accounting.as_deref_mut() {
                    a.annotate(call, |r| {
                        r.room = Some(room.clone());
                        r.room_session = Some(session);
                        r.role = Some(role.clone());
                    });
                    a.event(
                        call,
                        "joined_room",
                        serde_json::json!({ "room": room, "role": role, "muted": muted }),
                    );
                }
                // The call's media moves to the room's mixer thread.
                if let (Some(leg), Some(shard), Some(sched)) =
                    (ctx.legs.get(&call), ctx.rooms.shard(&room), ctx.rooms.scheduler())
                {
                    let rate = sched.mixer_config().rate;
                    // A caller who opted out of recording is heard live but left out of the
                    // room's recording.
                    let recorded = !ctx
                        .accounting
                        .as_deref()
                        .and_then(|a| a.record(call))
                        .is_some_and(opted_out_of_recording);
                    let opts = MemberOptions {
                        muted,
                        recorded,
                        ..MemberOptions::default()
                    };
                    // Joining a room being recorded: the recording on the CDR (and the notice).
                    if let (Some(id), Some(a)) = (&recording_before, ctx.accounting.as_deref_mut()) {
                        a.event(
                            call,
                            "room_recording",
                            serde_json::json!({ "id": id, "room": room, "recorded": recorded }),
                        );
                    }
                    let _ = leg.commands.try_send(LegCommand::JoinRoom {
                        shard,
                        room: Arc::from(room.as_str()),
                        opts,
                        rate,
                        waiting,
                    });
                    // After the join, so the room plays it to the member.
                    if recording_before.is_some() {
                        let _ = leg.commands.try_send(LegCommand::Play("conf-recording".into()));
                    }
                    if waiting {
                        let _ = leg.commands.try_send(LegCommand::Play("conf-wait-moderator".into()));
                    } else if members == 1 {
                        let _ = leg.commands.try_send(LegCommand::Play("conf-alone".into()));
                    }
                    if let Some(pcm) = ctx.rooms.render(std::slice::from_ref(&setup.join_tone)) {
                        ctx.rooms.play_room(&room, pcm);
                    }
                }
                fc.leaving = None;
                fc.pending = Some(Pending {
                    wait: Wait::Join,
                    reply: tx,
                });
            }
            Request::Transfer { target } => {
                if !fc.answered {
                    return done(tx, failed("transfer: answer the call first"));
                }
                // A number goes back to the carrier in E.164; URIs are used as given.
                let target = crate::number::normalise(&target).unwrap_or(target);
                match ctx.core.refer(call, &target, now) {
                    Ok(()) => {
                        if let Some(a) = ctx.accounting.as_deref_mut() {
                            a.event(
                                call,
                                "transfer",
                                serde_json::json!({ "to": crate::privacy::mask_number(&target) }),
                            );
                        }
                        fc.pending = Some(Pending {
                            wait: Wait::Transfer {
                                until: now + TRANSFER_TIMEOUT,
                            },
                            reply: tx,
                        });
                    }
                    Err(e) => done(tx, failed(format!("transfer: {e}"))),
                }
            }
            Request::Hangup { cause } => {
                let r = if fc.answered {
                    ctx.core.hangup(call, now)
                } else {
                    ctx.core.reject(call, status_for_cause(cause), now)
                };
                if let Some(a) = ctx.accounting.as_deref_mut() {
                    a.annotate(call, |r| {
                        r.q850_cause = Some(if cause < 128 { cause as i16 } else { 16 })
                    });
                }
                fc.hung_up.store(true, Ordering::Relaxed);
                match r {
                    Ok(()) => done(tx, Ok(Reply::Done)),
                    Err(_) => done(tx, Err(PortError::HungUp)),
                }
            }
            Request::RoomRole { room, pin } => {
                let role = ctx.rooms.role_of(&room, &pin).unwrap_or("");
                done(tx, Ok(Reply::Role(role.to_string())))
            }
            Request::Note(note) => done(tx, Self::note(setup, call, note, ctx)),
            Request::Log(text) => {
                tracing::info!(call = call.0, "flow log: {text}");
                done(tx, Ok(Reply::Done))
            }
        }
    }

    fn note(setup: &LegSetup, call: CallRef, note: Note, ctx: &mut Ctx) -> Result<Reply, PortError> {
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
            Note::Consent(scope) => a.annotate(call, |r| {
                if let Some(m) = r.consent.as_object_mut() {
                    m.insert(scope, true.into());
                }
            }),
            Note::OptOut(scope) => {
                a.annotate(call, |r| {
                    if let Some(m) = r.consent.as_object_mut() {
                        m.insert(scope.clone(), false.into());
                    }
                });
                a.event(call, "opt_out", serde_json::json!({ "scope": scope, "source": "flow" }));
                match (a.caller_pseudonym(call), setup.pool.clone()) {
                    (Some(pseudonym), Some(pool)) => {
                        tokio::spawn(keep_trying("opt-out registry write", move || {
                            let (pool, pseudonym, scope) = (pool.clone(), pseudonym.clone(), scope.clone());
                            async move { crate::cdr::subject::opt_out(&pool, &pseudonym, &scope, "flow").await }
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
            a.event(call, "left_room", serde_json::json!({ "room": room, "reason": reason }));
        }
        if left > 0
            && let Some(pcm) = ctx.rooms.render(std::slice::from_ref(&self.setup.leave_tone))
        {
            ctx.rooms.play_room(&room, pcm);
        }
    }
}

/// Speaks `text` with espeak-ng into `dir` (cached by the text's SHA-256), reads and
/// resamples it to the leg's `rate` off the gateway task, then has the leg play it. A missing
/// espeak-ng or a failed synthesis is reported as a playback that could not start, so the
/// flow's `say` fails with the reason.
fn spawn_tts(
    call: CallRef,
    text: String,
    dir: PathBuf,
    rate: u32,
    leg: mpsc::Sender<LegCommand>,
    reports: mpsc::Sender<LegReport>,
) {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{name}.wav"));
    tokio::spawn(async move {
        let target = path.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<Arc<[i16]>, String> {
            let load = |p: &std::path::Path| {
                crate::media_files::prompts::read_mono_wav(p)
                    .map(|(samples, from)| crate::media::prompt::resampled(&samples, from, rate))
                    .map_err(|e| e.to_string())
            };
            if target.exists() {
                return load(&target);
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let tmp = target.with_extension("tmp.wav");
            let out = std::process::Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "160", "-w"])
                .arg(&tmp)
                .arg("--")
                .arg(&text)
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => "espeak-ng is not installed (Debian package espeak-ng)".to_string(),
                    _ => format!("espeak-ng: {e}"),
                })?;
            if !out.status.success() {
                return Err(format!(
                    "espeak-ng failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
            load(&target)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match made {
            Ok(pcm) => {
                let what = format!("say:{}", path.display());
                if leg.send(LegCommand::PlayPcm { pcm, what }).await.is_err() {
                    // The call ended meanwhile: nothing waits for it.
                }
            }
            Err(why) => {
                tracing::warn!(call = call.0, error = %why, "text-to-speech failed");
                let _ = reports
                    .send(LegReport::PlaybackDone {
                        call,
                        what: format!("say:{why}"),
                        ok: false,
                    })
                    .await;
            }
        }
    });
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
