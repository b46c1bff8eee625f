//! One room's media on a mixer thread ([`LiveRoom`]): its members, the mixer, the shared
//! encoders, the commands applied to it, and its 20 ms tick.

use super::*;

/// A member on a mixer thread.
pub(super) struct MixMember {
    pub(super) call: u64,
    pub(super) seat: Box<Seat>,
    /// The codec's rate -> the room's rate.
    pub(super) to_room: Resampler,
    /// The room's rate -> the codec's rate, for what this member alone hears.
    pub(super) from_room: Resampler,
    pub(super) playback: Option<(PromptPlayer, String)>,
    /// Muted by a person (keypad, API, flow); a held member is also kept out of the mix.
    pub(super) muted: bool,
    /// An interpreter's cough key: muted, the booth still staffed.
    pub(super) cough: bool,
    pub(super) deaf: bool,
    pub(super) held: bool,
    pub(super) timed_out: bool,
    /// Whether this member's own encoder made its last frame: the far end's decoder is in
    /// step with it, not with the shared encoder.
    pub(super) own_last_tick: bool,
    /// Ticks spent on the own encoder since the member could have joined a shared encoding.
    pub(super) handover_ticks: u16,
    /// Whether last tick's frame went through `to_room` into the mix.
    pub(super) pushed_last_tick: bool,
}

impl MixMember {
    /// Resamplers between the member's codec rate and the room's `room_rate`, fresh.
    fn fit_resamplers(&mut self, room_rate: u32) {
        let own = self.seat.stream.pcm_rate();
        self.to_room = Resampler::new(own, room_rate);
        self.from_room = Resampler::new(room_rate, own);
    }
}

/// Ticks between a member's RTCP reads and sends (and RTP-timeout checks): 500 ms.
pub(super) const RTCP_EVERY: u64 = 25;

/// Ticks a member who stopped talking may stay on its own encoder, waiting for a quiet mix
/// to change over to the shared one in (then it changes over anyway).
pub(super) const HANDOVER_MAX_TICKS: u16 = 250;

/// One encoding shared by every member of a group (same codec, same mix).
pub(super) struct SharedEncoder {
    pub(super) codec: Codec,
    pub(super) listen_gain: f32,
    /// What its listeners hear (one encoder per mix: per channel they hear).
    pub(super) key: HearKey,
    pub(super) from_room: Resampler,
    pub(super) enc: Box<dyn Encoder>,
    /// This tick's payload (groups sharing the encoder in one tick reuse it: the encoder
    /// must see exactly one frame per tick).
    pub(super) payload: Vec<u8>,
    pub(super) tick: u64,
}

/// One room's media on a mixer thread: its members' streams, the mixer, and the shared
/// encoders. Public so benches can drive a tick without a thread.
pub struct LiveRoom {
    pub(super) name: Arc<str>,
    /// The configured mixer settings; `cfg.rate` is the rate of a room with a wideband
    /// member, prompts arrive at it and recordings are made at it.
    pub(super) cfg: MixerConfig,
    /// Mixes at `cfg.rate`, or at 8 kHz while every member is narrowband ([`LiveRoom::retune`]).
    pub(super) mixer: Mixer,
    /// Brings the mix up to `cfg.rate` for the recording while the room mixes at 8 kHz.
    pub(super) record_up: Option<Resampler>,
    pub(super) members: Vec<MixMember>,
    pub(super) index: HashMap<u64, usize>,
    pub(super) shared: Vec<SharedEncoder>,
    pub(super) playback: Option<PromptPlayer>,
    /// Music on hold while the room waits for a moderator (None: the room is live).
    pub(super) waiting: Option<PromptPlayer>,
    /// The music, made once per room.
    pub(super) music: Option<Arc<[i16]>>,
    pub(super) recorder: Option<crate::room::recording::RoomRecorder>,
    /// Frames encoded so far (one per group per tick, not one per member).
    pub(super) encodes: u64,
    /// The highest loss a member reported over RTCP since the last update, and the loss the
    /// shared encoders were last told (percent: it sets their in-band FEC).
    pub(super) peer_loss: u8,
    pub(super) shared_loss: u8,
    /// Frames of quiet members left undecoded so far.
    pub(super) decodes_skipped: u64,
}

