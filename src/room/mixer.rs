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
}

impl Group {
    /// Heard by every member that is not contributing (else one talker's own N-1 mix).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn listen_gain(&self) -> f32 {
        self.listen_gain
    }
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
    /// The sum of every contributor (i32: no wrap-around before the limiter).
    sum: Vec<i32>,
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

impl Mixer {
    pub fn new(cfg: MixerConfig) -> Mixer {
        let full_scale_sq = 32_768.0f64 * 32_768.0;
        Mixer {
            cfg,
            members: Vec::new(),
            index: std::collections::HashMap::new(),
            sum: vec![0; cfg.frame_len()],
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

    /// Adds (or replaces) a member.
    pub fn add(&mut self, id: MemberId, opts: MemberOptions) {
        self.remove(id);
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
            m.contributing = m.talking && m.has_input && !m.opts.muted;
            if m.contributing {
                let g = m.opts.talk_gain;
                for (acc, &s) in self.sum.iter_mut().zip(&m.input) {
                    *acc += if g == 1.0 { s as i32 } else { (s as f32 * g) as i32 };
                }
            }
        }
        // The recording: the sum without the contributors who opted out of recording.
        if self.recording {
            for (k, r) in self.record.iter_mut().enumerate() {
                let mut v = self.sum[k];
                for m in self.members.iter().filter(|m| m.contributing && !m.opts.recorded) {
                    let g = m.opts.talk_gain;
                    v -= if g == 1.0 {
                        m.input[k] as i32
                    } else {
                        (m.input[k] as f32 * g) as i32
                    };
                }
                *r = limit(v);
            }
        }
        // Groups: each contributor hears sum - self; the others share per (codec, gain).
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
            if !contributing {
                // Join a shared group of the same codec and listen gain, if one exists.
                let found = self.groups[..used_groups]
                    .iter()
                    .position(|g| g.shared && g.codec == opts.codec && g.listen_gain == opts.listen_gain);
                if let Some(gi) = found {
                    self.groups[gi].members.push(id);
                    continue;
                }
            }
            let frame = used_frames;
            used_frames += 1;
            let out = &mut self.frames[frame];
            let own = &self.members[i].input;
            let tg = opts.talk_gain;
            for (k, o) in out.iter_mut().enumerate() {
                let mut v = self.sum[k];
                if contributing {
                    v -= if tg == 1.0 {
                        own[k] as i32
                    } else {
                        (own[k] as f32 * tg) as i32
                    };
                }
                if opts.listen_gain != 1.0 {
                    v = (v as f32 * opts.listen_gain) as i32;
                }
                *o = limit(v);
            }
            if used_groups == self.groups.len() {
                self.groups.push(Group {
                    members: Vec::with_capacity(8),
                    codec: 0,
                    frame: 0,
                    shared: false,
                    listen_gain: 1.0,
                });
            }
            let g = &mut self.groups[used_groups];
            g.members.push(id);
            g.codec = opts.codec;
            g.frame = frame;
            g.shared = !contributing;
            g.listen_gain = opts.listen_gain;
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
mod tests {
    use super::*;
    use crate::media::analysis::tone_power;

    const RATE: u32 = 16_000;

    fn tone(freq: f64, amplitude: f64, tick: usize) -> Vec<i16> {
        let n = (RATE / 50) as usize;
        (0..n)
            .map(|i| {
                let t = (tick * n + i) as f64 / RATE as f64;
                (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn mixer() -> Mixer {
        Mixer::new(MixerConfig {
            rate: RATE,
            ..MixerConfig::default()
        })
    }

    #[test]
    fn each_member_hears_the_others_and_not_itself() {
        let mut m = mixer();
        let freqs = [(1, 440.0), (2, 620.0), (3, 1000.0)];
        for (id, _) in freqs {
            m.add(id, MemberOptions::default());
        }
        let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 4];
        for tick in 0..10 {
            for (id, f) in freqs {
                m.push(id, &tone(f, 6000.0, tick));
            }
            m.mix();
            for (id, _) in freqs {
                heard[id as usize].extend_from_slice(m.output_of(id).unwrap());
            }
        }
        for (id, own) in freqs {
            let out = &heard[id as usize];
            let own_power = tone_power(out, own, RATE);
            for (other, f) in freqs {
                if other != id {
                    let p = tone_power(out, f, RATE);
                    assert!(
                        p > 1000.0 * own_power.max(1e-9),
                        "member {id}: {f} Hz {p} vs own {own_power}"
                    );
                }
            }
        }
        // Below the limiter's knee the N-1 mix is exact: each output is the sum of the other
        // two inputs, sample for sample (what leaks into the own-tone bin above is spectral
        // leakage of the others' tones, not the member's voice).
        for (id, _) in freqs {
            let expect: Vec<i32> = (0..10)
                .flat_map(|tick| {
                    let parts: Vec<Vec<i16>> = freqs
                        .iter()
                        .filter(|(o, _)| *o != id)
                        .map(|(_, f)| tone(*f, 6000.0, tick))
                        .collect();
                    (0..parts[0].len()).map(move |k| parts.iter().map(|p| p[k] as i32).sum::<i32>())
                })
                .collect();
            let got: Vec<i32> = heard[id as usize].iter().map(|&s| s as i32).collect();
            assert_eq!(got, expect, "member {id}");
        }
    }

    #[test]
    fn a_mixer_moved_to_another_rate_keeps_who_is_talking() {
        let mut m = mixer();
        m.add(1, MemberOptions::default());
        m.add(2, MemberOptions::default());
        m.push(1, &tone(440.0, 6000.0, 0));
        m.mix();
        assert!(m.talk_changes().iter().any(|c| c.member == 1 && c.talking));
        let mut m8 = m.at_rate(MixerConfig {
            rate: 8000,
            ..MixerConfig::default()
        });
        assert_eq!(m8.config().frame_len(), 160);
        assert!(m8.is_talking(1) && !m8.is_talking(2));
        // Still talking at the new rate: no second "started talking".
        let loud: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 6000 } else { -6000 }).collect();
        m8.push(1, &loud);
        m8.mix();
        assert!(m8.talk_changes().is_empty(), "{:?}", m8.talk_changes());
        assert_eq!(m8.output_of(2).map(<[i16]>::len), Some(160));
    }

    #[test]
    fn saturation_is_compressed_not_wrapped() {
        let mut m = mixer();
        for id in 0..10 {
            m.add(id, MemberOptions::default());
        }
        m.add(99, MemberOptions::default()); // a listener
        for tick in 0..5 {
            for id in 0..10 {
                m.push(id, &tone(300.0, 30_000.0, tick));
            }
            m.mix();
            let out = m.output_of(99).unwrap();
            let reference = tone(300.0, 30_000.0, tick);
            for (o, r) in out.iter().zip(&reference) {
                // Same sign as the (ten times too loud) input, and bounded.
                assert!(*r == 0 || (*o as i32).signum() == (*r as i32).signum(), "{o} vs {r}");
                assert!(o.unsigned_abs() <= 32_767);
            }
            assert!(out.iter().any(|&s| s.unsigned_abs() > 30_000), "loud stays loud");
        }
        // The limiter is monotonic and transparent below its knee.
        let mut last = i16::MIN;
        for x in (-400_000..400_000).step_by(997) {
            let y = limit(x);
            assert!(y >= last, "{x}");
            last = y;
        }
        assert_eq!(limit(12_345), 12_345);
        assert_eq!(limit(-20_000), -20_000);
    }

    #[test]
    fn silent_listeners_share_one_encoding_per_codec() {
        let mut m = mixer();
        for id in 1..=3 {
            m.add(id, MemberOptions::default());
        }
        for id in 10..17 {
            m.add(id, MemberOptions::default());
        }
        for tick in 0..3 {
            for id in 1..=3 {
                m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, tick));
            }
            m.mix();
            // 3 talkers each hear their own mix; 7 listeners share one: 4 encodings, not 10.
            assert_eq!(m.groups().len(), 4);
            let shared = m.groups().iter().find(|g| g.members.len() == 7).expect("shared group");
            assert!(shared.members.iter().all(|id| (10..17).contains(id)));
        }
        // Listeners on a second codec get their own shared encoding.
        for id in 13..17 {
            m.set(id, |o| o.codec = 1);
        }
        for id in 1..=3 {
            m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, 3));
        }
        m.mix();
        assert_eq!(m.groups().len(), 5);
        // A listener with another listen gain hears a different frame.
        m.set(10, |o| o.listen_gain = 0.5);
        for id in 1..=3 {
            m.push(id, &tone(300.0 + 100.0 * id as f64, 5000.0, 4));
        }
        m.mix();
        assert_eq!(m.groups().len(), 6);
        let louder = crate::media::analysis::rms(m.output_of(11).unwrap());
        let quieter = crate::media::analysis::rms(m.output_of(10).unwrap());
        assert!((quieter / louder - 0.5).abs() < 0.02, "{quieter} / {louder}");
    }

