//! Interpretation rooms (pure: requests in, placements and events out; no clock, no I/O).
//!
//! A room has a floor (the original, spoken by speakers and moderators) and up to
//! [`MAX_CHANNELS`] language channels. Each channel has a booth: interpreters who listen to
//! the floor (or relay another booth's channel) and talk into the channel, exactly one of
//! them live at a time. Listeners hear one channel, or the floor, and never talk.
//!
//! [`Interpretation`] keeps who is where and answers every request with an [`Outcome`]:
//! the members whose [`Placement`] changed (the caller applies them to the mixer in one
//! step, so a hand-over swaps microphones between two ticks: no gap, no overlap) and the
//! [`Event`]s that happened (for prompts, the admin stream and the CDR: interpreters are
//! paid by their live minutes, listeners counted per language).
//!
//! Placement rules, as [`super::mixer`] applies them:
//! - speakers and moderators talk into the floor and hear the floor, or a chosen channel;
//! - the live interpreter talks into the channel its booth feeds (its own, or its retour);
//!   while coughing it is muted but the booth stays staffed, so its listeners hear the
//!   floor at their bleed, not the floor at full level;
//! - every interpreter hears its booth's source: the floor, or the relay channel, clean
//!   (no floor under it); off-mic partners hear the live partner as well;
//! - listeners hear their channel (its live interpreter over the floor at their bleed; the
//!   floor alone while the booth is unstaffed) or the floor.
//!
//! Relay loops (A relays B relays A) are refused, as is a booth relaying itself.

pub mod keys;
pub mod layout;
#[cfg(test)]
mod tests;

use super::mixer::{Bus, Hear, MemberId};
pub use layout::{Channel, Layout};
use std::collections::BTreeMap;

/// The admin API's view: the floor, each booth with its interpreters (calls), the live
/// one, its source and what it feeds, and how many hear each channel.
impl serde::Serialize for Interpretation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let channels: Vec<serde_json::Value> = self
            .layout
            .channels
            .iter()
            .map(|c| {
                let b = self.booths.get(&c.number);
                serde_json::json!({
                    "number": c.number,
                    "language": c.language,
                    "interpreters": b.map(|b| b.interpreters.clone()).unwrap_or_default(),
                    "live": b.and_then(|b| b.live),
                    "handover_offered": b.is_some_and(|b| b.offered),
                    "source": self.source(c.number).unwrap_or(Bus::Floor).number(),
                    "feeding": b.map_or(c.number, |b| b.feeding),
                    "listeners": self.audience(Bus::Channel(c.number)),
                })
            })
            .collect();
        serde_json::json!({
            "floor": self.layout.floor_language,
            "bleed_db": self.layout.bleed_db,
            "floor_listeners": self.audience(Bus::Floor),
            "channels": channels,
        })
        .serialize(s)
    }
}

/// A member's role and, for interpreters, their booth (its channel number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Speaker,
    Interpreter { booth: u8 },
    Listener,
    Moderator,
}

impl Role {
    /// The role's name in flows, PIN tables and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Role::Speaker => "speaker",
            Role::Interpreter { .. } => "interpreter",
            Role::Listener => "listener",
            Role::Moderator => "moderator",
        }
    }
}

/// Where a member's voice goes and what it hears (applied to the mixer's member options).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub talk: Option<Bus>,
    pub hear: Hear,
    /// The live interpreter's cough key is on: muted, the booth still staffed.
    pub cough: bool,
}

/// What happened, for prompts, events and the CDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An interpreter's microphone went live in its booth.
    LiveStarted {
        booth: u8,
        member: MemberId,
    },
    /// It went off (hand-over, leaving).
    LiveEnded {
        booth: u8,
        member: MemberId,
    },
    /// The live interpreter offers the hand-over to the partners.
    HandoverOffered {
        booth: u8,
        from: MemberId,
    },
    /// The offer was withdrawn.
    HandoverCancelled {
        booth: u8,
        from: MemberId,
    },
    /// A member now hears this (floor or channel).
    ChannelChosen {
        member: MemberId,
        hears: Bus,
    },
    /// A booth's source changed (relay).
    RelayChanged {
        booth: u8,
        source: Bus,
    },
    /// A booth now feeds this channel (its own, or its retour).
    FeedingChanged {
        booth: u8,
        channel: u8,
    },
    Cough {
        member: MemberId,
        on: bool,
    },
    /// A listener's level of the floor under its channel (0 = none).
    BleedChanged {
        member: MemberId,
        bleed_db: i8,
    },
}

