//! A simulated caller for testing flows without a phone (`tolk flow run`, and tests). It
//! answers every [`Request`] in virtual time: prompts take their real length (read from the
//! sounds catalog, so an unknown prompt fails as it would on a call), keypad digits come from
//! a script of key presses, and the caller can hang up after a set time. Every request and its
//! result goes into a transcript.
//!
//! The caller listens to each prompt to its end, then presses the next keys, 250 ms apart,
//! while the flow collects. A `,` in the keys means "press nothing this time" (the collection
//! times out); a `w` waits one second before the next key.

use super::port::{CallPort, Note, PortError, Reply, Request, Source};
use crate::media::tone::{self, ToneGenerator};
use crate::media_files::prompts::PromptCatalog;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY_GAP: Duration = Duration::from_millis(250);

/// What the simulation saw, shared with whoever started it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SimReport {
    pub transcript: Vec<String>,
    pub notes: Vec<Note>,
    pub answered: bool,
    /// Hung up by the flow with this cause.
    pub hangup_cause: Option<u16>,
    pub caller_hung_up: bool,
    /// Rooms joined.
    pub rooms: Vec<String>,
    pub elapsed: Duration,
}

/// Answers `room_role(room, pin)` for a simulated call: the role, if the PIN opens the room.
pub type RoomRoles = Arc<dyn Fn(&str, &str) -> Option<&'static str> + Send + Sync>;

/// A simulated call.
pub struct SimulatedCall {
    now: Duration,
    keys: VecDeque<char>,
    hangup_at: Option<Duration>,
    catalog: Option<Arc<PromptCatalog>>,
    report: Arc<Mutex<SimReport>>,
    echo: bool,
    ended: bool,
    /// Without it no PIN opens any room.
    room_roles: Option<RoomRoles>,
}

impl SimulatedCall {
    /// `keys`: the keys the caller will press; `hangup_after`: when the caller hangs up;
    /// `catalog`: prompt lengths (without it every prompt takes one second); `echo`: print
    /// each transcript line as it happens.
    pub fn new(
        keys: &str,
        hangup_after: Option<Duration>,
        catalog: Option<Arc<PromptCatalog>>,
        echo: bool,
    ) -> (SimulatedCall, Arc<Mutex<SimReport>>) {
        let report = Arc::new(Mutex::new(SimReport::default()));
        (
            SimulatedCall {
                now: Duration::ZERO,
                keys: keys.chars().filter(|c| !c.is_whitespace()).collect(),
                hangup_at: hangup_after,
                catalog,
                report: report.clone(),
                echo,
                ended: false,
                room_roles: None,
            },
            report,
        )
    }

    /// Room PINs this caller's flow may check (`room_role`), as rooms.toml would give them.
    pub fn with_room_roles(mut self, roles: RoomRoles) -> SimulatedCall {
        self.room_roles = Some(roles);
        self
    }

    fn line(&mut self, text: String) {
        let line = format!("[{:>7.2}s] {text}", self.now.as_secs_f64());
        if self.echo {
            println!("{line}");
        }
        if let Ok(mut r) = self.report.lock() {
            r.transcript.push(line);
            r.elapsed = self.now;
        }
    }