impl LiveRoom {
    pub fn new(name: &str, cfg: MixerConfig) -> LiveRoom {
        LiveRoom {
            name: Arc::from(name),
            cfg,
            mixer: Mixer::new(cfg),
            record_up: None,
            members: Vec::new(),
            index: HashMap::new(),
            shared: Vec::new(),
            playback: None,
            waiting: None,
            music: None,
            recorder: None,
            encodes: 0,
            peer_loss: 0,
            shared_loss: 0,
            decodes_skipped: 0,
        }
    }

    /// Starts recording the room's mix to `path` (a new file).
    pub fn record(&mut self, path: std::path::PathBuf, on_done: crate::room::recording::OnDone) {
        // Recordings are at the configured rate whatever the room mixes at now (a new one
        // starts without the last one's audio in the upsampler).
        let rate = self.cfg.rate;
        if let Some(up) = self.record_up.as_mut() {
            up.restart();
        }
        // A recording already running is finalised first.
        self.recorder = None;
        // A writer thread that cannot start leaves the room unrecorded (on_done is dropped
        // with it; the gateway's registration then has no length).
        self.recorder = crate::room::recording::RoomRecorder::start(path, rate, on_done).ok();
        self.mixer.set_recording(self.recorder.is_some());
    }

    /// Finalises the recording, if any.
    pub fn stop_recording(&mut self) {
        self.recorder = None;
        self.mixer.set_recording(false);
    }

    /// Waits for a moderator (members hear music on hold, not each other) or goes live.
    pub fn set_waiting(&mut self, waiting: bool) {
        self.waiting = if waiting {
            let rate = self.mixer.config().rate;
            let music = self
                .music
                .get_or_insert_with(|| Arc::from(crate::media::tone::music_on_hold(rate)));
            Some(PromptPlayer::new(music.clone()))
        } else {
            None
        };
    }

    /// Adds a member with its stream.
    pub fn join(&mut self, seat: Box<Seat>, mut opts: MemberOptions) {
        let cfg = self.cfg;
        let room_rate = self.rate();
        let mut seat = seat;
        seat.stream.set_opus_rate(cfg.rate, Some(cfg.opus_complexity));
        let call = seat.call;
        let rate = seat.stream.pcm_rate();
        let held = seat.stream.held();
        let member = MixMember {
            call,
            to_room: Resampler::new(rate, room_rate),
            from_room: Resampler::new(room_rate, rate),
            playback: None,
            muted: opts.muted,
            cough: false,
            deaf: opts.deaf,
            held,
            timed_out: false,
            own_last_tick: false,
            handover_ticks: 0,
            pushed_last_tick: false,
            seat,
        };
        opts.codec = member.seat.stream.codec().map(codec_id).unwrap_or(0);
        self.mixer.add(call, opts);
        self.members.push(member);
        TICK_STATS.members.fetch_add(1, Ordering::Relaxed);
        self.reindex();
        let i = self.members.len() - 1;
        self.apply(i);
        self.retune();
    }

    /// The rate the room mixes at now.
    pub fn rate(&self) -> u32 {
        self.mixer.config().rate
    }

    /// Mixes at 8 kHz while every member is narrowband (G.711), at the configured rate
    /// otherwise, as Asterisk's softmix picks its mixing rate from its members: a room of
    /// telephone callers then resamples nothing and mixes half the samples (resampling was
    /// the largest single cost of a 16 kHz G.711 room). Called when members come and go or
    /// change codec; a change rebuilds the room's rate-dependent state between ticks.
    fn retune(&mut self) {
        let narrowband = !self.members.is_empty() && self.members.iter().all(|m| m.seat.stream.pcm_rate() == 8000);
        let want = if narrowband { 8000 } else { self.cfg.rate };
        if want != self.rate() {
            self.set_rate(want);
        }
    }