impl Event {
    /// The member it is about (None for a booth-wide change).
    pub fn member(&self) -> Option<MemberId> {
        match *self {
            Event::LiveStarted { member, .. }
            | Event::LiveEnded { member, .. }
            | Event::ChannelChosen { member, .. }
            | Event::Cough { member, .. }
            | Event::BleedChanged { member, .. } => Some(member),
            Event::HandoverOffered { from, .. } | Event::HandoverCancelled { from, .. } => Some(from),
            Event::RelayChanged { .. } | Event::FeedingChanged { .. } => None,
        }
    }

    /// The event's name on the admin event stream.
    pub fn name(&self) -> &'static str {
        match self {
            Event::LiveStarted { .. } => "interpreter_live",
            Event::LiveEnded { .. } => "interpreter_off",
            Event::HandoverOffered { .. } => "handover_offered",
            Event::HandoverCancelled { .. } => "handover_cancelled",
            Event::ChannelChosen { .. } => "channel_chosen",
            Event::RelayChanged { .. } => "relay_changed",
            Event::FeedingChanged { .. } => "feeding_changed",
            Event::Cough { .. } => "cough",
            Event::BleedChanged { .. } => "bleed_changed",
        }
    }

    /// What it carries, as the stream's `detail` (channels by number; 0 is the floor).
    pub fn detail(&self) -> serde_json::Value {
        match *self {
            Event::LiveStarted { booth, .. }
            | Event::LiveEnded { booth, .. }
            | Event::HandoverOffered { booth, .. }
            | Event::HandoverCancelled { booth, .. } => serde_json::json!({ "booth": booth }),
            Event::ChannelChosen { hears, .. } => serde_json::json!({ "channel": hears.number() }),
            Event::RelayChanged { booth, source } => serde_json::json!({ "booth": booth, "source": source.number() }),
            Event::FeedingChanged { booth, channel } => serde_json::json!({ "booth": booth, "channel": channel }),
            Event::Cough { on, .. } => serde_json::json!({ "on": on }),
            Event::BleedChanged { bleed_db, .. } => serde_json::json!({ "bleed_db": bleed_db }),
        }
    }

    /// Whether the CDRs keep it: what listeners heard and when interpreters were live
    /// (reports of listener minutes per language and interpreter live minutes per booth).
    pub fn for_ledger(&self) -> bool {
        matches!(
            self,
            Event::LiveStarted { .. } | Event::LiveEnded { .. } | Event::ChannelChosen { .. }
        )
    }
}

/// Why a request was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NoSuchMember,
    NoSuchChannel,
    /// The request is for interpreters (or for the live one, or for a partner).
    NotAnInterpreter,
    NotLive,
    /// A hand-over needs a partner in the booth, or an offer to take.
    NoPartner,
    NoOffer,
    /// A relay that would make a loop, or a booth relaying the channel it feeds.
    RelayLoop,
    /// The booth has no retour channel, or another booth feeds it now.
    NoRetour,
    ChannelBusy,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::NoSuchMember => "no such member in this room",
            Refused::NoSuchChannel => "no such channel",
            Refused::NotAnInterpreter => "only interpreters can do that",
            Refused::NotLive => "only the live interpreter can do that",
            Refused::NoPartner => "no partner in the booth",
            Refused::NoOffer => "no hand-over offered",
            Refused::RelayLoop => "that relay would make a loop",
            Refused::NoRetour => "this booth has no retour channel",
            Refused::ChannelBusy => "another booth feeds that channel now",
        })
    }
}

/// The members whose placement changed and what happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub changed: Vec<MemberId>,
    pub events: Vec<Event>,
}

