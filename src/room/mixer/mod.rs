//! The conference mixer (pure: frames in, frames out, no clock, no I/O). Every 20 ms tick
//! each member may hand in one frame of PCM at the room's rate; [`Mixer::mix`] then gives
//! every member what it should hear: the sum of the members talking, minus its own voice
//! (N-1), through a soft limiter. Members who are not contributing this tick (silent,
//! muted) and who listen the same way (same codec, same listen gain) hear the same thing, so
//! they are put in one group and the I/O layer encodes that group once, as Asterisk's
//! softmix does; a talker's output is its own group.
//!
//! A member contributes only while talking: frame energy above the talk threshold, held for a
//! hangover after it drops, so background noise of idle lines is not summed into the room.
//! Nothing here allocates after the members are added (buffers are kept and reused).
//!
//! Interpretation rooms add **buses** ([`Bus`]): the floor (every conference room has only
//! that) and up to [`MAX_CHANNELS`] language channels. Each member talks into one bus or none
//! ([`MemberOptions::talk`]) and hears one ([`Hear`]): a channel is its booth's live
//! interpreter with the floor underneath at the listener's bleed when the booth is staffed
//! (someone talks into it, even muted), and the floor alone when it is not. Voices on a
//! channel are not gated by the talk threshold (one interpreter's microphone, heard whole);
//! the floor is. Who talks into which bus is decided by [`super::interpretation`].

/// A member's id (the call, for the I/O layer).
pub type MemberId = u64;

/// Room-wide settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixerConfig {
    /// 8,000, 16,000 or 48,000.
    pub rate: u32,
    /// Frame energy (dBFS RMS) above which a member counts as talking.
    pub talk_threshold_dbfs: f64,
    /// Frames a member still counts as talking after its energy drops (bridges pauses
    /// between words so their beginnings are not clipped).
    pub hangover_frames: u32,
    /// libopus complexity of the room's Opus encoders (0-10).
    pub opus_complexity: i32,
    /// Leave quiet members' inactive Opus packets undecoded (`room.skip_quiet_opus`).
    pub skip_quiet_opus: bool,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            rate: 16_000,
            talk_threshold_dbfs: -45.0,
            hangover_frames: 15,
            opus_complexity: 1,
            skip_quiet_opus: true,
        }
    }
}

/// `[room]` as the mixer applies it.
impl From<&crate::config::RoomConfig> for MixerConfig {
    fn from(cfg: &crate::config::RoomConfig) -> MixerConfig {
        MixerConfig {
            rate: cfg.rate,
            talk_threshold_dbfs: cfg.talk_threshold_dbfs,
            opus_complexity: cfg.opus_complexity,
            skip_quiet_opus: cfg.skip_quiet_opus,
            ..Default::default()
        }
    }
}

impl MixerConfig {
    /// Samples in one 20 ms frame.
    pub fn frame_len(&self) -> usize {
        self.rate as usize / 50
    }
}

/// Language channels per room, at most (channel numbers are 1..=32).
pub const MAX_CHANNELS: u8 = 32;

/// Where a voice goes: the floor or a language channel (1..=[`MAX_CHANNELS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bus {
    Floor,
    Channel(u8),
}

impl Bus {
    /// The number keypads, events, CDRs and the API use: 0 is the floor.
    pub fn number(self) -> u8 {
        match self {
            Bus::Floor => 0,
            Bus::Channel(c) => c,
        }
    }

    /// The bus of a number (0: the floor).
    pub fn from_number(n: u8) -> Bus {
        match n {
            0 => Bus::Floor,
            c => Bus::Channel(c),
        }
    }

    /// The channel's slot in the mixer's channel sums (None for the floor or a number out of
    /// range, which is treated as no channel).
    fn slot(self) -> Option<usize> {
        match self {
            Bus::Channel(c) if (1..=MAX_CHANNELS).contains(&c) => Some(c as usize - 1),
            _ => None,
        }
    }
}

/// What a member hears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hear {
    /// The floor, or a channel (its live interpreter over the floor at `bleed`; the floor
    /// alone while the booth is unstaffed).
    pub source: Bus,
    /// Gain of the floor under a staffed channel (0.0 = none; -18 dB is 0.126).
    pub bleed: f32,
    /// A booth's channel heard as well, at full level: an off-mic interpreter hears the live
    /// partner over the source.
    pub partner: Option<u8>,
}

