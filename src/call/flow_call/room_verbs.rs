//! Verbs that put a call in a room: join a conference, look up a PIN's role.

use super::*;

/// What `Request::JoinConference` asks.
pub(super) struct Join {
    pub room: String,
    pub role: String,
    pub muted: bool,
}

/// `Request::JoinConference`.
pub(super) fn join_conference(
    setup: &LegSetup,
    fc: &mut FlowCall,
    call: CallRef,
    tx: ReplyTx,
    ctx: &mut Ctx,
    join: Join,
) {
    let Join { room, role, muted } = join;
    if !fc.answered {
        return done(tx, failed("join_conference: answer the call first"));
    }
    if !admitted(fc, ctx, &room, &role) {
        return unadmitted(call, tx, "join_conference", &room, &role);
    }
    let member = member_of(ctx, call, &role, muted);
    // A recording already running (one this join starts by policy is announced to
    // the whole room and filed on every member's record by the room events).
    let recording_before = ctx.rooms.get(&room).and_then(|r| r.recording);
    let (session, members, waiting) = match ctx.rooms.join(&room, member) {
        Ok(joined) => joined,
        Err(refused) => return refuse(fc, call, tx, ctx, &room, refused),
    };
    tracing::info!(call = call.0, room, role, members, "joined the room");
    file_join(ctx, call, &room, session, &role, muted);
    let opts = MemberOptions {
        muted,
        ..MemberOptions::default()
    };
    if move_media(ctx, call, &room, opts, waiting, recording_before) {
        if waiting {
            play(ctx, call, "conf-wait-moderator");
        } else if members == 1 {
            play(ctx, call, "conf-alone");
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

/// `Request::JoinInterpretation`: seats the call by the role its PIN gave (an
/// interpreter in its PIN's booth), hearing `language` first or, for a listener who named
/// none, the language menu.
pub(super) fn join_interpretation(
    fc: &mut FlowCall,
    call: CallRef,
    tx: ReplyTx,
    ctx: &mut Ctx,
    room: String,
    role: String,
    language: Option<String>,
) {
    use crate::room::SeatRefused;
    use crate::room::interpretation::Role;
    const V: &str = "join_interpretation";
    if !fc.answered {
        return done(tx, failed(format!("{V}: answer the call first")));
    }
    let Some(layout) = ctx.rooms.interpretation_layout(&room) else {
        return done(
            tx,
            failed(format!("{V}: `{room}` is not an interpretation room (rooms.toml)")),
        );
    };
    if !admitted(fc, ctx, &room, &role) {
        return unadmitted(call, tx, V, &room, &role);
    }
    let hears = match language.as_deref().map(|l| channel_named(&layout, l)) {
        Some(None) => {
            return done(
                tx,
                failed(format!(
                    "{V}: room `{room}` has no channel `{}`",
                    language.unwrap_or_default()
                )),
            );
        }
        Some(Some(bus)) => Some(bus),
        None => None,
    };
    let model_role = match role.as_str() {
        "speaker" => Role::Speaker,
        "moderator" => Role::Moderator,
        "listener" => Role::Listener,
        _ => match fc.booths.get(&room) {
            Some(&booth) => Role::Interpreter { booth },
            None => {
                return done(
                    tx,
                    failed(format!(
                        "{V}: an interpreter's booth comes from its PIN (room_role first)"
                    )),
                );
            }
        },
    };
    let member = member_of(ctx, call, &role, false);
    let recording_before = ctx.rooms.get(&room).and_then(|r| r.recording);
    let (session, members, placement) = match ctx.rooms.join_interpretation(&room, member, model_role) {
        Ok(joined) => joined,
        Err(SeatRefused::Join(refused)) => return refuse(fc, call, tx, ctx, &room, refused),
        Err(other) => return done(tx, failed(format!("{V}: {other:?}"))),
    };
    tracing::info!(call = call.0, room, role, members, "joined the interpretation room");
    file_join(ctx, call, &room, session, &role, false);
    let opts = MemberOptions {
        talk: placement.talk,
        hear: placement.hear,
        ..MemberOptions::default()
    };
    if move_media(ctx, call, &room, opts, false, recording_before) {
        match (hears, model_role) {
            (Some(bus), Role::Speaker | Role::Moderator | Role::Listener) => {
                let _ = ctx.rooms.interpretation_request(&room, |m| m.choose(call.0, bus));
            }
            (None, Role::Listener) => {
                if let (Some(shard), Some(pcm)) = (ctx.rooms.shard(&room), ctx.rooms.render(&layout.menu())) {
                    let _ = shard.send(Command::PlayTo {
                        call: call.0,
                        pcm,
                        what: "room:interpretation".into(),
                    });
                }
            }
            _ => {}
        }
    }
    fc.leaving = None;
    fc.pending = Some(Pending {
        wait: Wait::Join,
        reply: tx,
    });
}

/// A flow asked for a role no PIN gave the call: a security event, and the flow's error.
fn unadmitted(call: CallRef, tx: ReplyTx, verb: &str, room: &str, role: &str) {
    tracing::warn!(
        target: "tolk::security",
        reason = "join_without_pin",
        call = call.0,
        room,
        role,
        "a flow asked to join a room without a PIN that gives the role"
    );
    done(
        tx,
        failed(format!(
            "{verb}: no PIN for room `{room}` gave this call the role `{role}` (room_role first)"
        )),
    )
}

/// A channel by number ("1"; "0" or "floor" is the floor) or language ("Spanish").
fn channel_named(layout: &crate::room::interpretation::Layout, name: &str) -> Option<crate::room::mixer::Bus> {
    use crate::room::mixer::Bus;
    let name = name.trim();
    if name == "0" || name.eq_ignore_ascii_case("floor") || name.eq_ignore_ascii_case(&layout.floor_language) {
        return Some(Bus::Floor);
    }
    layout
        .channels
        .iter()
        .find(|c| name.parse::<u8>().ok() == Some(c.number) || c.language.eq_ignore_ascii_case(name))
        .map(|c| Bus::Channel(c.number))
}

/// A member entry for the registry: the caller masked, never the number in clear.
fn member_of(ctx: &mut Ctx, call: CallRef, role: &str, muted: bool) -> Member {
    let caller = ctx
        .accounting
        .as_deref()
        .and_then(|a| a.caller_view(call))
        .map(|(masked, _, _)| masked)
        .unwrap_or_else(|| "anonymous".into());
    Member::new(call.0, caller, role, muted, crate::clock::now_micros())
}

/// A join the room refused: the caller is told, and the flow answered.
fn refuse(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, room: &str, refused: JoinRefused) {
    let (prompt, reason) = match refused {
        JoinRefused::Locked => ("conf-locked", "locked"),
        JoinRefused::Full => ("sorry", "full"),
    };
    tracing::info!(call = call.0, room, reason, "room refused the caller");
    if play(ctx, call, prompt) {
        fc.plays_outstanding += 1;
    }
    done(tx, Ok(Reply::Left { reason: reason.into() }))
}

/// Plays a prompt on the call's leg (in a room: over the room); false without a leg.
fn play(ctx: &mut Ctx, call: CallRef, prompt: &str) -> bool {
    ctx.legs
        .get(&call)
        .is_some_and(|leg| leg.commands.try_send(LegCommand::Play(prompt.into())).is_ok())
}

/// The join on the call's record.
fn file_join(ctx: &mut Ctx, call: CallRef, room: &str, session: uuid::Uuid, role: &str, muted: bool) {
    if let Some(a) = ctx.accounting.as_deref_mut() {
        a.annotate(call, |r| {
            r.room = Some(room.to_string());
            r.room_session = Some(session);
            r.role = Some(role.to_string());
        });
        a.event(
            call,
            CallEventKind::JoinedRoom {
                room: room.to_string(),
                role: role.to_string(),
                muted,
            },
        );
    }
}

/// Moves the call's media to the room's mixer thread (`opts` with the caller's recording
/// choice applied); false without mixer threads (tests without media).
fn move_media(
    ctx: &mut Ctx,
    call: CallRef,
    room: &str,
    mut opts: MemberOptions,
    waiting: bool,
    recording_before: Option<uuid::Uuid>,
) -> bool {
    let (Some(leg), Some(shard), Some(sched)) = (ctx.legs.get(&call), ctx.rooms.shard(room), ctx.rooms.scheduler())
    else {
        return false;
    };
    let rate = sched.mixer_config().rate;
    // A caller who opted out of recording is heard live but left out of the room's
    // recording.
    opts.recorded = !ctx
        .accounting
        .as_deref()
        .and_then(|a| a.record(call))
        .is_some_and(opted_out_of_recording);
    // Joining a room being recorded: the recording on the CDR (and the notice).
    if let (Some(id), Some(a)) = (&recording_before, ctx.accounting.as_deref_mut()) {
        a.event(
            call,
            CallEventKind::RoomRecording {
                id: id.to_string(),
                room: room.to_string(),
                recorded: Some(opts.recorded),
            },
        );
    }
    let _ = leg.commands.try_send(LegCommand::JoinRoom {
        shard,
        room: Arc::from(room),
        opts,
        rate,
        waiting,
    });
    // After the join, so the room plays it to the member.
    if recording_before.is_some() {
        let _ = leg.commands.try_send(LegCommand::Play("conf-recording".into()));
    }
    true
}

/// `Request::RoomRole`: the role a PIN gives, "" for a wrong one, "locked" when the caller
/// (or the room) is locked out for too many wrong PINs (`room::pin_guard`). A role given
/// here is what `join_conference` lets the call ask for.
pub(super) fn room_role(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, room: String, pin: String) {
    use crate::room::pin_guard::{PinCaller, PinCheck};
    let who = PinCaller {
        key: &fc.pin_caller.key,
        shown: &fc.pin_caller.shown,
        call: call.0,
    };
    let role = match ctx.rooms.check_pin(Instant::now(), &room, &pin, who) {
        PinCheck::Role(role) => {
            // An interpreter's PIN names its booth as well.
            if let Some(booth) = ctx.rooms.booth_of(&room, &pin) {
                fc.booths.insert(room.clone(), booth);
            }
            fc.granted.insert(room, role);
            role
        }
        PinCheck::Wrong => "",
        PinCheck::Locked(lockout) => {
            tracing::info!(
                call = call.0,
                room,
                scope = lockout.as_str(),
                "PIN entry refused: locked out"
            );
            "locked"
        }
    };
    done(tx, Ok(Reply::Role(role.to_string())))
}

/// Whether a call may join `room` as `role`: the room checks it, not the flow. A role a
/// PIN gave is needed for a room with PINs, and for moderating any room.
fn admitted(fc: &FlowCall, ctx: &Ctx, room: &str, role: &str) -> bool {
    let granted = fc.granted.get(room).copied();
    if role == "moderator" {
        return granted == Some("moderator");
    }
    let settings = ctx.rooms.settings(room);
    // In an interpretation room each role has its PIN: the role asked for must be the one
    // the PIN gave, unless the room gives that role no PIN (an open listener line).
    if let Some(i) = &settings.interpretation {
        let open = match role {
            "speaker" => i.speaker_pin.is_none(),
            "listener" => i.listener_pin.is_none(),
            _ => false,
        };
        return open || granted == Some(role) || (granted == Some("moderator") && role == "speaker");
    }
    let needs_pin = settings.pin.is_some() || settings.moderator_pin.is_some();
    !needs_pin || granted.is_some()
}