    #[test]
    fn muted_members_are_not_heard_and_deaf_members_hear_nothing() {
        let mut m = mixer();
        m.add(1, MemberOptions::default());
        m.add(
            2,
            MemberOptions {
                muted: true,
                ..MemberOptions::default()
            },
        );
        m.add(
            3,
            MemberOptions {
                deaf: true,
                ..MemberOptions::default()
            },
        );
        let mut out1 = Vec::new();
        let mut out2 = Vec::new();
        for tick in 0..5 {
            m.push(1, &tone(440.0, 6000.0, tick));
            m.push(2, &tone(620.0, 6000.0, tick));
            m.push(3, &tone(1000.0, 6000.0, tick));
            m.mix();
            out1.extend_from_slice(m.output_of(1).unwrap());
            out2.extend_from_slice(m.output_of(2).unwrap());
            assert!(m.output_of(3).is_none(), "deaf: no frame to send");
        }
        assert!(tone_power(&out1, 620.0, RATE) < 1e-3, "the muted member is not heard");
        assert!(tone_power(&out1, 1000.0, RATE) > 1.0, "the deaf member still is");
        assert!(tone_power(&out2, 440.0, RATE) > 1.0, "the muted member hears the room");
    }

    #[test]
    fn the_recording_leaves_out_members_who_opted_out_but_they_are_heard_live() {
        let mut m = mixer();
        m.add(1, MemberOptions::default());
        m.add(
            2,
            MemberOptions {
                recorded: false,
                ..MemberOptions::default()
            },
        );
        m.add(3, MemberOptions::default());
        m.set_recording(true);
        let (mut recorded, mut heard_by_3) = (Vec::new(), Vec::new());
        for tick in 0..10 {
            m.push(1, &tone(440.0, 6000.0, tick));
            m.push(2, &tone(1000.0, 6000.0, tick));
            m.mix();
            recorded.extend_from_slice(m.record_frame());
            heard_by_3.extend_from_slice(m.output_of(3).unwrap());
        }
        let p = |x: &[i16], f| tone_power(x, f, RATE);
        assert!(
            p(&recorded, 440.0) > 1000.0 * p(&recorded, 1000.0).max(1.0),
            "2 is not recorded"
        );
        assert!(
            p(&heard_by_3, 1000.0) > 1000.0 * p(&heard_by_3, 2000.0).max(1.0),
            "2 is heard live"
        );
    }

