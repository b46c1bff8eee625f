//! The interpretation model and the mixer together, pure: tones in, what each member hears
//! out, measured in dB.

use super::keys::{Key, Keypad};
use super::*;
use crate::media::analysis::tone_power;
use crate::room::mixer::{MemberOptions, Mixer, MixerConfig};

const RATE: u32 = 16_000;
const FRAME: usize = (RATE / 50) as usize;
/// Every tone is a whole number of cycles in a 20 ms frame (50 Hz bins): no leakage.
const FLOOR_HZ: f64 = 450.0;
const SPANISH_HZ: f64 = 700.0;
const FRENCH_HZ: f64 = 1100.0;
const PARTNER_HZ: f64 = 1500.0;
const AMPLITUDE: f64 = 6000.0;

const SPEAKER: MemberId = 1;
const ES: MemberId = 10;
const ES_PARTNER: MemberId = 11;
const FR: MemberId = 20;
const L_ES: MemberId = 100;
const L_FR: MemberId = 101;
const L_FLOOR: MemberId = 102;
const L_DE: MemberId = 103;

fn summit() -> Layout {
    let ch = |number, language: &str, retour| Channel {
        number,
        language: language.into(),
        prompt: None,
        announce: None,
        retour,
    };
    Layout {
        floor_language: "English".into(),
        floor_prompt: None,
        channels: vec![
            ch(1, "Spanish", Some(4)),
            ch(2, "French", None),
            ch(3, "German", None),
            ch(4, "English retour", None),
        ],
        bleed_db: layout::DEFAULT_BLEED_DB,
    }
}