impl Hear {
    /// The partner's channel slot, if any (and in range).
    fn partner_slot(self) -> Option<usize> {
        self.partner.map(Bus::Channel).and_then(Bus::slot)
    }

    pub const FLOOR: Hear = Hear {
        source: Bus::Floor,
        bleed: 0.0,
        partner: None,
    };
}

/// How a member takes part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberOptions {
    /// Not heard by others (still hears them).
    pub muted: bool,
    /// Hears nothing (still heard unless muted).
    pub deaf: bool,
    /// Gain on what this member says (1.0 = as is).
    pub talk_gain: f32,
    /// Gain on what this member hears.
    pub listen_gain: f32,
    /// Which encoder the member's leg uses (members of one codec can share an encoding).
    pub codec: u8,
    /// In the room's recording (false for callers who opted out of recording: they are
    /// still heard live).
    pub recorded: bool,
    /// The bus the member's voice goes to (None: heard by no one, as a listener).
    pub talk: Option<Bus>,
    pub hear: Hear,
}

impl Default for MemberOptions {
    fn default() -> Self {
        MemberOptions {
            muted: false,
            deaf: false,
            talk_gain: 1.0,
            listen_gain: 1.0,
            codec: 0,
            recorded: true,
            talk: Some(Bus::Floor),
            hear: Hear::FLOOR,
        }
    }
}

struct Member {
    id: MemberId,
    opts: MemberOptions,
    input: Vec<i16>,
    has_input: bool,
    talking: bool,
    hangover: u32,
    /// Contributes to this tick's mix.
    contributing: bool,
}

/// Members who hear the same frame: encode it once, send it to each.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub members: Vec<MemberId>,
    pub codec: u8,
    /// Index of the frame in [`Mixer::frame`].
    frame: usize,
    /// The full mix, shared by members who do not contribute (else one talker's N-1 mix).
    shared: bool,
    listen_gain: f32,
    key: HearKey,
}

impl Group {
    /// Heard by every member that is not contributing (else one talker's own N-1 mix).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn listen_gain(&self) -> f32 {
        self.listen_gain
    }

    /// What the group hears, as a key: members whose hearings come to the same mix this
    /// tick (a floor listener and an interpreter on the floor; the listeners of an unstaffed
    /// channel and the floor's) have the same key, and may share one encoding.
    pub fn key(&self) -> HearKey {
        self.key
    }
}

/// Which buses, at which levels, a group hears ([`Group::key`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HearKey(Weights);

impl Default for HearKey {
    fn default() -> Self {
        HearKey(Weights::of(Hear::FLOOR, 0))
    }
}

/// How much of each bus one hearing takes this tick (derived from [`Hear`] and which
/// booths are staffed).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Weights {
    floor: f32,
    channel: Option<usize>,
    partner: Option<usize>,
}

impl Weights {
    fn of(hear: Hear, staffed: u64) -> Weights {
        let partner = hear.partner_slot();
        match hear.source.slot() {
            Some(c) if staffed & (1 << c) != 0 => Weights {
                floor: hear.bleed,
                channel: Some(c),
                partner: partner.filter(|&p| p != c),
            },
            _ => Weights {
                floor: 1.0,
                channel: None,
                partner,
            },
        }
    }

    /// Whether a voice on `bus` is in what these weights hear.
    fn includes(&self, bus: Bus) -> bool {
        match bus.slot() {
            None => self.floor != 0.0,
            Some(c) => self.channel == Some(c) || self.partner == Some(c),
        }
    }
}

/// How a member's frames are taken this tick ([`Mixer::intake`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Intake {
    pub talking: bool,
    /// Every frame is mixed, quiet or not.
    pub whole: bool,
    /// Nobody hears the member: it need not be decoded.
    pub unheard: bool,
}

/// A change in who is talking, for events and the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkChange {
    pub member: MemberId,
    pub talking: bool,
}

/// One room's mixer.
pub struct Mixer {
    cfg: MixerConfig,
    members: Vec<Member>,
    /// Member id -> position in `members` (frames are pushed by id every tick).
    index: std::collections::HashMap<MemberId, usize>,
    /// The sum of every floor contributor (i32: no wrap-around before the limiter).
    sum: Vec<i32>,
    /// Each language channel's sum (slot c-1 for channel c), made as channels come in use.
    channels: Vec<Vec<i32>>,
    /// Bit c-1: channel c has a member talking into it (even muted) this tick.
    staffed: u64,
    /// Output frames; groups point into this.
    frames: Vec<Vec<i16>>,
    groups: Vec<Group>,
    /// Groups in use this tick (the rest keep their buffers for the next).
    active_groups: usize,
    changes: Vec<TalkChange>,
    threshold_sq: f64,
    /// Whether [`Mixer::record_frame`] is made each tick.
    recording: bool,
    /// The recorded mix: every contributor in the recording (not the opted-out).
    record: Vec<i16>,
}