    fn set_rate(&mut self, rate: u32) {
        let old = self.rate();
        self.mixer = self.mixer.at_rate(MixerConfig { rate, ..self.cfg });
        for m in &mut self.members {
            m.fit_resamplers(rate);
            if let Some((p, what)) = m.playback.take() {
                m.playback = Some((PromptPlayer::new(resampled(p.remaining(), old, rate)), what));
            }
        }
        // Shared encodings start afresh (their resamplers are rate-bound).
        self.shared.clear();
        self.playback = self
            .playback
            .take()
            .map(|p| PromptPlayer::new(resampled(p.remaining(), old, rate)));
        self.music = None;
        if self.waiting.is_some() {
            self.set_waiting(true);
        }
        self.record_up = (rate != self.cfg.rate).then(|| Resampler::new(rate, self.cfg.rate));
    }

    /// A prompt rendered at the configured rate, at the rate the room mixes at now.
    fn at_room_rate(&self, pcm: Arc<[i16]>) -> Arc<[i16]> {
        if self.rate() == self.cfg.rate {
            pcm
        } else {
            resampled(&pcm, self.cfg.rate, self.rate())
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Frames encoded since the room started.
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Frames of quiet Opus members left undecoded so far.
    pub fn decodes_skipped(&self) -> u64 {
        self.decodes_skipped
    }

    /// One 20 ms tick: receive, mix, encode per group, send.
    pub fn tick(&mut self, now: Instant, tick_no: u64, scratch: &mut Scratch) {
        tick_room(self, now, tick_no, scratch);
    }

    fn reindex(&mut self) {
        self.index = self.members.iter().enumerate().map(|(i, m)| (m.call, i)).collect();
    }

    /// Mixer options from what people asked and the call's state: a held member is neither
    /// heard (their hold music stays out of the room) nor sent anything.
    fn apply(&mut self, i: usize) {
        let m = &self.members[i];
        let (muted, deaf) = (m.muted || m.cough || m.held, m.deaf || m.held);
        let codec = m.seat.stream.codec().map(codec_id).unwrap_or(0);
        self.mixer.set(m.call, |o| {
            o.muted = muted;
            o.deaf = deaf;
            o.codec = codec;
        });
    }
}

/// Scratch buffers of one thread, shared by its rooms.
#[derive(Default)]
pub struct Scratch {
    pub(super) batch: crate::room::batch::RecvBatch,
    pub(super) room_pcm: Vec<i16>,
    pub(super) mixed: Vec<i16>,
    pub(super) codec_pcm: Vec<i16>,
    pub(super) room_tone: Vec<i16>,
    pub(super) music: Vec<i16>,
}

/// Where an interpretation room's member talks and what it hears.
fn place(r: &mut LiveRoom, i: usize, p: crate::room::interpretation::Placement) {
    let call = r.members[i].call;
    r.members[i].cough = p.cough;
    r.mixer.set(call, |o| {
        o.talk = p.talk;
        o.hear = p.hear;
    });
}

pub(super) fn find(rooms: &mut [LiveRoom], call: u64) -> Option<(&mut LiveRoom, usize)> {
    rooms
        .iter_mut()
        .find_map(|r| r.index.get(&call).copied().map(|i| (r, i)))
}

pub(super) fn end_playback(m: &mut MixMember) {
    if let Some((_, what)) = m.playback.take() {
        (m.seat.reports)(MemberReport::PlaybackDone { what, ok: true });
    }
}

/// Passes on what a member's stream found (digits pressed, digits sent).
pub(super) fn forward_events(seat: &mut Seat) {
    while let Some(e) = seat.stream.poll_event() {
        (seat.reports)(MemberReport::Stream(e));
    }
}

pub(super) fn apply(cmd: Command, rooms: &mut Vec<LiveRoom>, cfg: MixerConfig) {
    match cmd {
        Command::Join {
            room,
            seat,
            opts,
            waiting,
        } => {
            TICK_STATS.joins.fetch_add(1, Ordering::Relaxed);
            let ri = match rooms.iter().position(|r| r.name == room) {
                Some(i) => i,
                None => {
                    let mut r = LiveRoom::new(&room, cfg);
                    r.set_waiting(waiting);
                    rooms.push(r);
                    TICK_STATS.rooms.fetch_add(1, Ordering::Relaxed);
                    rooms.len() - 1
                }
            };
            rooms[ri].join(seat, opts);
        }
        Command::Record {
            room,
            path,
            on_done,
            notice,
        } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.record(path, on_done);
                // Everyone hears that the room is being recorded.
                if let Some(pcm) = notice {
                    r.playback = Some(PromptPlayer::new(r.at_room_rate(pcm)));
                }
            }
        }
        Command::PauseRecording { room, paused } => {
            if let Some(rec) = rooms
                .iter_mut()
                .find(|r| r.name == room)
                .and_then(|r| r.recorder.as_mut())
            {
                rec.paused = paused;
            }
        }
        Command::StopRecording { room } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.stop_recording();
            }
        }
        Command::Waiting { room, waiting } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.set_waiting(waiting);
            }
        }
        Command::Leave { call } => {
            let Some(ri) = rooms.iter().position(|r| r.index.contains_key(&call)) else {
                return;
            };
            let r = &mut rooms[ri];
            let i = r.index[&call];
            let mut m = r.members.remove(i);
            r.mixer.remove(call);
            r.reindex();
            TICK_STATS.members.fetch_sub(1, Ordering::Relaxed);
            end_playback(&mut m);
            hand_back(m);
            if r.members.is_empty() {
                rooms.remove(ri);
                TICK_STATS.rooms.fetch_sub(1, Ordering::Relaxed);
            } else {
                r.retune();
            }
        }
        Command::Media { call, media } => {
            if let Some((r, i)) = find(rooms, call) {
                let m = &mut r.members[i];
                let old_rate = m.seat.stream.pcm_rate();
                m.seat.stream.set_media(media);
                m.seat.stream.set_opus_rate(r.cfg.rate, Some(r.cfg.opus_complexity));
                m.held = m.seat.stream.held();
                if m.seat.stream.pcm_rate() != old_rate {
                    let room_rate = r.rate();
                    r.members[i].fit_resamplers(room_rate);
                }
                r.apply(i);
                r.retune();
            }
        }
        Command::Change { call, change } => {
            if let Some((r, i)) = find(rooms, call) {
                let m = &mut r.members[i];
                match change {
                    MemberChange::Muted(v) => m.muted = v,
                    MemberChange::Deaf(v) => m.deaf = v,
                    MemberChange::ListenGain(g) => {
                        r.mixer.set(call, |o| o.listen_gain = g);
                    }
                    MemberChange::TalkGain(g) => {
                        r.mixer.set(call, |o| o.talk_gain = g);
                    }
                    MemberChange::Place(p) => place(r, i, p),
                }
                r.apply(i);
            }
        }
        Command::Place { room, placements } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                for (call, p) in placements {
                    if let Some(&i) = r.index.get(&call) {
                        place(r, i, p);
                        r.apply(i);
                    }
                }
            }
        }
        Command::PlayTo { call, pcm, what } => {
            if let Some((r, i)) = find(rooms, call) {
                let pcm = r.at_room_rate(pcm);
                let m = &mut r.members[i];
                end_playback(m);
                m.playback = Some((PromptPlayer::new(pcm), what));
            }
        }
        Command::StopTo { call } => {
            if let Some((r, i)) = find(rooms, call) {
                end_playback(&mut r.members[i]);
            }
        }
        Command::PlayRoom { room, pcm } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.playback = Some(PromptPlayer::new(r.at_room_rate(pcm)));
            }
        }
    }
}

