//! A mixer thread's loop: absolute 20 ms deadlines on `CLOCK_MONOTONIC`, catching up or
//! skipping, and the commands waiting for a room or call that has not arrived yet.

use super::*;

/// What the thread does after a tick that ended at `done` (ns), `next` being the next tick's
/// deadline: that deadline (already passed when catching up) and how many ticks it skips.
pub(super) fn after_tick(next: u64, done: u64, period: u64) -> (u64, u64) {
    if done <= next {
        return (next, 0);
    }
    // Deadlines passed: `next` and every period after it up to `done`.
    let overdue = (done - next) / period + 1;
    if overdue <= CATCH_UP_TICKS {
        (next, 0)
    } else {
        (next + overdue * period, overdue)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until the absolute `CLOCK_MONOTONIC` time `deadline_ns` (retrying on signals).
pub(super) fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: the request points at a timespec we own; no remainder is asked for
        // (TIMER_ABSTIME does not write one).
        let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        if r != libc::EINTR {
            return;
        }
    }
}

/// Commands for a room or a call this thread has not seen join yet (the registry acts before
/// the call's leg hands its stream over), with when they expire. They are carried out, in
/// order, when the room or the call arrives.
pub(super) type PendingRecords = Vec<(Command, Instant)>;

/// How long a command may wait for its room or call.
pub(super) const PENDING_FOR: Duration = Duration::from_secs(10);

/// The room or call a command is for.
pub(super) enum Target<'a> {
    Room(&'a str),
    Call(u64),
}

pub(super) fn target(cmd: &Command) -> Option<Target<'_>> {
    Some(match cmd {
        Command::Waiting { room, .. }
        | Command::Record { room, .. }
        | Command::PauseRecording { room, .. }
        | Command::StopRecording { room }
        | Command::PlayRoom { room, .. }
        | Command::Place { room, .. } => Target::Room(room),
        Command::Leave { call }
        | Command::Media { call, .. }
        | Command::Change { call, .. }
        | Command::PlayTo { call, .. }
        | Command::StopTo { call } => Target::Call(*call),
        Command::Join { .. } => return None,
    })
}

/// Drops pending commands past their time (a recording's owner is told).
pub(super) fn expire(pending: &mut PendingRecords, now: Instant) {
    for (cmd, _) in pending.extract_if(.., |p| p.1 <= now) {
        if let Command::Record { on_done, .. } = cmd {
            on_done(0.0, Some("the room did not start".into()));
        }
    }
}

pub(super) fn run(rx: Receiver<Command>, cfg: MixerConfig) {
    let mut rooms: Vec<LiveRoom> = Vec::new();
    let mut pending: PendingRecords = Vec::new();
    let mut scratch = Scratch::default();
    let mut tick_no: u64 = 0;
    let period = TICK.as_nanos() as u64;
    let mut next = monotonic_ns() + period;
    loop {
        if rooms.is_empty() {
            // Nothing to mix: wait for a command instead of ticking (waking now and then to
            // let pending commands expire).
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(cmd) => handle(cmd, &mut rooms, &mut pending, cfg),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            expire(&mut pending, Instant::now());
            next = monotonic_ns() + period;
            continue;
        }
        sleep_until(next);
        let woke = monotonic_ns();
        TICK_STATS
            .lateness
            .record(Duration::from_nanos(woke.saturating_sub(next)));
        for _ in 0..QUEUE {
            match rx.try_recv() {
                Ok(cmd) => handle(cmd, &mut rooms, &mut pending, cfg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    for room in rooms.drain(..) {
                        room.members.into_iter().for_each(hand_back);
                    }
                    return;
                }
            }
        }
        let now = Instant::now();
        if !pending.is_empty() {
            expire(&mut pending, now);
        }
        for room in &mut rooms {
            tick_room(room, now, tick_no, &mut scratch);
        }
        tick_no += 1;
        let done = monotonic_ns();
        TICK_STATS.duration.record(Duration::from_nanos(done - woke));
        let (deadline, skipped) = after_tick(next + period, done, period);
        if skipped > 0 {
            TICK_STATS.overruns.fetch_add(skipped, Ordering::Relaxed);
        } else if deadline < done {
            TICK_STATS.catch_ups.fetch_add(1, Ordering::Relaxed);
        }
        next = deadline;
    }
}

pub(super) fn handle(cmd: Command, rooms: &mut Vec<LiveRoom>, pending: &mut PendingRecords, cfg: MixerConfig) {
    // Placements of members not here yet wait for each of them; the rest apply together.
    let cmd = match cmd {
        Command::Place { room, placements } => {
            let (here, later): (Vec<_>, Vec<_>) = placements
                .into_iter()
                .partition(|(call, _)| rooms.iter().any(|r| r.index.contains_key(call)));
            for (call, p) in later {
                let change = MemberChange::Place(p);
                pending.push((Command::Change { call, change }, Instant::now() + PENDING_FOR));
            }
            if here.is_empty() {
                return;
            }
            Command::Place { room, placements: here }
        }
        other => other,
    };
    // A command for a room or call not here yet waits for it.
    let known = match target(&cmd) {
        Some(Target::Room(room)) => rooms.iter().any(|r| &*r.name == room),
        Some(Target::Call(call)) => rooms.iter().any(|r| r.index.contains_key(&call)),
        None => true,
    };
    if !known {
        pending.push((cmd, Instant::now() + PENDING_FOR));
        return;
    }
    let joined = match &cmd {
        Command::Join { room, seat, .. } => Some((room.clone(), seat.call)),
        _ => None,
    };
    apply(cmd, rooms, cfg);
    // What waited for this room or this call now applies, in order.
    if let Some((room, call)) = joined {
        expire(pending, Instant::now());
        let ready: Vec<Command> = pending
            .extract_if(.., |(c, _)| match target(c) {
                Some(Target::Room(r)) => r == &*room,
                Some(Target::Call(c)) => c == call,
                None => false,
            })
            .map(|(c, _)| c)
            .collect();
        for c in ready {
            apply(c, rooms, cfg);
        }
    }
}
