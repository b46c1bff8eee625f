//! Interpretation rooms in the registry: seating members by role ([`interpretation`]'s
//! model, one per room while it has members), the keypad, the admin requests, and what they
//! cause: placements that reach the room's mixer thread in one command (so a hand-over
//! swaps microphones between two ticks), prompts to the members concerned, and room events
//! (the admin stream; the CDRs keep live periods and channel choices).

use super::conference::{Effect, KeyAction, act};
use super::interpretation::keys::Key;
use super::interpretation::{Event, Interpretation, Layout, Outcome, Placement, Refused, Role};
use super::mixer::Bus;
use super::scheduler::Command;
use super::{JoinRefused, Member, Room, RoomEventKind, Rooms};
use std::sync::Arc;

/// Why a member could not be seated in an interpretation room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatRefused {
    /// The room is not an interpretation room (rooms.toml has no `floor` for it).
    NotInterpretation,
    Join(JoinRefused),
    Model(Refused),
}

/// What one change did in a room's model, to carry out once its lock is released.
#[derive(Default)]
struct Done {
    placements: Vec<(u64, Placement)>,
    events: Vec<Event>,
    /// Prompts for particular members, made from the events.
    prompts: Vec<(u64, Vec<String>)>,
}

/// The placements and prompts an outcome calls for, read from the model it changed.
fn done(model: &Interpretation, out: Outcome) -> Done {
    let placements = out
        .changed
        .iter()
        .filter_map(|&m| model.placement(m).map(|p| (m, p)))
        .collect();
    let layout = model.layout();
    let booth_members = |booth: u8| model.interpreters(booth).to_vec();
    let mut prompts = Vec::new();
    for e in &out.events {
        match *e {
            Event::LiveStarted { member, .. } => prompts.push((member, vec!["interp-live".into()])),
            Event::LiveEnded { member, .. } if model.role(member).is_some() => {
                prompts.push((member, vec!["interp-off-mic".into()]))
            }
            Event::LiveEnded { .. } => {}
            Event::HandoverOffered { booth, from } => {
                prompts.push((from, vec!["beep".into()]));
                for m in booth_members(booth).into_iter().filter(|&m| m != from) {
                    prompts.push((m, vec!["interp-handover-offered".into()]));
                }
            }
            Event::HandoverCancelled { from, .. } => prompts.push((from, vec!["beep".into()])),
            Event::ChannelChosen { member, hears } => prompts.push((member, layout.announce(hears))),
            Event::RelayChanged { booth, source } => {
                let mut names = vec!["interp-relay".to_string()];
                names.extend(layout.announce(source));
                for m in booth_members(booth) {
                    prompts.push((m, names.clone()));
                }
            }
            Event::FeedingChanged { booth, channel } => {
                let mut names = vec!["interp-feeding".to_string()];
                names.extend(layout.announce(Bus::Channel(channel)));
                for m in booth_members(booth) {
                    prompts.push((m, names.clone()));
                }
            }
            Event::Cough { member, on } => {
                prompts.push((member, vec![if on { "interp-mic-off" } else { "interp-mic-on" }.into()]))
            }
            Event::BleedChanged { member, .. } => prompts.push((member, vec!["beep".into()])),
        }
    }
    Done {
        placements,
        events: out.events,
        prompts,
    }
}

/// Takes a member out of its room's model (the registry is leaving it); what that caused.
pub(super) fn unseat(room: &mut Room, call: u64) -> Option<DoneLater> {
    let model = room.interpretation.as_mut()?;
    let out = model.leave(call);
    Some(DoneLater(done(model, out)))
}

/// [`Done`] carried out of the registry's lock by [`Rooms::carry_out_later`].
pub(super) struct DoneLater(Done);

impl Rooms {
    /// The layout of an interpretation room (None: a conference room, or none).
    pub fn interpretation_layout(&self, room: &str) -> Option<Layout> {
        self.settings(room).interpretation.map(|i| i.layout)
    }

    /// Seats a member in an interpretation room as `role`: the registry's join (locked,
    /// full) and the model's (an interpreter of a booth without a live microphone goes
    /// live). Returns the room session, the member count and where the member talks and
    /// what it hears (for its `Join` to the mixer thread).
    pub fn join_interpretation(
        &self,
        room: &str,
        member: Member,
        role: Role,
    ) -> Result<(uuid::Uuid, usize, Placement), SeatRefused> {
        let layout = self.interpretation_layout(room).ok_or(SeatRefused::NotInterpretation)?;
        if let Role::Interpreter { booth } = role
            && layout.channel(booth).is_none()
        {
            return Err(SeatRefused::Model(Refused::NoSuchChannel));
        }
        let call = member.call;
        let (session, members, _) = self.join(room, member).map_err(SeatRefused::Join)?;
        let seated = {
            let mut rooms = self.lock();
            let r = rooms.get_mut(room);
            r.map(|r| {
                let model = r
                    .interpretation
                    .get_or_insert_with(|| Box::new(Interpretation::new(layout)));
                model.join(call, role).map(|out| {
                    let placement = model.placement(call);
                    (placement, done(model, out))
                })
            })
        };
        match seated {
            Some(Ok((Some(placement), d))) => {
                self.carry_out(room, d);
                Ok((session, members, placement))
            }
            Some(Err(refused)) => {
                self.leave(call);
                Err(SeatRefused::Model(refused))
            }
            _ => {
                self.leave(call);
                Err(SeatRefused::Model(Refused::NoSuchMember))
            }
        }
    }

