//! Conference rooms: the registry of rooms and their members (who is in which room, with
//! which role, muted or not, talking or not) that flows join, the keypad and the admin API
//! act on, and the mixer threads that make members hear each other.
//!
//! Owns: membership and room state ([`Rooms`]), the keypad map ([`conference`]), the pure
//! [`mixer`] and its threads ([`scheduler`]). Must not: signal (the SIP core does).

pub mod batch;
pub mod conference;
mod defined;
pub mod event;
pub mod interpretation;
mod interpreting;
pub mod mixer;
pub mod pin_guard;
pub mod pins;
pub mod recording;
pub mod scheduler;
pub mod settings;

pub use event::{RoomEvent, RoomEventKind};
pub use interpreting::SeatRefused;
use pins::Pins;
use scheduler::{Command, MemberChange, Scheduler, Shard};
use settings::RoomSettings;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A member as admins see them: never the number in clear.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Member {
    /// The call (gateway-local id).
    pub call: u64,
    /// `+1555010****` or `anonymous`.
    pub caller: String,
    pub role: String,
    pub muted: bool,
    pub deaf: bool,
    /// On hold (re-INVITE sendonly/inactive): neither heard nor sent anything.
    pub held: bool,
    pub talking: bool,
    /// Listen volume step (dB, -12..=12) set by the keypad.
    pub listen_db: i8,
    pub talk_db: i8,
    /// Unix microseconds.
    pub joined_at: i64,
}

impl Member {
    pub fn new(call: u64, caller: String, role: &str, muted: bool, joined_at: i64) -> Member {
        Member {
            call,
            caller,
            role: role.to_string(),
            muted,
            deaf: false,
            held: false,
            talking: false,
            listen_db: 0,
            talk_db: 0,
            joined_at,
        }
    }

    pub fn is_moderator(&self) -> bool {
        self.role == "moderator"
    }
}

/// One room with the session that runs while it has members.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Room {
    pub name: String,
    /// A new session starts when the first member joins an empty room.
    pub session: uuid::Uuid,
    /// No new participants (moderators may still join).
    pub locked: bool,
    /// Participants hear music until a moderator joins (`wait_for_moderator`).
    pub waiting: bool,
    /// The last moderator left an `end_with_moderator` room: its members are being taken out.
    pub ended: bool,
    /// The most members at once in this session.
    pub peak_members: usize,
    /// The recording in progress (its id), if any.
    pub recording: Option<uuid::Uuid>,
    pub recording_paused: bool,
    pub members: Vec<Member>,
    /// An interpretation room's booths, channels and who hears what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<Box<interpretation::Interpretation>>,
}

/// Why PINs (or a room's settings, `defined`) were not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// The request is wrong (the message says how).
    Invalid(String),
    /// The PIN file could not be written: nothing changed.
    NotKept(String),
}

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinError::Invalid(m) | PinError::NotKept(m) => f.write_str(m),
        }
    }
}

/// Why a member could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    Locked,
    Full,
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    NoRoom,
    NoMember,
}

/// Where room events go: to observers (the admin event stream; a slow one loses the oldest
/// and is told how many) and to the one ledger, which must see every event it files, so its
/// channel never drops one (events come at the rate of joins, leaves and recordings).
#[derive(Clone)]
struct EventOut {
    observers: tokio::sync::broadcast::Sender<RoomEvent>,
    ledger: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<RoomEvent>>>>,
}

impl EventOut {
    fn send(&self, e: RoomEvent) {
        if e.for_ledger()
            && let Some(ledger) = self.ledger.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            let _ = ledger.send(e.clone());
        }
        let _ = self.observers.send(e);
    }
}

/// What rooms need to record and announce.
#[derive(Clone, Default)]
pub struct RoomMedia {
    pub prompts: Option<Arc<crate::media_files::prompts::PromptCatalog>>,
    pub recordings_dir: std::path::PathBuf,
    /// "wav" or "ogg".
    pub format: crate::config::RecordFormat,
}

/// Why a recording could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    NoRoom,
    AlreadyRecording,
    NotRecording,
    /// No mixer threads (tests without media).
    Unavailable,
}