/// Gives a member's stream back to its leg, at the leg's Opus rate.
pub(super) fn hand_back(mut m: MixMember) {
    m.seat.stream.set_opus_rate(48_000, None);
    let _ = m.seat.give_back.send(m.seat.stream);
}

/// Resamples one frame to exactly `want` samples (the first frames of a resampler come out
/// short by its filter delay: padded with silence).
pub(super) fn convert(r: &mut Resampler, input: &[i16], out: &mut Vec<i16>, want: usize) {
    out.clear();
    r.process(input, out);
    out.resize(want, 0);
}

pub(super) fn tick_room(room: &mut LiveRoom, now: Instant, tick_no: u64, s: &mut Scratch) {
    // A member whose leg is gone (its call ended and the Leave was lost) is dropped; looked
    // for every tenth tick (an atomic load per member, 1% of a tick when done every tick).
    if tick_no.is_multiple_of(10) && room.members.iter().any(|m| m.seat.give_back.is_closed()) {
        let gone: Vec<u64> = room
            .members
            .iter()
            .filter(|m| m.seat.give_back.is_closed())
            .map(|m| m.call)
            .collect();
        room.members.retain(|m| !m.seat.give_back.is_closed());
        for call in gone {
            room.mixer.remove(call);
            TICK_STATS.members.fetch_sub(1, Ordering::Relaxed);
        }
        room.reindex();
        room.retune();
    }
    let room_frame = room.mixer.config().frame_len();
    let mut buf = [0u8; 2048];
    let (mut decodes, mut skipped) = (0u64, 0u64);
    // 1. Receive and play out one frame per member.
    for (i, m) in room.members.iter_mut().enumerate() {
        let st = &mut m.seat.stream;
        // Everything waiting, in one system call (a burst beyond a batch waits a tick).
        for k in 0..s.batch.recv(&m.seat.rtp) {
            if let Some((bytes, from)) = s.batch.get(k) {
                st.on_rtp(now, from, bytes);
            }
        }
        // RTCP is read and sent every RTCP_EVERY ticks, staggered over the members (its
        // reports are seconds apart: a read per member every tenth tick was 150 system
        // calls a tick at 1,500 members, nearly all finding nothing).
        if (tick_no + i as u64).is_multiple_of(RTCP_EVERY) {
            while let Ok((n, from)) = m.seat.rtcp.recv_from(&mut buf) {
                st.on_rtcp(now, from, &buf[..n]);
            }
            room.peer_loss = room.peer_loss.max(st.peer_loss_percent());
            st.poll_rtcp(now, &m.seat.rtcp);
            // Reported once it gets through (the gateway hangs the call up).
            if !m.timed_out && now.duration_since(st.last_packet()) > m.seat.rtp_timeout {
                m.timed_out = (m.seat.reports)(MemberReport::TimedOut);
            }
        }
        // A member who is not talking may not need decoding at all (Opus packets flagged as
        // no speech); a quiet frame from them is silence to the mixer: it is not resampled or
        // pushed (most members, most of the time).
        let intake = room.mixer.intake(m.call);
        // A voice on a language channel is mixed whole: treat it as always talking.
        let talking = intake.talking || intake.whole;
        // Quiet members' checks are staggered over the members, like the RTCP work.
        let quiet = (!talking && room.mixer.config().skip_quiet_opus)
            .then(|| (tick_no + i as u64).is_multiple_of(stream::QUIET_CHECK_EVERY));
        let pulled = if intake.unheard {
            st.pull_unheard(now)
        } else {
            st.pull_for_mix(now, quiet)
        };
        forward_events(&mut m.seat);
        let st = &mut m.seat.stream;
        match pulled {
            Pull::Decoded => decodes += 1,
            Pull::Skipped => skipped += 1,
            Pull::Nothing => {}
        }
        let pushed = pulled == Pull::Decoded && !m.held && (talking || room.mixer.is_loud(st.pcm()));
        if pushed {
            // After frames that were not resampled (quiet), the resampler's history is old
            // audio (the end of the last talk spurt): start it afresh rather than join them.
            if !m.pushed_last_tick {
                m.to_room.restart();
            }
            convert(&mut m.to_room, st.pcm(), &mut s.room_pcm, room_frame);
            room.mixer.push(m.call, &s.room_pcm);
        }
        m.pushed_last_tick = pushed;
    }
    TICK_STATS.decodes.fetch_add(decodes, Ordering::Relaxed);
    TICK_STATS.decodes_skipped.fetch_add(skipped, Ordering::Relaxed);
    room.decodes_skipped += skipped;
    // Shared encoders spend FEC on the worst loss their room's members reported in the last
    // second (a shared payload cannot be tuned per receiver).
    if tick_no.is_multiple_of(50) {
        if room.peer_loss != room.shared_loss {
            for e in &mut room.shared {
                e.enc.set_expected_loss(room.peer_loss);
            }
            room.shared_loss = room.peer_loss;
        }
        room.peer_loss = 0;
    }
    // 2. Mix.
    room.mixer.mix();
    for c in room.mixer.talk_changes() {
        if let Some(&i) = room.index.get(&c.member) {
            let m = &room.members[i];
            (m.seat.reports)(MemberReport::Talking(c.talking));
        }
    }
    // A tone or prompt for the whole room (join and leave tones) goes over every mix.
    s.room_tone.clear();
    if let Some(p) = room.playback.as_mut()
        && !p.next_frame(room_frame, &mut s.room_tone)
    {
        room.playback = None;
    }
    // The recording: the mix without those who opted out, with the room's tones and prompts.
    if let Some(rec) = room.recorder.as_mut()
        && !rec.paused
    {
        s.mixed.clear();
        s.mixed.extend_from_slice(room.mixer.record_frame());
        for (o, t) in s.mixed.iter_mut().zip(&s.room_tone) {
            *o = o.saturating_add(*t);
        }
        match room.record_up.as_mut() {
            Some(up) => {
                convert(up, &s.mixed, &mut s.codec_pcm, room.cfg.frame_len());
                rec.push(&s.codec_pcm);
            }
            None => rec.push(&s.mixed),
        }
    }
    // While the room waits for a moderator, everyone hears the same music instead.
    let mut music = std::mem::take(&mut s.music);
    music.clear();
    if let Some(p) = room.waiting.as_mut()
        && !p.next_frame(room_frame, &mut music)
    {
        // The loop ended: start it again.
        room.set_waiting(true);
    }
    let waiting = room.waiting.is_some();
    let encodes_before = room.encodes;
    let mut sends = 0u64;
    // 3. Encode once per group and send.
    let LiveRoom {
        mixer,
        members,
        index,
        shared,
        encodes,
        shared_loss,
        ..
    } = room;
    for g in mixer.groups() {
        let frame = if waiting { &music[..] } else { mixer.frame(g) };
        s.mixed.clear();
        s.mixed.extend_from_slice(frame);
        for (o, t) in s.mixed.iter_mut().zip(&s.room_tone) {
            *o = o.saturating_add(*t);
        }
        // The group's shared encoding is made on first use this tick.
        let mut encoded: Option<usize> = None;
        // Whether the group's frame is loud (worked out on first need).
        let mut loud: Option<bool> = None;
        for id in &g.members {
            let Some(&i) = index.get(id) else { continue };
            let m = &mut members[i];
            let Some(codec) = m.seat.stream.codec() else { continue };
            let want = m.seat.stream.frame_samples();
            // A member who stops talking moves from its own encoder to the group's shared
            // one. With a codec that keeps state (G.722's ADPCM predictors, Opus) the far
            // end's decoder is in step with the own encoder, and the shared stream throws it
            // off for ~100 ms (16 dB SNR in its first frame, 46 dB from the seventh: `g722` tests): so
            // the change waits for a quiet frame of the mix, where that error is inaudible.
            let hand_over_later = g.is_shared()
                && !waiting
                && m.own_last_tick
                && !matches!(codec, Codec::Pcmu | Codec::Pcma)
                && m.handover_ticks < HANDOVER_MAX_TICKS
                && *loud.get_or_insert_with(|| mixer.is_loud(&s.mixed));
            if m.playback.is_some() || (!g.is_shared() && !waiting) || hand_over_later {
                // Only ticks spent waiting for the quiet moment count (not those of a prompt).
                if !hand_over_later {
                    m.handover_ticks = 0;
                } else if m.playback.is_none() {
                    m.handover_ticks += 1;
                }
                m.own_last_tick = true;
                // Heard alone: this member's own encoder (and its prompt over the room).
                let mut own = std::mem::take(&mut s.codec_pcm);
                if let Some((p, _)) = m.playback.as_mut() {
                    let mut prompt = std::mem::take(&mut s.room_pcm);
                    prompt.clear();
                    let more = p.next_frame(room_frame, &mut prompt);
                    for (o, p) in s.mixed.iter().zip(prompt.iter_mut()) {
                        *p = p.saturating_add(*o);
                    }
                    convert(&mut m.from_room, &prompt, &mut own, want);
                    s.room_pcm = prompt;
                    if !more {
                        end_playback(m);
                    }
                } else {
                    convert(&mut m.from_room, &s.mixed, &mut own, want);
                }
                m.seat.stream.send_pcm(now, &own, &m.seat.rtp);
                s.codec_pcm = own;
                *encodes += 1;
                sends += 1;
                continue;
            }
            if encoded.is_none() {
                let (gain, key) = (g.listen_gain(), g.key());
                let ei = match shared
                    .iter()
                    .position(|e| e.codec == codec && e.listen_gain == gain && e.key == key)
                {
                    Some(ei) => ei,
                    None => {
                        let rate = rate_in_room(codec, mixer.config().rate);
                        let Some(mut enc) = encoder(codec, rate, Some(mixer.config().opus_complexity)) else {
                            continue;
                        };
                        enc.set_expected_loss(*shared_loss);
                        shared.push(SharedEncoder {
                            codec,
                            listen_gain: gain,
                            key,
                            from_room: Resampler::new(mixer.config().rate, rate),
                            enc,
                            payload: Vec::with_capacity(1500),
                            tick: u64::MAX,
                        });
                        shared.len() - 1
                    }
                };
                let e = &mut shared[ei];
                if e.tick != tick_no {
                    convert(&mut e.from_room, &s.mixed, &mut s.codec_pcm, want);
                    e.payload.clear();
                    e.enc.encode(&s.codec_pcm, &mut e.payload);
                    e.tick = tick_no;
                    *encodes += 1;
                }
                encoded = Some(ei);
            }
            let Some(ei) = encoded else { continue };
            m.own_last_tick = false;
            m.handover_ticks = 0;
            m.seat.stream.send_payload(now, &shared[ei].payload, &m.seat.rtp);
            sends += 1;
        }
    }
    // Deaf members hear nothing from the room, but still get RTP (silence, or a prompt to
    // them): carriers hang up calls whose media stops.
    for m in members.iter_mut().filter(|m| m.deaf && !m.held) {
        let want = m.seat.stream.frame_samples();
        s.mixed.clear();
        s.mixed.resize(room_frame, 0);
        if let Some((p, _)) = m.playback.as_mut() {
            s.mixed.clear();
            if !p.next_frame(room_frame, &mut s.mixed) {
                end_playback(m);
            }
        }
        convert(&mut m.from_room, &s.mixed, &mut s.codec_pcm, want);
        let pcm = std::mem::take(&mut s.codec_pcm);
        m.own_last_tick = true;
        m.seat.stream.send_pcm(now, &pcm, &m.seat.rtp);
        s.codec_pcm = pcm;
        *encodes += 1;
        sends += 1;
    }
    s.music = music;
    // Shared counters are touched once per room tick, not per packet.
    TICK_STATS
        .encodes
        .fetch_add(*encodes - encodes_before, Ordering::Relaxed);
    TICK_STATS.sends.fetch_add(sends, Ordering::Relaxed);
}