    /// Runs a request on a room's model and carries out what it did.
    pub fn interpretation_request(
        &self,
        room: &str,
        f: impl FnOnce(&mut Interpretation) -> Result<Outcome, Refused>,
    ) -> Result<(), Refused> {
        let d = {
            let mut rooms = self.lock();
            let model = rooms
                .get_mut(room)
                .and_then(|r| r.interpretation.as_mut())
                .ok_or(Refused::NoSuchMember)?;
            let out = f(model)?;
            done(model, out)
        };
        self.carry_out(room, d);
        Ok(())
    }

    /// A key pressed by a member of an interpretation room ([`super::interpretation::keys`]);
    /// None when `room` is not one (the conference map applies).
    pub fn interpretation_key(&self, room: &str, call: u64, digit: char) -> Option<Vec<Effect>> {
        let (key, layout, role) = {
            let mut rooms = self.lock();
            let model = rooms.get_mut(room)?.interpretation.as_mut()?;
            let key = model.press(call, digit);
            (key, model.layout().clone(), model.role(call))
        };
        let Some(key) = key else { return Some(Vec::new()) };
        let play = |names: Vec<String>| vec![Effect::Play(names)];
        let request = |f: &dyn Fn(&mut Interpretation) -> Result<Outcome, Refused>| match self
            .interpretation_request(room, |m| f(m))
        {
            Ok(()) => Vec::new(),
            Err(Refused::NoSuchChannel) => play(vec!["interp-no-channel".into()]),
            Err(_) => play(vec!["interp-not-now".into()]),
        };
        Some(match key {
            Key::Choose(bus) => request(&|m| m.choose(call, bus)),
            Key::Menu => match role {
                Some(Role::Interpreter { booth }) => {
                    let rooms = self.lock();
                    let model = rooms.get(room).and_then(|r| r.interpretation.as_deref());
                    let live = model.and_then(|m| m.live(booth)) == Some(call);
                    let source = model.and_then(|m| m.source(booth)).unwrap_or(Bus::Floor);
                    let mut names = vec![if live { "interp-live" } else { "interp-off-mic" }.to_string()];
                    names.push("interp-relay".into());
                    names.extend(layout.announce(source));
                    play(names)
                }
                _ => play(layout.menu()),
            },
            Key::Handover => request(&|m| m.handover_key(call)),
            Key::Cough => request(&|m| m.cough_key(call)),
            Key::Retour => request(&|m| m.retour_key(call)),
            Key::BleedDown => request(&|m| m.bleed_key(call, false)),
            Key::BleedUp => request(&|m| m.bleed_key(call, true)),
            Key::ForceHandover(booth) => match self.interpretation_request(room, |m| m.force_handover(booth, None)) {
                Ok(()) => play(vec!["beep".into()]),
                Err(_) => play(vec!["interp-not-now".into()]),
            },
            Key::NoSuchChannel => play(vec!["interp-no-channel".into()]),
            Key::Mute => act(self, call, room, KeyAction::ToggleMute),
            Key::ListenDown => act(self, call, room, KeyAction::ListenDown),
            Key::ListenUp => act(self, call, room, KeyAction::ListenUp),
            Key::Leave => act(self, call, room, KeyAction::Leave),
        })
    }

    /// Carries out, after the registry's lock, what leaving did to a room's model.
    pub(super) fn carry_out_later(&self, room: &str, d: DoneLater) {
        self.carry_out(room, d.0);
    }

    /// Placements to the mixer thread in one command, prompts to their members, events to
    /// the stream and the ledger.
    fn carry_out(&self, room: &str, d: Done) {
        if !d.placements.is_empty() {
            self.send(
                room,
                Command::Place {
                    room: Arc::from(room),
                    placements: d.placements,
                },
            );
        }
        for (call, names) in d.prompts {
            if let Some(pcm) = self.render(&names) {
                self.send(
                    room,
                    Command::PlayTo {
                        call,
                        pcm,
                        what: "room:interpretation".into(),
                    },
                );
            }
        }
        for e in d.events {
            self.emit(room, e.member(), RoomEventKind::Interpretation(e));
        }
    }
}