fn tone(freq: f64, tick: usize) -> Vec<i16> {
    (0..FRAME)
        .map(|i| {
            let t = (tick * FRAME + i) as f64 / RATE as f64;
            (AMPLITUDE * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

fn db(p: f64, reference: f64) -> f64 {
    10.0 * (p.max(1e-12) / reference).log10()
}

/// A room: the model, the mixer, and what each member sends.
struct Hall {
    model: Interpretation,
    mixer: Mixer,
    voices: Vec<(MemberId, f64)>,
    tick: usize,
}

impl Hall {
    fn new() -> Hall {
        Hall {
            model: Interpretation::new(summit()),
            mixer: Mixer::new(MixerConfig {
                rate: RATE,
                ..MixerConfig::default()
            }),
            voices: Vec::new(),
            tick: 0,
        }
    }

    fn join(&mut self, id: MemberId, role: Role, voice: Option<f64>) {
        self.mixer.add(id, MemberOptions::default());
        let out = self.model.join(id, role).unwrap();
        self.apply(&out);
        if let Some(f) = voice {
            self.voices.push((id, f));
        }
    }

    /// Applies an outcome to the mixer between two ticks, as the mixer thread does.
    fn apply(&mut self, out: &Outcome) {
        for &m in &out.changed {
            let p = self.model.placement(m).unwrap();
            self.mixer.set(m, |o| {
                o.talk = p.talk;
                o.hear = p.hear;
                o.muted = p.cough;
            });
        }
    }

    /// Runs `ticks` ticks; what each of `ears` heard, frame by frame.
    fn run(&mut self, ticks: usize, ears: &[MemberId]) -> Vec<Vec<Vec<i16>>> {
        let mut heard = vec![Vec::new(); ears.len()];
        for _ in 0..ticks {
            for &(id, f) in &self.voices {
                self.mixer.push(id, &tone(f, self.tick));
            }
            self.mixer.mix();
            for (i, &e) in ears.iter().enumerate() {
                heard[i].push(self.mixer.output_of(e).map(<[i16]>::to_vec).unwrap_or_default());
            }
            self.tick += 1;
        }
        heard
    }
}

fn joined(frames: &[Vec<i16>]) -> Vec<i16> {
    frames.concat()
}

/// Power of each tone in what was heard, in dB relative to one tone at full level.
fn levels(frames: &[Vec<i16>], freqs: &[f64]) -> Vec<f64> {
    let full: Vec<i16> = (0..frames.len()).flat_map(|t| tone(FLOOR_HZ, t)).collect();
    let reference = tone_power(&full, FLOOR_HZ, RATE);
    let pcm = joined(frames);
    freqs
        .iter()
        .map(|&f| db(tone_power(&pcm, f, RATE), reference))
        .collect()
}

fn full_event() -> Hall {
    let mut e = Hall::new();
    e.join(SPEAKER, Role::Speaker, Some(FLOOR_HZ));
    e.join(ES, Role::Interpreter { booth: 1 }, Some(SPANISH_HZ));
    e.join(ES_PARTNER, Role::Interpreter { booth: 1 }, Some(PARTNER_HZ));
    e.join(FR, Role::Interpreter { booth: 2 }, Some(FRENCH_HZ));
    for l in [L_ES, L_FR, L_FLOOR, L_DE] {
        e.join(l, Role::Listener, None);
    }
    for (l, c) in [
        (L_ES, Bus::Channel(1)),
        (L_FR, Bus::Channel(2)),
        (L_DE, Bus::Channel(3)),
    ] {
        let out = e.model.choose(l, c).unwrap();
        e.apply(&out);
    }
    e
}

#[test]
fn each_channel_carries_its_interpreter_over_the_floor_at_the_bleed_and_nothing_else() {
    let mut e = full_event();
    let ears = [L_ES, L_FR, L_FLOOR, L_DE, SPEAKER, ES, ES_PARTNER, FR];
    let heard = e.run(10, &ears);
    let all = [FLOOR_HZ, SPANISH_HZ, FRENCH_HZ, PARTNER_HZ];
    let at = |who: MemberId| levels(&heard[ears.iter().position(|&x| x == who).unwrap()], &all);
    let near =
        |got: f64, want: f64, what: &str| assert!((got - want).abs() < 0.5, "{what}: {got:.2} dB, want {want} dB");
    let absent = |got: f64, what: &str| assert!(got < -60.0, "{what}: {got:.2} dB, want nothing");
    // Spanish listener: the live Spanish interpreter at full level, the floor 18 dB under,
    // nothing of the French booth or of the off-mic partner.
    let es = at(L_ES);
    near(es[1], 0.0, "es listener: Spanish");
    near(es[0], -18.0, "es listener: floor");
    absent(es[2], "es listener: French");
    absent(es[3], "es listener: off-mic partner");
    let fr = at(L_FR);
    near(fr[2], 0.0, "fr listener: French");
    near(fr[0], -18.0, "fr listener: floor");
    absent(fr[1], "fr listener: Spanish");
    // The floor listener and the speaker hear no interpreter; the speaker not itself.
    let floor = at(L_FLOOR);
    near(floor[0], 0.0, "floor listener: floor");
    for (i, f) in [(1, "Spanish"), (2, "French"), (3, "partner")] {
        absent(floor[i], &format!("floor listener: {f}"));
    }
    let speaker = at(SPEAKER);
    for (i, f) in [(0, "itself"), (1, "Spanish"), (2, "French"), (3, "partner")] {
        absent(speaker[i], &format!("speaker: {f}"));
    }
    // An unstaffed booth (German) gives its listeners the floor at full level.
    let de = at(L_DE);
    near(de[0], 0.0, "de listener: floor");
    // Interpreters hear the floor clean and never themselves; the partner hears the live one.
    let es_live = at(ES);
    near(es_live[0], 0.0, "live interpreter: floor");
    absent(es_live[1], "live interpreter: itself");
    let partner = at(ES_PARTNER);
    near(partner[0], 0.0, "partner: floor");
    near(partner[1], 0.0, "partner: the live interpreter");
    absent(partner[3], "partner: itself");
    let french = at(FR);
    absent(french[2], "French interpreter: itself");
    absent(french[1], "French interpreter: Spanish booth");
    // Listeners of one channel share one frame (one encoding), the floor's listeners too.
    e.join(L_ES + 50, Role::Listener, None);
    let out = e.model.choose(L_ES + 50, Bus::Channel(1)).unwrap();
    e.apply(&out);
    e.run(1, &[]);
    let groups = e.mixer.groups();
    let g = groups.iter().find(|g| g.members.contains(&L_ES)).unwrap();
    assert!(g.members.contains(&(L_ES + 50)), "{groups:?}");
}

#[test]
fn a_pause_of_the_live_interpreter_does_not_raise_the_floor() {
    let mut e = full_event();
    e.voices.retain(|&(id, _)| id != ES);
    let heard = e.run(10, &[L_ES]);
    let l = levels(&heard[0], &[FLOOR_HZ]);
    assert!(
        (l[0] + 18.0).abs() < 0.5,
        "floor under a silent interpreter: {:.2} dB",
        l[0]
    );
    // Coughing is the same: the booth stays staffed.
    e.voices.push((ES, SPANISH_HZ));
    let out = e.model.cough_key(ES).unwrap();
    e.apply(&out);
    let heard = e.run(10, &[L_ES]);
    let l = levels(&heard[0], &[FLOOR_HZ, SPANISH_HZ]);
    assert!((l[0] + 18.0).abs() < 0.5, "floor under a cough: {:.2} dB", l[0]);
    assert!(l[1] < -60.0, "the cough is heard: {:.2} dB", l[1]);
}

/// Every frame a listener hears after a switch has exactly one of `from` and `to` in it.
fn one_source_every_frame(frames: &[Vec<i16>], from: f64, to: f64) -> Vec<(bool, bool)> {
    // Per-frame Goertzel over 320 samples: 50 Hz bins, and every tone is on one.
    frames
        .iter()
        .map(|f| {
            let p = |hz| tone_power(f, hz, RATE);
            let full = tone_power(&tone(to, 0), to, RATE);
            (db(p(from), full) > -6.0, db(p(to), full) > -6.0)
        })
        .collect()
}

#[test]
fn a_handover_swaps_microphones_on_a_frame_boundary_with_no_gap_and_no_overlap() {
    let mut e = full_event();
    let before = e.run(5, &[L_ES]);
    // The live interpreter offers, the partner takes: applied between two ticks.
    let offer = e.model.handover_key(ES).unwrap();
    assert_eq!(offer.events, vec![Event::HandoverOffered { booth: 1, from: ES }]);
    assert!(offer.changed.is_empty());
    let take = e.model.handover_key(ES_PARTNER).unwrap();
    assert_eq!(
        take.events,
        vec![
            Event::LiveEnded { booth: 1, member: ES },
            Event::LiveStarted {
                booth: 1,
                member: ES_PARTNER
            }
        ]
    );
    e.apply(&take);
    let after = e.run(5, &[L_ES, ES]);
    let frames: Vec<Vec<i16>> = before[0].iter().chain(&after[0]).cloned().collect();
    let seen = one_source_every_frame(&frames, SPANISH_HZ, PARTNER_HZ);
    assert_eq!(&seen[..5], &[(true, false); 5], "before the hand-over");
    assert_eq!(&seen[5..], &[(false, true); 5], "after the hand-over");
    // The old live one, now off-mic, hears the new live one over the floor.
    let l = levels(&after[1], &[PARTNER_HZ, SPANISH_HZ]);
    assert!(l[0] > -0.5 && l[1] < -60.0, "{l:?}");
    // A moderator can force it back.
    let forced = e.model.force_handover(1, None).unwrap();
    e.apply(&forced);
    assert_eq!(e.model.live(1), Some(ES));
    let heard = e.run(1, &[L_ES]);
    assert_eq!(
        one_source_every_frame(&heard[0], PARTNER_HZ, SPANISH_HZ),
        vec![(false, true)]
    );
}

#[test]
fn relay_switches_the_booth_source_with_no_silent_frame_and_loops_are_refused() {
    let mut e = full_event();
    // The French booth relays Spanish: the French interpreter hears Spanish, clean.
    let before = e.run(3, &[FR]);
    let out = e.model.relay(2, Bus::Channel(1)).unwrap();
    e.apply(&out);
    let after = e.run(3, &[FR]);
    let frames: Vec<Vec<i16>> = before[0].iter().chain(&after[0]).cloned().collect();
    let seen = one_source_every_frame(&frames, FLOOR_HZ, SPANISH_HZ);
    assert_eq!(seen, [[(true, false); 3], [(false, true); 3]].concat());
    let l = levels(&after[0], &[FLOOR_HZ, FRENCH_HZ]);
    assert!(l[0] < -60.0 && l[1] < -60.0, "relay is clean and not itself: {l:?}");
    // Spanish relaying French would be a loop; a booth relaying itself too.
    assert_eq!(e.model.relay(1, Bus::Channel(2)), Err(Refused::RelayLoop));
    assert_eq!(e.model.relay(1, Bus::Channel(1)), Err(Refused::RelayLoop));
    // Longer loops: German relays French (which relays Spanish); Spanish relaying German is refused.
    e.join(30, Role::Interpreter { booth: 3 }, None);
    e.model.relay(3, Bus::Channel(2)).unwrap();
    assert_eq!(e.model.relay(1, Bus::Channel(3)), Err(Refused::RelayLoop));
    assert_eq!(e.model.relay(9, Bus::Floor), Err(Refused::NoSuchChannel));
    // An interpreter's `*1` is the same request.
    let mut pad = Keypad::default();
    let role = Role::Interpreter { booth: 2 };
    assert_eq!(pad.press('*', role, e.model.layout()), None);
    assert_eq!(pad.press('0', role, e.model.layout()), Some(Key::Choose(Bus::Floor)));
}

#[test]
fn the_live_one_leaving_hands_the_microphone_to_the_partner_and_an_empty_booth_gives_the_floor() {
    let mut e = full_event();
    let out = e.model.leave(ES);
    e.mixer.remove(ES);
    e.voices.retain(|&(id, _)| id != ES);
    assert!(out.events.contains(&Event::LiveStarted {
        booth: 1,
        member: ES_PARTNER
    }));
    e.apply(&out);
    let heard = e.run(10, &[L_ES]);
    let l = levels(&heard[0], &[PARTNER_HZ, FLOOR_HZ]);
    assert!(l[0] > -0.5 && (l[1] + 18.0).abs() < 0.5, "{l:?}");
    let out = e.model.leave(ES_PARTNER);
    e.mixer.remove(ES_PARTNER);
    e.voices.retain(|&(id, _)| id != ES_PARTNER);
    e.apply(&out);
    assert_eq!(e.model.live(1), None);
    let heard = e.run(10, &[L_ES]);
    let l = levels(&heard[0], &[FLOOR_HZ]);
    assert!(l[0].abs() < 0.5, "unstaffed: the floor at full level, {l:?}");
}

#[test]
fn a_listener_sets_its_own_bleed_and_zero_is_none() {
    let mut e = full_event();
    let out = e.model.bleed_key(L_ES, true).unwrap();
    e.apply(&out);
    assert_eq!(
        out.events,
        vec![Event::BleedChanged {
            member: L_ES,
            bleed_db: -12
        }]
    );
    let l = levels(&e.run(10, &[L_ES])[0], &[FLOOR_HZ]);
    assert!((l[0] + 12.0).abs() < 0.5, "{l:?}");
    for _ in 0..5 {
        let out = e.model.bleed_key(L_ES, false).unwrap();
        e.apply(&out);
    }
    assert_eq!(e.model.seats[&L_ES].bleed_db, 0);
    let l = levels(&e.run(10, &[L_ES])[0], &[FLOOR_HZ, SPANISH_HZ]);
    assert!(l[0] < -60.0 && l[1] > -0.5, "{l:?}");
    assert_eq!(layout::bleed_step(0, true), -36);
    assert_eq!(layout::bleed_step(-6, true), -6);
}

#[test]
fn retour_moves_the_booth_to_its_other_channel() {
    let mut e = full_event();
    let out = e.model.retour_key(ES).unwrap();
    assert!(out.events.contains(&Event::FeedingChanged { booth: 1, channel: 4 }));
    e.apply(&out);
    e.join(104, Role::Listener, None);
    let out = e.model.choose(104, Bus::Channel(4)).unwrap();
    e.apply(&out);
    let heard = e.run(10, &[104, L_ES]);
    let retour = levels(&heard[0], &[SPANISH_HZ]);
    assert!(retour[0] > -0.5, "{retour:?}");
    // Channel 1 is unstaffed while its booth feeds the retour: its listeners hear the floor.
    let es = levels(&heard[1], &[FLOOR_HZ, SPANISH_HZ]);
    assert!(es[0].abs() < 0.5 && es[1] < -60.0, "{es:?}");
    assert_eq!(e.model.retour_key(FR), Err(Refused::NoRetour));
    // The booth may not relay the channel it feeds.
    assert_eq!(e.model.relay(1, Bus::Channel(4)), Err(Refused::RelayLoop));
}

#[test]
fn refusals_change_nothing() {
    let mut e = full_event();
    assert_eq!(e.model.handover_key(ES_PARTNER), Err(Refused::NoOffer));
    assert_eq!(e.model.cough_key(ES_PARTNER), Err(Refused::NotLive));
    assert_eq!(e.model.handover_key(L_ES), Err(Refused::NotAnInterpreter));
    assert_eq!(e.model.handover_key(FR), Err(Refused::NoPartner));
    assert_eq!(e.model.choose(L_ES, Bus::Channel(9)), Err(Refused::NoSuchChannel));
    assert_eq!(
        e.model.join(50, Role::Interpreter { booth: 9 }),
        Err(Refused::NoSuchChannel)
    );
    assert_eq!(e.model.hears(L_ES), Some(Bus::Channel(1)));
    assert_eq!(e.model.live(1), Some(ES));
    assert_eq!(e.model.audience(Bus::Channel(1)), 1);
}

#[test]
fn keypad_sequences() {
    let layout = summit();
    let mut pad = Keypad::default();
    let press =
        |pad: &mut Keypad, keys: &str, role| keys.chars().map(|k| pad.press(k, role, &layout)).collect::<Vec<_>>();
    // A listener who just joined chooses with a bare digit; then bare digits are keys again.
    let mut listener = Keypad::with_menu_open();
    assert_eq!(
        press(&mut listener, "1", Role::Listener),
        vec![Some(Key::Choose(Bus::Channel(1)))]
    );
    assert_eq!(press(&mut listener, "9", Role::Listener), vec![Some(Key::ListenUp)]);
    assert_eq!(
        press(&mut listener, "**0", Role::Listener),
        vec![None, Some(Key::Menu), Some(Key::Choose(Bus::Floor))]
    );
    let mut opened = Keypad::with_menu_open();
    assert_eq!(
        press(&mut opened, "7", Role::Listener),
        vec![Some(Key::ListenDown)],
        "7 names no channel"
    );
    assert_eq!(
        press(&mut pad, "*2", Role::Listener),
        vec![None, Some(Key::Choose(Bus::Channel(2)))]
    );
    assert_eq!(press(&mut pad, "**", Role::Listener), vec![None, Some(Key::Menu)]);
    assert_eq!(
        press(&mut pad, "*7", Role::Listener),
        vec![None, Some(Key::NoSuchChannel)]
    );
    let mut pad = Keypad::default();
    assert_eq!(
        press(&mut pad, "46#", Role::Listener),
        vec![Some(Key::BleedDown), Some(Key::BleedUp), Some(Key::Leave)]
    );
    assert_eq!(press(&mut pad, "1", Role::Listener), vec![None]);
    let interp = Role::Interpreter { booth: 1 };
    assert_eq!(
        press(&mut pad, "123", interp),
        vec![Some(Key::Handover), Some(Key::Cough), Some(Key::Retour)]
    );
    assert_eq!(press(&mut pad, "1", Role::Speaker), vec![Some(Key::Mute)]);
    assert_eq!(
        press(&mut pad, "02", Role::Moderator),
        vec![None, Some(Key::ForceHandover(2))]
    );
    assert_eq!(press(&mut pad, "0", Role::Speaker), vec![None]);
    // Two-digit channels: `*1` waits when channels 10-19 exist; `#` ends it.
    let mut big = summit();
    big.channels.push(Channel {
        number: 12,
        language: "Japanese".into(),
        prompt: None,
        announce: None,
        retour: None,
    });
    let mut pad = Keypad::default();
    let press = |pad: &mut Keypad, keys: &str| {
        keys.chars()
            .map(|k| pad.press(k, Role::Listener, &big))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        press(&mut pad, "*12"),
        vec![None, None, Some(Key::Choose(Bus::Channel(12)))]
    );
    assert_eq!(
        press(&mut pad, "*1#"),
        vec![None, None, Some(Key::Choose(Bus::Channel(1)))]
    );
    assert_eq!(press(&mut pad, "*2"), vec![None, Some(Key::Choose(Bus::Channel(2)))]);
}

#[test]
fn layouts_are_checked() {
    let mut l = summit();
    assert_eq!(l.validate(), Ok(()));
    l.channels[1].number = 1;
    assert!(l.validate().unwrap_err().contains("listed twice"));
    let mut l = summit();
    l.channels[0].retour = Some(9);
    assert!(l.validate().unwrap_err().contains("retour 9"));
    let mut l = summit();
    l.bleed_db = 6;
    assert!(l.validate().unwrap_err().contains("bleed_db"));
    let mut l = summit();
    l.channels[0].number = 33;
    assert!(l.validate().is_err());
}