    fn update(&self, f: impl FnOnce(&mut SimReport)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    /// Advances virtual time by `d`; `Err(HungUp)` if the caller hangs up on the way.
    fn spend(&mut self, d: Duration) -> Result<(), PortError> {
        if let Some(at) = self.hangup_at
            && self.now + d >= at
        {
            self.now = self.now.max(at);
            self.caller_hangs_up();
            return Err(PortError::HungUp);
        }
        self.now += d;
        Ok(())
    }

    fn caller_hangs_up(&mut self) {
        if !self.ended {
            self.ended = true;
            self.line("caller hangs up".into());
            self.update(|r| r.caller_hung_up = true);
        }
    }

    fn opted_out_of_recording(&self) -> bool {
        self.report
            .lock()
            .map(|r| r.notes.contains(&Note::OptOut("record".into())))
            .unwrap_or(false)
    }

    fn length_of(&self, source: &Source) -> Result<Duration, PortError> {
        match source {
            Source::Prompt(name) => match &self.catalog {
                Some(c) => c
                    .pcm(name, 8000)
                    .map(|pcm| Duration::from_secs_f64(pcm.len() as f64 / 8000.0))
                    .map_err(|e| PortError::Failed(format!("play: {e}"))),
                None => Ok(Duration::from_secs(1)),
            },
            // About 14 characters a second, as espeak-ng speaks at its default rate.
            Source::Say(text) => Ok(Duration::from_millis(70 * text.chars().count() as u64)),
            Source::Tone(spec) => {
                let spec = tone::named(spec).unwrap_or(spec);
                let mut g = ToneGenerator::new(spec, 8000, -12.0, false)
                    .map_err(|e| PortError::Failed(format!("tone: {e}")))?;
                let mut frame = Vec::with_capacity(160);
                let mut frames = 0u64;
                // A repeating or endless spec would play forever: count at most a minute.
                while frames < 3000 && g.next_frame(160, &mut frame) {
                    frames += 1;
                }
                Ok(Duration::from_millis(frames * 20))
            }
        }
    }

    fn collect(
        &mut self,
        max: usize,
        terminators: &str,
        first: Duration,
        between: Duration,
    ) -> Result<Reply, PortError> {
        let mut digits = String::new();
        loop {
            let wait = if digits.is_empty() { first } else { between };
            match self.keys.front().copied() {
                None => {
                    self.spend(wait)?;
                    return Ok(timed_out(digits));
                }
                Some(',') => {
                    self.keys.pop_front();
                    self.spend(wait)?;
                    return Ok(timed_out(digits));
                }
                Some('w') => {
                    self.keys.pop_front();
                    let pause = Duration::from_secs(1);
                    if pause >= wait {
                        self.spend(wait)?;
                        return Ok(timed_out(digits));
                    }
                    self.spend(pause)?;
                }
                Some(key) => {
                    self.keys.pop_front();
                    self.spend(KEY_GAP)?;
                    if terminators.contains(key) {
                        return Ok(Reply::Digits {
                            digits,
                            terminator: Some(key),
                            timed_out: false,
                        });
                    }
                    digits.push(key);
                    if digits.chars().count() >= max {
                        return Ok(Reply::Digits {
                            digits,
                            terminator: None,
                            timed_out: false,
                        });
                    }
                }
            }
        }
    }
}

fn timed_out(digits: String) -> Reply {
    Reply::Digits {
        digits,
        terminator: None,
        timed_out: true,
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::Prompt(p) => format!("play {p}"),
        Source::Say(t) => format!("say {t:?}"),
        Source::Tone(t) => format!("tone {t}"),
    }
}

impl CallPort for SimulatedCall {
    fn request(&mut self, req: Request) -> Result<Reply, PortError> {
        if self.ended {
            return Err(PortError::HungUp);
        }
        if self.hangup_at.is_some_and(|at| self.now >= at) {
            self.caller_hangs_up();
            return Err(PortError::HungUp);
        }
        match req {
            Request::Answer => {
                self.line("answer".into());
                self.update(|r| r.answered = true);
                Ok(Reply::Done)
            }
            Request::Ring(d) => {
                self.line(format!("ring {:.1} s", d.as_secs_f64()));
                self.spend(d)?;
                Ok(Reply::Done)
            }
            Request::Play { source, barge_in: _ } => {
                let len = match self.length_of(&source) {
                    Ok(l) => l,
                    Err(e) => {
                        self.line(format!("{} -> error: {e}", describe(&source)));
                        return Err(e);
                    }
                };
                self.line(format!("{} ({:.1} s)", describe(&source), len.as_secs_f64()));
                self.spend(len)?;
                Ok(Reply::Played { interrupted: false })
            }
            Request::Collect {
                max,
                terminators,
                first,
                between,
            } => {
                let reply = self.collect(max, &terminators, first, between)?;
                if let Reply::Digits {
                    digits,
                    terminator,
                    timed_out,
                } = &reply
                {
                    let how = match (terminator, timed_out) {
                        (Some(t), _) => format!(", ended by {t}"),
                        (None, true) => ", timed out".to_string(),
                        _ => String::new(),
                    };
                    self.line(format!("collect -> {digits:?}{how}"));
                }
                Ok(reply)
            }
            Request::Record { .. } if self.opted_out_of_recording() => {
                self.line("record -> refused: the caller opted out of recording".into());
                Err(PortError::Failed("record: the caller opted out of recording".into()))
            }
            Request::Record { max, beep, silence } => {
                if beep {
                    self.spend(Duration::from_millis(200))?;
                }
                // The simulated caller speaks for two seconds, then falls silent.
                let speech = Duration::from_secs(2).min(max);
                self.spend(speech + silence.min(max - speech))?;
                self.line(format!("record -> {:.1} s", speech.as_secs_f64()));
                Ok(Reply::Recorded {
                    id: "simulated".into(),
                    seconds: speech.as_secs_f64(),
                })
            }
            Request::Echo { max } => {
                self.line(format!("echo up to {:.0} s", max.as_secs_f64()));
                self.spend(max)?;
                Ok(Reply::Done)
            }
            Request::RoomRole { room, pin } => {
                let role = self.room_roles.as_ref().and_then(|f| f(&room, &pin)).unwrap_or("");
                Ok(Reply::Role(role.to_string()))
            }
            Request::JoinConference { room, role, muted } => {
                self.line(format!(
                    "join_conference {room} as {role}{}",
                    if muted { ", muted" } else { "" }
                ));
                self.update(|r| r.rooms.push(room.clone()));
                // Alone in a simulated room: stay until the caller hangs up, else an hour.
                self.spend(Duration::from_secs(3600))?;
                self.line(format!("left {room}: ended"));
                Ok(Reply::Left { reason: "ended".into() })
            }
            Request::JoinInterpretation { room, role, language } => {
                let hears = language.map(|l| format!(", hearing {l}")).unwrap_or_default();
                self.line(format!("join_interpretation {room} as {role}{hears}"));
                self.update(|r| r.rooms.push(room.clone()));
                self.spend(Duration::from_secs(3600))?;
                self.line(format!("left {room}: ended"));
                Ok(Reply::Left { reason: "ended".into() })
            }
            Request::Transfer { target } => {
                self.line(format!("transfer to {target}"));
                Ok(Reply::Done)
            }
            Request::Hangup { cause } => {
                self.line(format!("hangup (cause {cause})"));
                self.ended = true;
                self.update(|r| r.hangup_cause = Some(cause));
                Ok(Reply::Done)
            }
            Request::Note(n) => {
                self.line(match &n {
                    Note::Tag { key, value } => format!("tag {key} = {value}"),
                    Note::Retention(c) => format!("retention {c}"),
                    Note::OptOut(s) => format!("opt_out {s}"),
                    Note::Consent(s) => format!("consent {s}"),
                    Note::FlowError(why) => format!("flow error: {why}"),
                });
                self.update(|r| r.notes.push(n));
                Ok(Reply::Done)
            }
            Request::Log(text) => {
                // As on a real call: a transcript is output too, and gets pasted around.
                self.line(format!("log: {}", crate::privacy::mask_numbers_in(&text)));
                Ok(Reply::Done)
            }
        }
    }
}

/// Runs `flow` from `lib` against `caller` (the harness behind `tolk flow run`); returns how
/// the flow ended and what the caller saw.
pub fn simulate(
    lib: &super::FlowLibrary,
    flow: &str,
    info: super::port::CallInfo,
    caller: SimulatedCall,
) -> (super::engine::FlowEnd, SimReport) {
    let report = caller.report.clone();
    let hung_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (end, _port) = super::runner::run_flow(lib, flow, Box::new(caller), info, hung_up);
    let report = report.lock().map(|r| r.clone()).unwrap_or_default();
    (end, report)
}