/// Every room with members, shared by the call path and the admin API. With a
/// [`Scheduler`], changes reach the room's mixer thread too.
#[derive(Clone)]
pub struct Rooms {
    rooms: Arc<Mutex<BTreeMap<String, Room>>>,
    scheduler: Option<Arc<Scheduler>>,
    max_members: Option<usize>,
    events: EventOut,
    /// rooms.toml (the flows' table), replaced on each dialplan (re)load.
    settings: Arc<Mutex<settings::RoomTable>>,
    /// PINs set through the admin API: kept across dialplan reloads.
    pins: Arc<Mutex<HashMap<String, Pins>>>,
    /// Where those PINs are kept across restarts ([`pins`]); none in tests.
    pins_file: Option<Arc<std::path::Path>>,
    /// The key PINs set through the API (and in API-defined rooms) are kept under.
    pin_key: pins::PinKey,
    /// rooms.toml as last loaded (before the API's definitions and PINs go over it).
    base: Arc<Mutex<HashMap<String, RoomSettings>>>,
    /// Rooms defined through the admin API ([`defined`]), and where they are kept.
    defined: Arc<Mutex<defined::Definitions>>,
    defined_file: Option<Arc<std::path::Path>>,
    /// Why members taken out by someone else left (their flows' `join_conference` returns it).
    reasons: Arc<Mutex<HashMap<u64, &'static str>>>,
    media: Arc<Mutex<RoomMedia>>,
    /// Wrong PINs counted across calls ([`pin_guard`]).
    guard: Arc<Mutex<pin_guard::PinGuard>>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            rooms: Arc::default(),
            scheduler: None,
            max_members: None,
            events: EventOut {
                observers: tokio::sync::broadcast::channel(1024).0,
                ledger: Arc::default(),
            },
            settings: Arc::new(Mutex::new(settings::table(HashMap::new()))),
            pins: Arc::default(),
            pins_file: None,
            pin_key: pins::PinKey::default(),
            base: Arc::default(),
            defined: Arc::default(),
            defined_file: None,
            reasons: Arc::default(),
            media: Arc::default(),
            guard: Arc::default(),
        }
    }
}

/// dB to a linear gain.
pub fn gain(db: i8) -> f32 {
    10f32.powf(db as f32 / 20.0)
}

impl Rooms {
    /// Rooms whose members' media is mixed on `scheduler`'s threads.
    pub fn with_scheduler(scheduler: Scheduler, max_members: usize) -> Rooms {
        Rooms {
            scheduler: Some(Arc::new(scheduler)),
            max_members: Some(max_members),
            ..Rooms::default()
        }
    }

    /// Keeps the PINs set through the admin API in `path` (`data_dir/rooms/pins.json`) and
    /// restores those kept there; returns the problems found in the file (each entry that
    /// could not be restored, with the file named).
    /// PINs kept in clear by an earlier version are rewritten as digests.
    pub fn keep_pins_in(&mut self, path: std::path::PathBuf) -> Vec<String> {
        let (kept, mut problems) = pins::load(&path);
        let digested: HashMap<String, Pins> = kept
            .iter()
            .map(|(room, (pin, moderator))| {
                let keep = |p: &Option<String>| p.as_deref().map(|p| self.pin_key.stored(p));
                (room.clone(), (keep(pin), keep(moderator)))
            })
            .collect();
        if digested != kept
            && let Err(e) = pins::save(&path, &digested)
        {
            problems.push(format!(
                "{}: the PINs could not be rewritten as digests: {e}",
                path.display()
            ));
        }
        *self.pins.lock().unwrap_or_else(|p| p.into_inner()) = digested;
        self.pins_file = Some(Arc::from(path));
        problems
    }

    /// Keeps the PINs set from now on (API PINs, API-defined rooms) as digests under `key`
    /// (`data_dir/keys/pins.key`); before [`keep_pins_in`](Rooms::keep_pins_in).
    pub fn keep_pins_under(&mut self, key: crate::keys::SecretKey) {
        self.pin_key = pins::PinKey::new(key);
    }