/// The soft limiter: linear up to the knee, then a tanh curve that approaches full scale
/// without reaching it, so loud sums are compressed, never wrapped or hard-clipped.
pub fn limit(x: i32) -> i16 {
    const KNEE: f32 = 24_576.0; // -2.5 dBFS
    const ROOM: f32 = 32_767.0 - KNEE;
    let a = (x as f32).abs();
    if a <= KNEE {
        return x as i16;
    }
    let y = KNEE + ROOM * ((a - KNEE) / ROOM).tanh();
    (y.min(32_767.0) as i16) * if x < 0 { -1 } else { 1 }
}

/// A voice sample at a talk gain.
fn scaled(s: i16, gain: f32) -> i32 {
    if gain == 1.0 {
        s as i32
    } else {
        (s as f32 * gain) as i32
    }
}

/// A sum at a listen gain.
fn gained(v: i32, gain: f32) -> i32 {
    if gain == 1.0 { v } else { (v as f32 * gain) as i32 }
}

/// One output frame: the buses `w` takes, without the member's own voice (`own`: its bus
/// slot - None for the floor -, its input and talk gain) when it hears its own bus, at the
/// listen gain, through the limiter.
fn mix_frame(
    out: &mut [i16],
    floor: &[i32],
    channels: &[Vec<i32>],
    w: Weights,
    own: Option<(Option<usize>, &[i16], f32)>,
    listen_gain: f32,
) {
    let channel = w.channel.map(|c| &channels[c][..]);
    let partner = w.partner.map(|c| &channels[c][..]);
    if channel.is_none() && partner.is_none() && w.floor == 1.0 {
        // A conference room: the floor, in integers (one loop per case: no test per sample).
        match own {
            Some((None, input, tg)) if tg == 1.0 && listen_gain == 1.0 => {
                for ((o, &f), &s) in out.iter_mut().zip(floor).zip(input) {
                    *o = limit(f - s as i32);
                }
            }
            Some((None, input, tg)) => {
                for ((o, &f), &s) in out.iter_mut().zip(floor).zip(input) {
                    *o = limit(gained(f - scaled(s, tg), listen_gain));
                }
            }
            _ if listen_gain == 1.0 => {
                for (o, &f) in out.iter_mut().zip(floor) {
                    *o = limit(f);
                }
            }
            _ => {
                for (o, &f) in out.iter_mut().zip(floor) {
                    *o = limit(gained(f, listen_gain));
                }
            }
        }
        return;
    }
    for (k, o) in out.iter_mut().enumerate() {
        let own_at = |slot: Option<usize>| match own {
            Some((s, input, tg)) if s == slot => scaled(input[k], tg),
            _ => 0,
        };
        let mut v = 0.0f32;
        if w.floor != 0.0 {
            v += (floor[k] - own_at(None)) as f32 * w.floor;
        }
        if let Some(c) = channel {
            v += (c[k] - own_at(w.channel)) as f32;
        }
        if let Some(p) = partner {
            v += (p[k] - own_at(w.partner)) as f32;
        }
        *o = limit((v * listen_gain) as i32);
    }
}

impl Mixer {
    pub fn new(cfg: MixerConfig) -> Mixer {
        let full_scale_sq = 32_768.0f64 * 32_768.0;
        Mixer {
            cfg,
            members: Vec::new(),
            index: std::collections::HashMap::new(),
            sum: vec![0; cfg.frame_len()],
            channels: Vec::new(),
            staffed: 0,
            frames: Vec::new(),
            groups: Vec::new(),
            active_groups: 0,
            changes: Vec::new(),
            threshold_sq: full_scale_sq * 10f64.powf(cfg.talk_threshold_dbfs / 10.0),
            recording: false,
            record: vec![0; cfg.frame_len()],
        }
    }

    pub fn config(&self) -> &MixerConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Makes the channel sums `opts` refers to.
    fn ensure_channels(&mut self, opts: &MemberOptions) {
        let used = [
            opts.talk.and_then(Bus::slot),
            opts.hear.source.slot(),
            opts.hear.partner_slot(),
        ];
        let n = self.cfg.frame_len();
        for slot in used.into_iter().flatten() {
            while self.channels.len() <= slot {
                self.channels.push(vec![0; n]);
            }
        }
    }