impl Outcome {
    fn touch(&mut self, member: MemberId) {
        if !self.changed.contains(&member) {
            self.changed.push(member);
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Seat {
    role: Role,
    /// What a speaker, moderator or listener chose to hear.
    hears: Bus,
    /// A listener's floor level under its channel (0 = none).
    bleed_db: i8,
    cough: bool,
    keypad: keys::Keypad,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Booth {
    /// In the order they joined: the first partner takes over when the live one leaves.
    interpreters: Vec<MemberId>,
    live: Option<MemberId>,
    offered: bool,
    /// The channel the booth interprets from (None: the floor).
    relay: Option<u8>,
    /// The channel the booth's live microphone feeds (its own, or its retour).
    feeding: u8,
}

/// One interpretation room's seating.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpretation {
    layout: Layout,
    seats: BTreeMap<MemberId, Seat>,
    booths: BTreeMap<u8, Booth>,
}

impl Interpretation {
    pub fn new(layout: Layout) -> Interpretation {
        let booths = layout
            .channels
            .iter()
            .map(|c| {
                (
                    c.number,
                    Booth {
                        feeding: c.number,
                        ..Booth::default()
                    },
                )
            })
            .collect();
        Interpretation {
            layout,
            seats: BTreeMap::new(),
            booths,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Seats a member. An interpreter whose booth has no live microphone goes live.
    pub fn join(&mut self, member: MemberId, role: Role) -> Result<Outcome, Refused> {
        if let Role::Interpreter { booth } = role
            && !self.booths.contains_key(&booth)
        {
            return Err(Refused::NoSuchChannel);
        }
        let mut out = self.leave(member);
        self.seats.insert(
            member,
            Seat {
                role,
                hears: Bus::Floor,
                bleed_db: self.layout.bleed_db,
                cough: false,
                keypad: if role == Role::Listener {
                    keys::Keypad::with_menu_open()
                } else {
                    keys::Keypad::default()
                },
            },
        );
        out.touch(member);
        if let Role::Interpreter { booth } = role {
            let b = self.booths.get_mut(&booth).ok_or(Refused::NoSuchChannel)?;
            b.interpreters.push(member);
            if b.live.is_none() {
                self.go_live(booth, member, &mut out);
            } else {
                // The partners hear this one's booth state change: nothing to re-place.
            }
        }
        Ok(out)
    }

    /// Unseats a member; a live interpreter's first partner takes over.
    pub fn leave(&mut self, member: MemberId) -> Outcome {
        let mut out = Outcome::default();
        let Some(seat) = self.seats.remove(&member) else {
            return out;
        };
        if let Role::Interpreter { booth } = seat.role
            && let Some(b) = self.booths.get_mut(&booth)
        {
            b.interpreters.retain(|&m| m != member);
            if b.live == Some(member) {
                b.live = None;
                b.offered = false;
                out.events.push(Event::LiveEnded { booth, member });
                if let Some(&next) = b.interpreters.first() {
                    self.go_live(booth, next, &mut out);
                } else {
                    self.booth_state_changed(booth, &mut out);
                }
            }
        }
        out
    }

    /// What the mixer must do with a member (None: not seated).
    pub fn placement(&self, member: MemberId) -> Option<Placement> {
        let seat = self.seats.get(&member)?;
        Some(match seat.role {
            Role::Speaker | Role::Moderator => Placement {
                talk: Some(Bus::Floor),
                hear: self.hearing(seat.hears, seat.bleed_db),
                cough: false,
            },
            Role::Listener => Placement {
                talk: None,
                hear: self.hearing(seat.hears, seat.bleed_db),
                cough: false,
            },
            Role::Interpreter { booth } => {
                let b = self.booths.get(&booth)?;
                let live = b.live == Some(member);
                Placement {
                    talk: live.then_some(Bus::Channel(b.feeding)),
                    hear: Hear {
                        source: b.relay.map_or(Bus::Floor, Bus::Channel),
                        bleed: 0.0,
                        partner: (!live).then_some(b.feeding),
                    },
                    cough: live && seat.cough,
                }
            }
        })
    }

    fn hearing(&self, hears: Bus, bleed_db: i8) -> Hear {
        Hear {
            source: hears,
            bleed: layout::bleed_gain(bleed_db),
            partner: None,
        }
    }

    /// A key a member pressed: what its sequence asks for, when complete.
    pub fn press(&mut self, member: MemberId, key: char) -> Option<keys::Key> {
        let seat = self.seats.get_mut(&member)?;
        seat.keypad.press(key, seat.role, &self.layout)
    }

    /// A member's role, if seated.
    pub fn role(&self, member: MemberId) -> Option<Role> {
        self.seats.get(&member).map(|s| s.role)
    }

    /// What a speaker, moderator or listener hears now.
    pub fn hears(&self, member: MemberId) -> Option<Bus> {
        self.seats.get(&member).map(|s| s.hears)
    }

    /// The live interpreter of a booth.
    pub fn live(&self, booth: u8) -> Option<MemberId> {
        self.booths.get(&booth).and_then(|b| b.live)
    }

    /// A booth's interpreters in the order they joined.
    pub fn interpreters(&self, booth: u8) -> &[MemberId] {
        self.booths.get(&booth).map_or(&[], |b| &b.interpreters[..])
    }

    /// A booth's source (the floor or the channel it relays).
    pub fn source(&self, booth: u8) -> Option<Bus> {
        self.booths
            .get(&booth)
            .map(|b| b.relay.map_or(Bus::Floor, Bus::Channel))
    }

    /// Whether the live interpreter offered the hand-over.
    pub fn offered(&self, booth: u8) -> bool {
        self.booths.get(&booth).is_some_and(|b| b.offered)
    }

    /// Members who hear `bus` by choice (speakers, moderators, listeners).
    pub fn audience(&self, bus: Bus) -> usize {
        self.seats
            .values()
            .filter(|s| !matches!(s.role, Role::Interpreter { .. }) && s.hears == bus)
            .count()
    }

    /// A speaker, moderator or listener chooses what to hear; an interpreter chooses its
    /// booth's source (relay), which changes what its partners hear too.
    pub fn choose(&mut self, member: MemberId, hears: Bus) -> Result<Outcome, Refused> {
        let seat = self.seats.get(&member).ok_or(Refused::NoSuchMember)?;
        if let Role::Interpreter { booth } = seat.role {
            return self.relay(booth, hears);
        }
        self.check_bus(hears)?;
        let seat = self.seats.get_mut(&member).ok_or(Refused::NoSuchMember)?;
        seat.hears = hears;
        let mut out = Outcome::default();
        out.touch(member);
        out.events.push(Event::ChannelChosen { member, hears });
        Ok(out)
    }

    /// A booth interprets from `source` (the floor, or another channel: relay). Refused
    /// when the source's chain of relays comes back to this booth.
    pub fn relay(&mut self, booth: u8, source: Bus) -> Result<Outcome, Refused> {
        self.check_bus(source)?;
        let feeding = self.booths.get(&booth).ok_or(Refused::NoSuchChannel)?.feeding;
        let relay = match source {
            Bus::Floor => None,
            Bus::Channel(c) => {
                if c == feeding || c == booth || self.relays_back(c, booth) {
                    return Err(Refused::RelayLoop);
                }
                Some(c)
            }
        };
        let b = self.booths.get_mut(&booth).ok_or(Refused::NoSuchChannel)?;
        b.relay = relay;
        let mut out = Outcome::default();
        for &m in &b.interpreters {
            out.touch(m);
        }
        out.events.push(Event::RelayChanged { booth, source });
        Ok(out)
    }

    /// Whether the booth feeding `channel`, or the booth that one relays, and so on, is
    /// `booth` (or relays it).
    fn relays_back(&self, channel: u8, booth: u8) -> bool {
        let mut seen = 0u64;
        let mut at = channel;
        loop {
            let Some((&number, b)) = self.booths.iter().find(|(_, b)| b.feeding == at) else {
                return false;
            };
            if number == booth {
                return true;
            }
            if seen & (1 << (number % 64)) != 0 {
                return false;
            }
            seen |= 1 << (number % 64);
            match b.relay {
                Some(next) => at = next,
                None => return false,
            }
        }
    }

    /// The hand-over key: the live interpreter offers (or withdraws the offer); a partner
    /// takes an offered hand-over.
    pub fn handover_key(&mut self, member: MemberId) -> Result<Outcome, Refused> {
        let booth = self.booth_of(member)?;
        let b = self.booths.get_mut(&booth).ok_or(Refused::NoSuchChannel)?;
        let mut out = Outcome::default();
        if b.live == Some(member) {
            if b.interpreters.len() < 2 {
                return Err(Refused::NoPartner);
            }
            b.offered = !b.offered;
            out.events.push(if b.offered {
                Event::HandoverOffered { booth, from: member }
            } else {
                Event::HandoverCancelled { booth, from: member }
            });
            return Ok(out);
        }
        if !b.offered {
            return Err(Refused::NoOffer);
        }
        self.swap_live(booth, member, &mut out);
        Ok(out)
    }

    /// A moderator or admin hands a booth's microphone to `to` (None: the next partner in
    /// joining order), offered or not.
    pub fn force_handover(&mut self, booth: u8, to: Option<MemberId>) -> Result<Outcome, Refused> {
        let b = self.booths.get(&booth).ok_or(Refused::NoSuchChannel)?;
        let to = match to {
            Some(m) if b.interpreters.contains(&m) => m,
            Some(_) => return Err(Refused::NotAnInterpreter),
            None => {
                let n = b.interpreters.len();
                let at = b.live.and_then(|l| b.interpreters.iter().position(|&m| m == l));
                match at {
                    Some(i) if n > 1 => b.interpreters[(i + 1) % n],
                    None if n > 0 => b.interpreters[0],
                    _ => return Err(Refused::NoPartner),
                }
            }
        };
        let mut out = Outcome::default();
        if b.live != Some(to) {
            self.swap_live(booth, to, &mut out);
        }
        Ok(out)
    }

    /// The cough key (toggle): the live interpreter's microphone off and on again.
    pub fn cough_key(&mut self, member: MemberId) -> Result<Outcome, Refused> {
        let booth = self.booth_of(member)?;
        if self.live(booth) != Some(member) {
            return Err(Refused::NotLive);
        }
        let seat = self.seats.get_mut(&member).ok_or(Refused::NoSuchMember)?;
        seat.cough = !seat.cough;
        let mut out = Outcome::default();
        out.touch(member);
        out.events.push(Event::Cough { member, on: seat.cough });
        Ok(out)
    }

    /// The retour key: the booth switches between feeding its own channel and its retour.
    pub fn retour_key(&mut self, member: MemberId) -> Result<Outcome, Refused> {
        let booth = self.booth_of(member)?;
        let retour = self
            .layout
            .channel(booth)
            .and_then(|c| c.retour)
            .ok_or(Refused::NoRetour)?;
        let feeding = self.booths.get(&booth).ok_or(Refused::NoSuchChannel)?.feeding;
        let next = if feeding == booth { retour } else { booth };
        if self
            .booths
            .iter()
            .any(|(&n, b)| n != booth && b.feeding == next && b.live.is_some())
        {
            return Err(Refused::ChannelBusy);
        }
        let b = self.booths.get_mut(&booth).ok_or(Refused::NoSuchChannel)?;
        if b.relay == Some(next) {
            b.relay = None;
        }
        b.feeding = next;
        let mut out = Outcome::default();
        out.events.push(Event::FeedingChanged { booth, channel: next });
        self.booth_state_changed(booth, &mut out);
        Ok(out)
    }

    /// A listener's floor level under its channel, one step (6 dB) up or down; the bottom
    /// step is none.
    pub fn bleed_key(&mut self, member: MemberId, louder: bool) -> Result<Outcome, Refused> {
        let seat = self.seats.get_mut(&member).ok_or(Refused::NoSuchMember)?;
        seat.bleed_db = layout::bleed_step(seat.bleed_db, louder);
        let mut out = Outcome::default();
        out.touch(member);
        out.events.push(Event::BleedChanged {
            member,
            bleed_db: seat.bleed_db,
        });
        Ok(out)
    }

    fn booth_of(&self, member: MemberId) -> Result<u8, Refused> {
        match self.seats.get(&member).ok_or(Refused::NoSuchMember)?.role {
            Role::Interpreter { booth } => Ok(booth),
            _ => Err(Refused::NotAnInterpreter),
        }
    }

    fn check_bus(&self, bus: Bus) -> Result<(), Refused> {
        match bus {
            Bus::Floor => Ok(()),
            Bus::Channel(c) if self.layout.channel(c).is_some() => Ok(()),
            Bus::Channel(_) => Err(Refused::NoSuchChannel),
        }
    }

    fn go_live(&mut self, booth: u8, member: MemberId, out: &mut Outcome) {
        if let Some(b) = self.booths.get_mut(&booth) {
            b.live = Some(member);
            b.offered = false;
        }
        if let Some(s) = self.seats.get_mut(&member) {
            s.cough = false;
        }
        out.events.push(Event::LiveStarted { booth, member });
        self.booth_state_changed(booth, out);
    }

    fn swap_live(&mut self, booth: u8, to: MemberId, out: &mut Outcome) {
        if let Some(from) = self.booths.get(&booth).and_then(|b| b.live) {
            if let Some(s) = self.seats.get_mut(&from) {
                s.cough = false;
            }
            out.events.push(Event::LiveEnded { booth, member: from });
        }
        self.go_live(booth, to, out);
    }

    /// The booth's interpreters are re-placed (who is live, what they feed); listeners'
    /// placements do not change: staffing is the mixer's to see each tick.
    fn booth_state_changed(&self, booth: u8, out: &mut Outcome) {
        if let Some(b) = self.booths.get(&booth) {
            for &m in &b.interpreters {
                out.touch(m);
            }
        }
    }
}