    /// Room events from now on (a slow reader loses the oldest, and is told so).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RoomEvent> {
        self.events.observers.subscribe()
    }

    /// Every room event the CDRs file (all but talking and quiet), from now on, losing none.
    /// There is one ledger: a second call replaces the first.
    pub fn ledger(&self) -> tokio::sync::mpsc::UnboundedReceiver<RoomEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.events.ledger.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    fn emit(&self, room: &str, call: Option<u64>, kind: RoomEventKind) {
        self.events.send(RoomEvent {
            room: room.to_string(),
            call,
            kind,
            at: crate::clock::now_micros(),
        });
    }

    /// Sets what recording and announcements need (prompts, where recordings go).
    pub fn set_media(&self, media: RoomMedia) {
        *self.media.lock().unwrap_or_else(|p| p.into_inner()) = media;
    }

    /// PCM of prompts or tones at the rooms' mixing rate (None without mixer threads).
    pub fn render(&self, names: &[String]) -> Option<Arc<[i16]>> {
        let rate = self.scheduler.as_ref()?.mixer_config().rate;
        let prompts = self.media.lock().unwrap_or_else(|p| p.into_inner()).prompts.clone();
        conference::render(prompts.as_deref(), names, rate)
    }

    /// Starts recording a room's mix (members who opted out are left out); everyone hears
    /// the notice. Returns the recording's id.
    pub fn start_recording(&self, room: &str) -> Result<String, RecordError> {
        if self.scheduler.is_none() {
            return Err(RecordError::Unavailable);
        }
        let media = self.media.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let id = uuid::Uuid::now_v7();
        let ext = media.format.extension();
        let file = format!("room-{id}.{ext}");
        {
            let mut rooms = self.lock();
            let r = rooms.get_mut(room).ok_or(RecordError::NoRoom)?;
            if r.recording.is_some() {
                return Err(RecordError::AlreadyRecording);
            }
            r.recording = Some(id);
            r.recording_paused = false;
        }
        let _ = crate::private_files::create_dir(&media.recordings_dir);
        let events = self.events.clone();
        let (room_name, done_file) = (room.to_string(), file.clone());
        let on_done: recording::OnDone = Box::new(move |seconds, error| {
            events.send(RoomEvent {
                room: room_name,
                call: None,
                kind: RoomEventKind::RecordingDone {
                    id,
                    file: done_file,
                    seconds,
                    error,
                },
                at: crate::clock::now_micros(),
            });
        });
        self.send(
            room,
            Command::Record {
                room: Arc::from(room),
                path: media.recordings_dir.join(&file),
                on_done,
                notice: self.render(&["conf-recording".to_string()]),
            },
        );
        self.emit(room, None, RoomEventKind::Recording { id, file });
        Ok(id.to_string())
    }

    /// Stops a room's recording (the file is finalised).
    pub fn stop_recording(&self, room: &str) -> Result<(), RecordError> {
        let id = {
            let mut rooms = self.lock();
            let r = rooms.get_mut(room).ok_or(RecordError::NoRoom)?;
            r.recording_paused = false;
            r.recording.take().ok_or(RecordError::NotRecording)?
        };
        self.send(room, Command::StopRecording { room: Arc::from(room) });
        self.emit(room, None, RoomEventKind::RecordingStopped { id });
        Ok(())
    }

    /// Pauses or resumes a room's recording.
    pub fn pause_recording(&self, room: &str, paused: bool) -> Result<(), RecordError> {
        let id = {
            let mut rooms = self.lock();
            let r = rooms.get_mut(room).ok_or(RecordError::NoRoom)?;
            let id = r.recording.ok_or(RecordError::NotRecording)?;
            r.recording_paused = paused;
            id
        };
        self.send(
            room,
            Command::PauseRecording {
                room: Arc::from(room),
                paused,
            },
        );
        let kind = if paused {
            RoomEventKind::RecordingPaused { id }
        } else {
            RoomEventKind::RecordingResumed { id }
        };
        self.emit(room, None, kind);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn scheduler(&self) -> Option<&Scheduler> {
        self.scheduler.as_deref()
    }

    /// The mixer thread of `room`.
    pub fn shard(&self, room: &str) -> Option<Shard> {
        self.scheduler.as_ref().map(|s| s.shard_for(room))
    }

    fn send(&self, room: &str, cmd: Command) {
        if let Some(shard) = self.shard(room) {
            let _ = shard.send(cmd);
        }
    }

    /// Takes the rooms.toml table of a (re)loaded dialplan; rooms defined through the admin
    /// API, then PINs set through it, are applied over it.
    pub fn configure(&self, table: settings::RoomTable) {
        // The PIN lock is held throughout, so a PIN set meanwhile is not lost (set_pins
        // holds it too).
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(mut t) = table.write() {
            *self.base.lock().unwrap_or_else(|p| p.into_inner()) = t.clone();
            self.with_definitions(&mut t);
            for (room, (pin, moderator_pin)) in pins.iter() {
                let s = t.entry(room.clone()).or_default();
                s.pin = pin.clone();
                // A room rooms.toml now makes wait for (or end with) its moderator keeps
                // rooms.toml's moderator PIN over an API-set "none": without one nobody
                // could ever be its moderator.
                let needs_moderator = s.wait_for_moderator || s.end_with_moderator;
                if moderator_pin.is_some() || !needs_moderator {
                    s.moderator_pin = moderator_pin.clone();
                }
            }
        }
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// The role `pin` gives in `room` (rooms.toml with API-set PINs over it), if any.
    pub fn role_of(&self, room: &str, pin: &str) -> Option<&'static str> {
        let table = self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        settings::role_in(&table, room, pin, &self.pin_key)
    }

    /// The booth an interpreter's PIN names in an interpretation room, if it is one.
    pub fn booth_of(&self, room: &str, pin: &str) -> Option<u8> {
        let s = self.settings(room);
        let entered = |stored: &str| self.pin_key.matches(stored, pin);
        match s
            .interpretation
            .as_ref()?
            .role_of(&entered, s.moderator_pin.as_deref())?
        {
            interpretation::Role::Interpreter { booth } => Some(booth),
            _ => None,
        }
    }

    /// A room's settings (the defaults for rooms not in rooms.toml).
    pub fn settings(&self, room: &str) -> RoomSettings {
        let table = self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        table.read().ok().and_then(|t| t.get(room).cloned()).unwrap_or_default()
    }

    /// Sets a room's PINs at run time (the admin API); flows see them at once and they
    /// outlive dialplan reloads and, once written to the PIN file, restarts. `None` removes a
    /// PIN. Nothing changes when the file cannot be written.
    pub fn set_pins(&self, room: &str, pin: Option<String>, moderator_pin: Option<String>) -> Result<(), PinError> {
        for p in pin.iter().chain(moderator_pin.iter()) {
            settings::valid_pin(p).map_err(PinError::Invalid)?;
        }
        if pin.is_some() && pin == moderator_pin {
            return Err(PinError::Invalid("pin and moderator_pin must differ".into()));
        }
        if room.is_empty() || room == "events" {
            return Err(PinError::Invalid("give a room name (not `events`)".into()));
        }
        let current = self.settings(room);
        if moderator_pin.is_none() && (current.wait_for_moderator || current.end_with_moderator) {
            return Err(PinError::Invalid(
                "this room waits for or ends with its moderator: it needs a moderator_pin".into(),
            ));
        }
        // Kept as digests from here on: in memory, in the file and in the flows' table.
        let pin = pin.map(|p| self.pin_key.stored(&p));
        let moderator_pin = moderator_pin.map(|p| self.pin_key.stored(&p));
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.pins_file {
            let mut next = pins.clone();
            next.insert(room.to_string(), (pin.clone(), moderator_pin.clone()));
            pins::save(path, &next)
                .map_err(|e| PinError::NotKept(format!("cannot keep the PINs in {}: {e}", path.display())))?;
        }
        pins.insert(room.to_string(), (pin.clone(), moderator_pin.clone()));
        let table = self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Ok(mut t) = table.write() {
            let s = t.entry(room.to_string()).or_default();
            s.pin = pin;
            s.moderator_pin = moderator_pin;
        }
        drop(pins);
        Ok(())
    }

    /// Adds a member; returns the room session, how many members the room now has, and
    /// whether the room waits for a moderator. A locked room takes moderators only; a full
    /// room nobody.
    pub fn join(&self, room: &str, member: Member) -> Result<(uuid::Uuid, usize, bool), JoinRefused> {
        let settings = self.settings(room);
        let max = match (settings.max_members, self.max_members) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut rooms = self.lock();
        if let Some(r) = rooms.get(room) {
            if r.locked && !member.is_moderator() {
                return Err(JoinRefused::Locked);
            }
            if max.is_some_and(|max| r.members.len() >= max) {
                return Err(JoinRefused::Full);
            }
        }
        let r = rooms.entry(room.to_string()).or_insert_with(|| Room {
            name: room.to_string(),
            session: uuid::Uuid::now_v7(),
            locked: false,
            waiting: false,
            ended: false,
            peak_members: 0,
            recording: None,
            recording_paused: false,
            members: Vec::new(),
            interpretation: None,
        });
        r.members.retain(|m| m.call != member.call);
        let call = member.call;
        let moderator = member.is_moderator();
        r.members.push(member);
        r.peak_members = r.peak_members.max(r.members.len());
        let new_session = r.members.len() == 1 && r.peak_members == 1;
        let was_waiting = r.waiting;
        r.waiting = settings.wait_for_moderator && !r.members.iter().any(|m| m.is_moderator());
        let joined = (r.session, r.members.len(), r.waiting);
        let members = r.members.len();
        drop(rooms);
        if new_session {
            self.emit(room, Some(call), RoomEventKind::SessionStarted { session: joined.0 });
        }
        self.emit(room, Some(call), RoomEventKind::Joined);
        // A moderator arrived: the room starts (the first member's own join carries the
        // waiting state to the mixer).
        if was_waiting != joined.2 && members > 1 {
            self.set_waiting(room, joined.2);
        }
        // Recording by policy: from the first member, or from the first moderator.
        let start = match settings.record {
            settings::RecordPolicy::Always => true,
            settings::RecordPolicy::Moderator => moderator,
            settings::RecordPolicy::Manual => false,
        };
        if start && self.get(room).is_some_and(|r| r.recording.is_none()) {
            let _ = self.start_recording(room);
        }
        Ok(joined)
    }

    fn set_waiting(&self, room: &str, waiting: bool) {
        self.send(
            room,
            Command::Waiting {
                room: Arc::from(room),
                waiting,
            },
        );
        self.emit(
            room,
            None,
            if waiting {
                RoomEventKind::Waiting
            } else {
                RoomEventKind::Started
            },
        );
    }

    /// Why `call` was taken out of its room by someone else ("ejected" when not recorded).
    pub fn take_reason(&self, call: u64) -> &'static str {
        self.reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call)
            .unwrap_or("ejected")
    }

    /// Removes a call from whatever room it is in; an empty room ends its session. Returns
    /// the room's name and how many members are left.
    pub fn leave(&self, call: u64) -> Option<(String, usize)> {
        let mut rooms = self.lock();
        let name = rooms
            .iter()
            .find(|(_, r)| r.members.iter().any(|m| m.call == call))
            .map(|(n, _)| n.clone())?;
        let (left, unseated) = rooms.get_mut(&name).map(|r| {
            r.members.retain(|m| m.call != call);
            (r.members.len(), interpreting::unseat(r, call))
        })?;
        let ended_session = if left == 0 { rooms.remove(&name) } else { None };
        // A reason recorded for this call is used up (or moot: it hung up).
        self.reasons.lock().unwrap_or_else(|p| p.into_inner()).remove(&call);
        // The last moderator left: the room ends (end_with_moderator), or waits again.
        let settings = self.settings(&name);
        let mut ending = Vec::new();
        let mut wait_again = false;
        if let Some(r) = rooms.get_mut(&name)
            && (settings.end_with_moderator || settings.wait_for_moderator)
            && !r.members.iter().any(|m| m.is_moderator())
        {
            if settings.end_with_moderator {
                // Once: the members' own leaving must not end it again.
                if !r.ended {
                    r.ended = true;
                    ending = r.members.iter().map(|m| m.call).collect();
                }
            } else if !r.waiting {
                r.waiting = true;
                wait_again = true;
            }
        }
        drop(rooms);
        if let Some(d) = unseated.filter(|_| left > 0) {
            self.carry_out_later(&name, d);
        }
        self.emit(&name, Some(call), RoomEventKind::Left);
        if let Some(r) = ended_session {
            let kind = RoomEventKind::SessionEnded {
                session: r.session,
                peak_members: r.peak_members,
            };
            self.emit(&name, None, kind);
        }
        if wait_again {
            self.set_waiting(&name, true);
        }
        if !ending.is_empty() {
            self.emit(&name, None, RoomEventKind::Ended);
            let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            for c in &ending {
                reasons.insert(*c, "ended");
            }
            drop(reasons);
            for c in ending {
                self.send(&name, Command::Leave { call: c });
            }
        }
        Some((name, left))
    }

    /// A snapshot of every room with members, by name.
    pub fn list(&self) -> Vec<Room> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, room: &str) -> Option<Room> {
        self.lock().get(room).cloned()
    }

    /// The room `call` is in and its member entry.
    pub fn member(&self, call: u64) -> Option<(String, Member)> {
        self.lock().values().find_map(|r| {
            r.members
                .iter()
                .find(|m| m.call == call)
                .map(|m| (r.name.clone(), m.clone()))
        })
    }

    /// Changes one member's entry (by call) and tells its mixer thread what changed.
    pub fn update(&self, call: u64, f: impl FnOnce(&mut Member)) -> Result<Member, ControlError> {
        let (room, before, after) = {
            let mut rooms = self.lock();
            let (room, m) = rooms
                .values_mut()
                .find_map(|r| {
                    let name = r.name.clone();
                    r.members.iter_mut().find(|m| m.call == call).map(|m| (name, m))
                })
                .ok_or(ControlError::NoMember)?;
            let before = m.clone();
            f(m);
            (room, before, m.clone())
        };
        let changes = [
            (before.muted != after.muted).then_some(MemberChange::Muted(after.muted)),
            (before.deaf != after.deaf).then_some(MemberChange::Deaf(after.deaf)),
            (before.listen_db != after.listen_db).then_some(MemberChange::ListenGain(gain(after.listen_db))),
            (before.talk_db != after.talk_db).then_some(MemberChange::TalkGain(gain(after.talk_db))),
        ];
        for change in changes.into_iter().flatten() {
            self.send(&room, Command::Change { call, change });
        }
        use RoomEventKind as K;
        let flips = [
            (before.muted, after.muted, K::Muted, K::Unmuted),
            (before.deaf, after.deaf, K::Deafened, K::Undeafened),
            (before.held, after.held, K::Held, K::Resumed),
        ];
        for (was, is, on, off) in flips {
            if was != is {
                self.emit(&room, Some(call), if is { on } else { off });
            }
        }
        Ok(after)
    }

    /// Mutes or unmutes a member of `room` (admin API); the member entry afterwards.
    pub fn set_muted(&self, room: &str, call: u64, muted: bool) -> Result<Member, ControlError> {
        self.check(room, call)?;
        self.update(call, |m| m.muted = muted)
    }

    /// Makes a member deaf (hears nothing, still heard) or not.
    pub fn set_deaf(&self, room: &str, call: u64, deaf: bool) -> Result<Member, ControlError> {
        self.check(room, call)?;
        self.update(call, |m| m.deaf = deaf)
    }

    fn check(&self, room: &str, call: u64) -> Result<(), ControlError> {
        let rooms = self.lock();
        let r = rooms.get(room).ok_or(ControlError::NoRoom)?;
        if r.members.iter().any(|m| m.call == call) {
            Ok(())
        } else {
            Err(ControlError::NoMember)
        }
    }

    /// Whether `call` is a member of `room`.
    pub fn contains(&self, room: &str, call: u64) -> Result<(), ControlError> {
        self.check(room, call)
    }

    /// Locks or unlocks a room.
    pub fn set_locked(&self, room: &str, locked: bool) -> Result<(), ControlError> {
        let mut rooms = self.lock();
        let r = rooms.get_mut(room).ok_or(ControlError::NoRoom)?;
        let changed = r.locked != locked;
        r.locked = locked;
        drop(rooms);
        if changed {
            self.emit(
                room,
                None,
                if locked {
                    RoomEventKind::Locked
                } else {
                    RoomEventKind::Unlocked
                },
            );
        }
        Ok(())
    }

    /// Mutes every participant of a room (not moderators); returns how many.
    pub fn mute_participants(&self, room: &str, muted: bool) -> Result<usize, ControlError> {
        let calls: Vec<u64> = self
            .get(room)
            .ok_or(ControlError::NoRoom)?
            .members
            .iter()
            .filter(|m| !m.is_moderator() && m.muted != muted)
            .map(|m| m.call)
            .collect();
        for &call in &calls {
            let _ = self.update(call, |m| m.muted = muted);
        }
        Ok(calls.len())
    }

    /// The member who joined last (other than `except`).
    pub fn last_joiner(&self, room: &str, except: u64) -> Option<u64> {
        self.get(room)?
            .members
            .iter()
            .filter(|m| m.call != except)
            .max_by_key(|m| m.joined_at)
            .map(|m| m.call)
    }

    /// Plays PCM at the room's rate to everyone in the room (join and leave tones).
    pub fn play_room(&self, room: &str, pcm: Arc<[i16]>) {
        self.send(
            room,
            Command::PlayRoom {
                room: Arc::from(room),
                pcm,
            },
        );
    }

    /// Records a member's hold state (the mixer learns it from the call's media).
    pub fn set_held(&self, call: u64, held: bool) {
        let _ = self.update(call, |m| m.held = held);
    }

    /// Records who is talking (reported by the mixer).
    pub fn set_talking(&self, call: u64, talking: bool) {
        let mut rooms = self.lock();
        let room = rooms.values_mut().find_map(|r| {
            let name = r.name.clone();
            r.members.iter_mut().find(|m| m.call == call).map(|m| {
                m.talking = talking;
                name
            })
        });
        drop(rooms);
        if let Some(room) = room {
            self.emit(
                &room,
                Some(call),
                if talking {
                    RoomEventKind::Talking
                } else {
                    RoomEventKind::Quiet
                },
            );
        }
    }

    /// Takes a member out of its room (admin API, a moderator's key): its media goes back
    /// to its call, whose flow sees `join_conference` return "ejected".
    pub fn eject(&self, room: &str, call: u64) -> Result<(), ControlError> {
        self.check(room, call)?;
        self.send(room, Command::Leave { call });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(call: u64) -> Member {
        Member::new(call, "+1555010****".into(), "participant", false, call as i64)
    }

    #[test]
    fn sessions_start_with_the_first_member_and_end_with_the_last() {
        let rooms = Rooms::default();
        let (s1, n, _) = rooms.join("demo", m(1)).unwrap();
        assert_eq!(n, 1);
        let (s2, n, _) = rooms.join("demo", m(2)).unwrap();
        assert_eq!((s1, n), (s2, 2));
        assert_eq!(rooms.leave(1), Some(("demo".to_string(), 1)));
        assert_eq!(rooms.list()[0].members.len(), 1);
        rooms.leave(2);
        assert!(rooms.list().is_empty());
        let (s3, _, _) = rooms.join("demo", m(3)).unwrap();
        assert_ne!(s1, s3);
        assert_eq!(rooms.leave(99), None);
    }

    #[test]
    fn a_locked_room_takes_moderators_only_and_a_full_room_nobody() {
        let rooms = Rooms {
            max_members: Some(3),
            ..Rooms::default()
        };
        rooms.join("r", m(1)).unwrap();
        rooms.set_locked("r", true).unwrap();
        assert_eq!(rooms.join("r", m(2)), Err(JoinRefused::Locked));
        let mut moderator = m(3);
        moderator.role = "moderator".into();
        rooms.join("r", moderator).unwrap();
        rooms.set_locked("r", false).unwrap();
        rooms.join("r", m(4)).unwrap();
        assert_eq!(rooms.join("r", m(5)), Err(JoinRefused::Full));
        assert_eq!(rooms.set_locked("nowhere", true), Err(ControlError::NoRoom));
    }

    #[test]
    fn participants_wait_for_a_moderator_and_the_room_ends_with_the_last_one() {
        let rooms = Rooms::default();
        let settings = |wait, end| RoomSettings {
            moderator_pin: Some("9".into()),
            wait_for_moderator: wait,
            end_with_moderator: end,
            ..RoomSettings::default()
        };
        rooms.configure(settings::table(HashMap::from([
            ("w".to_string(), settings(true, false)),
            ("e".to_string(), settings(false, true)),
        ])));
        let mut events = rooms.subscribe();
        let moderator = |call| Member::new(call, "x".into(), "moderator", false, 0);
        assert!(rooms.join("w", m(1)).unwrap().2, "alone: waits");
        assert!(rooms.join("w", m(2)).unwrap().2, "still no moderator");
        assert!(!rooms.join("w", moderator(3)).unwrap().2, "the moderator starts it");
        rooms.leave(3);
        assert!(rooms.get("w").unwrap().waiting, "waits again");
        rooms.join("e", moderator(4)).unwrap();
        rooms.join("e", m(5)).unwrap();
        rooms.leave(4);
        assert_eq!(rooms.take_reason(5), "ended");
        assert_eq!(rooms.take_reason(5), "ejected", "taken once");
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.name());
        }
        assert!(
            seen.contains(&"started") && seen.contains(&"waiting") && seen.contains(&"ended"),
            "{seen:?}"
        );
    }

    /// rooms.toml with one room that waits for its moderator (PIN 9).
    fn waits_for_moderator_9(room: &str) -> settings::RoomTable {
        settings::table(HashMap::from([(
            room.to_string(),
            RoomSettings {
                moderator_pin: Some("9999".into()),
                wait_for_moderator: true,
                ..RoomSettings::default()
            },
        )]))
    }

    #[test]
    fn pins_set_at_run_time_survive_a_reload_and_keep_a_moderator_where_needed() {
        let rooms = Rooms::default();
        rooms.configure(waits_for_moderator_9("w"));
        assert!(
            rooms.set_pins("w", Some("1111".into()), None).is_err(),
            "w needs a moderator PIN"
        );
        rooms.set_pins("w", Some("1111".into()), Some("2222".into())).unwrap();
        rooms.set_pins("x", Some("5555".into()), None).unwrap();
        assert_eq!(rooms.settings("w").role_of("2222"), Some("moderator"));
        // A reload of rooms.toml keeps them.
        rooms.configure(settings::table(HashMap::new()));
        assert_eq!(rooms.settings("x").role_of("5555"), Some("participant"));
        assert!(rooms.set_pins("x", Some("1a11".into()), None).is_err());
        // rooms.toml later makes x wait for its moderator: its moderator PIN stands over the
        // API's "none" (else nobody could be x's moderator).
        rooms.configure(waits_for_moderator_9("x"));
        assert_eq!(rooms.settings("x").role_of("9999"), Some("moderator"));
        assert_eq!(rooms.settings("x").role_of("5555"), Some("participant"));
    }

    #[test]
    fn pins_set_at_run_time_outlive_a_restart_and_a_failed_write_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("tolk-rooms-{}", fastrand::u64(..)));
        let file = dir.join("rooms").join("pins.json");
        let mut rooms = Rooms::default();
        assert!(rooms.keep_pins_in(file.clone()).is_empty());
        rooms.set_pins("x", Some("5555".into()), Some("6666".into())).unwrap();
        // A restart: a new registry reading the same file, then rooms.toml loaded over it.
        let mut again = Rooms::default();
        assert!(again.keep_pins_in(file.clone()).is_empty());
        again.configure(settings::table(HashMap::from([(
            "x".to_string(),
            RoomSettings {
                pin: Some("1111".into()),
                ..RoomSettings::default()
            },
        )])));
        assert_eq!(again.settings("x").role_of("5555"), Some("participant"));
        assert_eq!(again.settings("x").role_of("6666"), Some("moderator"));
        assert_eq!(
            again.settings("x").role_of("1111"),
            None,
            "the API's PIN replaced rooms.toml's"
        );
        // Where the file cannot be written (its directory is a file), the PIN is refused.
        let mut blocked = Rooms::default();
        std::fs::write(dir.join("not-a-dir"), "").unwrap();
        blocked.keep_pins_in(dir.join("not-a-dir").join("pins.json"));
        let err = blocked.set_pins("y", Some("7777".into()), None).unwrap_err();
        assert!(
            matches!(&err, PinError::NotKept(m) if m.contains("cannot keep the PINs")),
            "{err}"
        );
        assert_eq!(blocked.settings("y").role_of("7"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pins_are_kept_as_keyed_digests_and_clear_ones_of_old_files_are_rewritten() {
        let dir = std::env::temp_dir().join(format!("tolk-pin-digests-{}", fastrand::u64(..)));
        let file = dir.join("rooms").join("pins.json");
        let key = || crate::keys::SecretKey::from_bytes([3; 32]);
        let mut rooms = Rooms::default();
        rooms.keep_pins_under(key());
        assert!(rooms.keep_pins_in(file.clone()).is_empty());
        rooms.set_pins("x", Some("5555".into()), Some("6666".into())).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("5555") && !text.contains("6666"), "{text}");
        assert_eq!(text.matches(pins::DIGEST_PREFIX).count(), 2, "{text}");
        assert!(
            !format!("{:?}", rooms.settings("x")).contains("5555"),
            "not in memory either"
        );
        assert_eq!(rooms.role_of("x", "5555"), Some("participant"));
        assert_eq!(rooms.role_of("x", "6666"), Some("moderator"));
        assert_eq!(rooms.role_of("x", "5556"), None);
        // The digest itself is no PIN.
        let digest = rooms.settings("x").pin.unwrap();
        assert_eq!(rooms.role_of("x", &digest), None);
        // After a restart under the same key the digests still match; under another key not.
        let mut again = Rooms::default();
        again.keep_pins_under(key());
        assert!(again.keep_pins_in(file.clone()).is_empty());
        again.configure(settings::table(HashMap::new())); // the dialplan's load applies them
        assert_eq!(again.role_of("x", "6666"), Some("moderator"));
        let mut other = Rooms::default();
        other.keep_pins_under(crate::keys::SecretKey::from_bytes([4; 32]));
        other.keep_pins_in(file.clone());
        other.configure(settings::table(HashMap::new()));
        assert_eq!(other.role_of("x", "6666"), None);
        // A file an earlier version wrote in clear is rewritten as digests at start.
        std::fs::write(&file, "{\"y\": {\"pin\": \"4321\", \"moderator_pin\": null}}").unwrap();
        let mut old = Rooms::default();
        old.keep_pins_under(key());
        assert!(old.keep_pins_in(file.clone()).is_empty());
        old.configure(settings::table(HashMap::new()));
        assert!(!std::fs::read_to_string(&file).unwrap().contains("4321"));
        assert_eq!(old.role_of("y", "4321"), Some("participant"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mute_all_spares_moderators_and_last_joiner_is_the_newest() {
        let rooms = Rooms::default();
        let mut moderator = m(1);
        moderator.role = "moderator".into();
        rooms.join("r", moderator).unwrap();
        rooms.join("r", m(2)).unwrap();
        rooms.join("r", m(3)).unwrap();
        assert_eq!(rooms.mute_participants("r", true), Ok(2));
        let r = rooms.get("r").unwrap();
        assert_eq!(
            r.members.iter().map(|m| m.muted).collect::<Vec<_>>(),
            [false, true, true]
        );
        assert_eq!(rooms.last_joiner("r", 1), Some(3));
        assert_eq!(rooms.last_joiner("r", 3), Some(2));
        assert_eq!(rooms.set_muted("r", 9, true), Err(ControlError::NoMember));
        assert_eq!(rooms.set_muted("x", 2, true), Err(ControlError::NoRoom));
    }
}