    /// Adds (or replaces) a member.
    pub fn add(&mut self, id: MemberId, opts: MemberOptions) {
        self.remove(id);
        self.ensure_channels(&opts);
        let n = self.cfg.frame_len();
        self.members.push(Member {
            id,
            opts,
            input: vec![0; n],
            has_input: false,
            talking: false,
            hangover: 0,
            contributing: false,
        });
        self.index.insert(id, self.members.len() - 1);
        // Worst case every member hears its own frame, plus one shared frame per codec.
        while self.frames.len() < self.members.len() + 4 {
            self.frames.push(vec![0; n]);
        }
    }

    pub fn remove(&mut self, id: MemberId) {
        if self.index.remove(&id).is_some() {
            self.members.retain(|m| m.id != id);
            self.index = self.members.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
        }
    }

    /// Changes a member's options (mute, deaf, gains, codec); false if unknown.
    pub fn set(&mut self, id: MemberId, f: impl FnOnce(&mut MemberOptions)) -> bool {
        match self.members.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                f(&mut m.opts);
                let opts = m.opts;
                self.ensure_channels(&opts);
                true
            }
            None => false,
        }
    }

    /// This tick's frame from a member (shorter frames are padded with silence; a member
    /// with no frame this tick counts as silent).
    pub fn push(&mut self, id: MemberId, pcm: &[i16]) {
        if let Some(m) = self.index.get(&id).and_then(|&i| self.members.get_mut(i)) {
            let n = m.input.len().min(pcm.len());
            m.input[..n].copy_from_slice(&pcm[..n]);
            m.input[n..].fill(0);
            m.has_input = true;
        }
    }

    /// Mixes this tick. Afterwards [`Mixer::groups`] lists who hears which frame and
    /// [`Mixer::talk_changes`] who started or stopped talking; inputs are consumed.
    pub fn mix(&mut self) {
        self.changes.clear();
        self.sum.fill(0);
        for c in &mut self.channels {
            c.fill(0);
        }
        self.staffed = 0;
        for m in &mut self.members {
            let energy = if m.has_input {
                m.input.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / m.input.len().max(1) as f64
            } else {
                0.0
            };
            let loud = energy > self.threshold_sq;
            let was = m.talking;
            if loud {
                m.talking = true;
                m.hangover = self.cfg.hangover_frames;
            } else if m.hangover > 0 {
                m.hangover -= 1;
            } else {
                m.talking = false;
            }
            if was != m.talking {
                self.changes.push(TalkChange {
                    member: m.id,
                    talking: m.talking,
                });
            }
            let slot = m.opts.talk.and_then(Bus::slot);
            if let Some(c) = slot {
                self.staffed |= 1 << c;
            }
            // The floor is gated by the talk threshold; a channel carries its microphone whole.
            m.contributing = m.has_input
                && !m.opts.muted
                && match m.opts.talk {
                    None => false,
                    Some(Bus::Floor) => m.talking,
                    Some(Bus::Channel(_)) => slot.is_some(),
                };
            if m.contributing {
                let bus = match slot {
                    Some(c) => &mut self.channels[c],
                    None => &mut self.sum,
                };
                for (acc, &s) in bus.iter_mut().zip(&m.input) {
                    *acc += scaled(s, m.opts.talk_gain);
                }
            }
        }
        // The recording: the floor without the contributors who opted out of recording.
        if self.recording {
            for (k, r) in self.record.iter_mut().enumerate() {
                let mut v = self.sum[k];
                for m in self
                    .members
                    .iter()
                    .filter(|m| m.contributing && !m.opts.recorded && m.opts.talk == Some(Bus::Floor))
                {
                    v -= scaled(m.input[k], m.opts.talk_gain);
                }
                *r = limit(v);
            }
        }
        // Groups: a member who hears its own bus hears it without itself (N-1); the others
        // share one frame per (hearing, codec, gain).
        for g in &mut self.groups {
            g.members.clear();
        }
        let mut used_groups = 0;
        let mut used_frames = 0;
        for i in 0..self.members.len() {
            let (id, opts, contributing) = {
                let m = &self.members[i];
                (m.id, m.opts, m.contributing)
            };
            if opts.deaf {
                continue;
            }
            let w = Weights::of(opts.hear, self.staffed);
            let own_bus = opts.talk.filter(|&b| contributing && w.includes(b));
            if own_bus.is_none() {
                // Join a shared group of the same mix, codec and listen gain, if one exists.
                let found = self.groups[..used_groups].iter().position(|g| {
                    g.shared && g.codec == opts.codec && g.listen_gain == opts.listen_gain && g.key == HearKey(w)
                });
                if let Some(gi) = found {
                    self.groups[gi].members.push(id);
                    continue;
                }
            }
            let frame = used_frames;
            used_frames += 1;
            let own = own_bus.map(|b| (b.slot(), &self.members[i].input[..], opts.talk_gain));
            mix_frame(
                &mut self.frames[frame],
                &self.sum,
                &self.channels,
                w,
                own,
                opts.listen_gain,
            );
            if used_groups == self.groups.len() {
                self.groups.push(Group {
                    members: Vec::with_capacity(8),
                    codec: 0,
                    frame: 0,
                    shared: false,
                    listen_gain: 1.0,
                    key: HearKey::default(),
                });
            }
            let g = &mut self.groups[used_groups];
            g.members.push(id);
            g.codec = opts.codec;
            g.frame = frame;
            g.shared = own_bus.is_none();
            g.listen_gain = opts.listen_gain;
            g.key = HearKey(w);
            used_groups += 1;
        }
        self.active_groups = used_groups;
        for m in &mut self.members {
            m.has_input = false;
        }
    }

    /// Who hears which frame after [`Mixer::mix`]: one encoding per group.
    pub fn groups(&self) -> &[Group] {
        &self.groups[..self.active_groups]
    }

    /// A group's frame.
    pub fn frame(&self, group: &Group) -> &[i16] {
        &self.frames[group.frame]
    }

    /// The frame `member` hears this tick (None for deaf or unknown members).
    pub fn output_of(&self, member: MemberId) -> Option<&[i16]> {
        self.groups()
            .iter()
            .find(|g| g.members.contains(&member))
            .map(|g| self.frame(g))
    }

    /// A mixer like this one at another rate (`cfg`): the same members with their options,
    /// talk state (no talk events repeat) and recording flag; frames start silent.
    pub fn at_rate(&self, cfg: MixerConfig) -> Mixer {
        let mut m = Mixer::new(cfg);
        for old in &self.members {
            m.add(old.id, old.opts);
            if let Some(new) = m.members.last_mut() {
                new.talking = old.talking;
                new.hangover = old.hangover;
            }
        }
        m.recording = self.recording;
        m
    }

    /// Makes [`Mixer::record_frame`] each tick from now on (or stops).
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// This tick's recorded mix (valid after [`Mixer::mix`] while recording).
    pub fn record_frame(&self) -> &[i16] {
        &self.record
    }

    /// Members who started or stopped talking this tick.
    pub fn talk_changes(&self) -> &[TalkChange] {
        &self.changes
    }

    /// How the I/O layer takes a member's frames this tick, in one lookup: whether it is
    /// talking, whether every frame is mixed quiet or not (a voice on a language channel is
    /// not gated by the talk threshold), and whether nobody hears it nor will without notice
    /// (it talks into no bus and hears no booth partner: a listener), so it need not be
    /// decoded. An off-mic interpreter (who hears its live partner) is still decoded, so
    /// that its decoder is in step the moment it takes the microphone.
    pub fn intake(&self, member: MemberId) -> Intake {
        let Some(m) = self.index.get(&member).and_then(|&i| self.members.get(i)) else {
            return Intake::default();
        };
        Intake {
            talking: m.talking,
            whole: m.opts.talk.and_then(Bus::slot).is_some(),
            unheard: m.opts.talk.is_none() && m.opts.hear.partner.is_none(),
        }
    }

    /// Whether a member counts as talking now.
    pub fn is_talking(&self, member: MemberId) -> bool {
        self.index
            .get(&member)
            .and_then(|&i| self.members.get(i))
            .is_some_and(|m| m.talking)
    }

    /// Whether a frame (at any rate) is loud enough to count as talk: the I/O layer skips
    /// resampling and pushing quiet frames of members who are not talking (most of a room),
    /// which the mixer would treat as silence anyway.
    pub fn is_loud(&self, pcm: &[i16]) -> bool {
        if pcm.is_empty() {
            return false;
        }
        let energy = pcm.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / pcm.len() as f64;
        energy > self.threshold_sq
    }
}

#[cfg(test)]
mod tests;
