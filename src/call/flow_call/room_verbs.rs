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
        tracing::warn!(
            target: "tolk::security",
            reason = "join_without_pin",
            call = call.0,
            room,
            role,
            "a flow asked to join a room without a PIN that gives the role"
        );
        return done(
            tx,
            failed(format!(
                "join_conference: no PIN for room `{room}` gave this call the role `{role}` (room_role first)"
            )),
        );
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
            CallEventKind::JoinedRoom {
                room: room.clone(),
                role: role.clone(),
                muted,
            },
        );
    }
    // The call's media moves to the room's mixer thread.
    if let (Some(leg), Some(shard), Some(sched)) = (ctx.legs.get(&call), ctx.rooms.shard(&room), ctx.rooms.scheduler())
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
                CallEventKind::RoomRecording {
                    id: id.to_string(),
                    room: room.clone(),
                    recorded: Some(recorded),
                },
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
    let needs_pin = settings.pin.is_some() || settings.moderator_pin.is_some();
    !needs_pin || granted.is_some()
}