    #[test]
    fn quiet_lines_do_not_contribute_and_talk_has_a_hangover() {
        let mut m = Mixer::new(MixerConfig {
            rate: RATE,
            talk_threshold_dbfs: -45.0,
            hangover_frames: 3,
            ..MixerConfig::default()
        });
        m.add(1, MemberOptions::default());
        m.add(2, MemberOptions::default());
        // Line noise at about -66 dBFS: below the threshold, left out of the mix.
        m.push(1, &tone(200.0, 20.0, 0));
        m.mix();
        assert!(!m.is_talking(1));
        assert!(m.output_of(2).unwrap().iter().all(|&s| s == 0));
        // Speech starts: heard at once; a talk event.
        m.push(1, &tone(200.0, 5000.0, 1));
        m.mix();
        assert_eq!(
            m.talk_changes(),
            &[TalkChange {
                member: 1,
                talking: true
            }]
        );
        // It stops: still "talking" (and mixed) for the hangover, then not.
        for _ in 0..3 {
            m.push(1, &tone(200.0, 20.0, 2));
            m.mix();
            assert!(m.is_talking(1));
            assert!(m.talk_changes().is_empty());
        }
        m.push(1, &tone(200.0, 20.0, 3));
        m.mix();
        assert!(!m.is_talking(1));
        assert_eq!(
            m.talk_changes(),
            &[TalkChange {
                member: 1,
                talking: false
            }]
        );
    }
}
