//! Interpretation rooms with real softphones (baresip, G.711 and G.722) on the demo number
//! +18005550300 (room "summit": floor English, channel 1 Spanish, channel 2 French). Each
//! phone sends its own tone: the speaker the floor's, each interpreter its booth's. Listeners
//! choose and switch channels by keypad mid-call; what each phone decoded is checked by its
//! spectrum against the model: a channel's listeners hear their interpreter with the floor
//! under it at the room's bleed (-18 dB) and nothing of the other booth; the floor's
//! listeners and the speaker hear no interpreter; an interpreter hears the floor and never
//! itself.

mod common;
use common::baresip::{Phone, write_tone_wav, write_wav};
use common::{Gateway, TestDb, http_request};
use std::time::{Duration, Instant};

const TOKEN: &str = "interpretation-test-token-0123456789";
const SUMMIT: &str = "+18005550300";
const FLOOR_HZ: f64 = 400.0;
const SPANISH_HZ: f64 = 650.0;
const FRENCH_HZ: f64 = 1100.0;
const TONES: [f64; 3] = [FLOOR_HZ, SPANISH_HZ, FRENCH_HZ];

fn start() -> Gateway {
    let tokens = format!("[\"{TOKEN}\"]");
    Gateway::start(&[("TOLK_ADMIN_TOKENS", tokens.as_str())])
}

fn summit(gw: &Gateway) -> serde_json::Value {
    let (status, body) = http_request(gw.admin, "GET", "/api/v1/rooms", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    rooms["rooms"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "summit").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// A phone dialling the summit with `codec`, sending `freq` (None: silence).
fn phone(gw: &Gateway, name: &str, codec: &str, rate: u32, freq: Option<f64>) -> Phone {
    let dir = gw.data_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    match freq {
        Some(f) => write_tone_wav(&tone, f, 60, rate, 1),
        // A listener sends silence (baresip needs a file to send).
        None => write_wav(&tone, &vec![0; rate as usize * 60], rate, 1),
    }
    let codec = match codec {
        "G722" => "G722/16000/1",
        other => other,
    };
    Phone::dial_with(
        &dir,
        &format!("sip:{SUMMIT}@{}", gw.sip),
        codec,
        &tone,
        rate,
        "tester",
        false,
    )
}

fn wait_members(gw: &Gateway, n: usize, phones: &[&Phone]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = summit(gw);
        if r["members"].as_array().map_or(0, Vec::len) == n {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = phones.iter().map(|p| p.log()).collect();
            panic!(
                "the summit did not reach {n} members: {r}\ntolk log:\n{}\nbaresip logs:\n{}",
                gw.log_text(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the room's view says `check`.
fn wait_view(gw: &Gateway, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = summit(gw);
        if check(&r["interpretation"]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {r}\ntolk log:\n{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Power of each tone in a window of what a phone heard, in dB relative to the loudest.
struct Heard {
    samples: Vec<i16>,
    rate: u32,
    /// When the recording ended (about when `finish` was called).
    end: Instant,
}

impl Heard {
    fn window(&self, from: Instant, secs: f64) -> &[i16] {
        let from_end = self.end.saturating_duration_since(from).as_secs_f64();
        let start = self
            .samples
            .len()
            .saturating_sub((from_end * self.rate as f64) as usize);
        let len = (secs * self.rate as f64) as usize;
        &self.samples[start..(start + len).min(self.samples.len())]
    }

    /// dB of each of [`TONES`] in the window, relative to a full-level tone.
    fn levels(&self, from: Instant, secs: f64) -> [f64; 3] {
        let w = self.window(from, secs);
        let p = |f| tolk::media::analysis::tone_power(w, f, self.rate).max(1e-3);
        [
            10.0 * p(FLOOR_HZ).log10(),
            10.0 * p(SPANISH_HZ).log10(),
            10.0 * p(FRENCH_HZ).log10(),
        ]
    }
}

fn finish(p: Phone) -> Heard {
    let end = Instant::now();
    let (samples, rate) = p.finish();
    Heard { samples, rate, end }
}

/// `who` hears the tones in `present` at least 30 dB over those in `absent`.
fn assert_hears(who: &str, l: [f64; 3], present: &[usize], absent: &[usize]) {
    eprintln!(
        "{who}: floor {:.1} dB, Spanish {:.1} dB, French {:.1} dB",
        l[0], l[1], l[2]
    );
    let weakest = present.iter().map(|&i| l[i]).fold(f64::INFINITY, f64::min);
    let loudest_absent = absent.iter().map(|&i| l[i]).fold(f64::NEG_INFINITY, f64::max);
    assert!(
        weakest > loudest_absent + 30.0,
        "{who} should hear {:?} and not {:?}: {l:?}",
        present.iter().map(|&i| TONES[i]).collect::<Vec<_>>(),
        absent.iter().map(|&i| TONES[i]).collect::<Vec<_>>()
    );
}

#[test]
fn listeners_choose_and_switch_channels_by_keypad_and_hear_what_the_model_says() {
    let gw = start();
    let speaker = phone(&gw, "speaker", "PCMU", 8000, Some(FLOOR_HZ));
    let spanish = phone(&gw, "spanish", "G722", 16_000, Some(SPANISH_HZ));
    let french = phone(&gw, "french", "PCMU", 8000, Some(FRENCH_HZ));
    let to_spanish = phone(&gw, "l-es", "PCMU", 8000, None);
    let switcher = phone(&gw, "l-switch", "G722", 16_000, None);
    let on_floor = phone(&gw, "l-floor", "PCMU", 8000, None);
    for (p, pin) in [
        (&speaker, "1111#"),
        (&spanish, "2222#"),
        (&french, "3333#"),
        (&to_spanish, "4444#"),
        (&switcher, "4444#"),
        (&on_floor, "4444#"),
    ] {
        p.key_when_connected(pin);
    }
    let all = [&speaker, &spanish, &french, &to_spanish, &switcher, &on_floor];
    wait_members(&gw, 6, &all);
    let joined = Instant::now();
    wait_view(&gw, "both booths live", |v| {
        v["channels"][0]["live"].is_u64() && v["channels"][1]["live"].is_u64()
    });
    // Listeners choose by keypad: a bare 1 (the menu is open after the PIN) for Spanish,
    // *2 French; the third stays on the floor.
    std::thread::sleep(Duration::from_millis(500));
    to_spanish.command("/sndcode 1");
    switcher.command("/sndcode *2");
    wait_view(&gw, "listeners on their channels", |v| {
        v["channels"][0]["listeners"] == 1 && v["channels"][1]["listeners"] == 1 && v["floor_listeners"] == 2
    });
    // The announcement ("Español.", "Français.") plays over the channel: let it end.
    std::thread::sleep(Duration::from_millis(2500));
    let first = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    // Mid-call the switcher moves to Spanish.
    switcher.command("/sndcode *1");
    wait_view(&gw, "the switcher on Spanish", |v| v["channels"][0]["listeners"] == 2);
    std::thread::sleep(Duration::from_millis(2500));
    // The floor's listener heard the language menu (8.5 s) after joining: past it.
    if let Some(rest) = (joined + Duration::from_secs(10)).checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    let second = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let heard: Vec<Heard> = [speaker, spanish, french, to_spanish, switcher, on_floor]
        .into_iter()
        .map(finish)
        .collect();
    let [speaker, spanish, french, to_spanish, switcher, on_floor] = &heard[..] else {
        unreachable!()
    };
    let (floor, es, fr) = (0, 1, 2);
    // Spanish listener: the interpreter, the floor under it at about -18 dB, no French.
    let l = to_spanish.levels(first, 1.5);
    assert_hears("Spanish listener", l, &[es], &[fr]);
    let bleed = l[floor] - l[es];
    assert!(
        (bleed + 18.0).abs() < 3.0,
        "the floor under Spanish: {bleed:.1} dB, want -18"
    );
    // The switcher: French first, then Spanish, each with the floor under it.
    let l = switcher.levels(first, 1.5);
    assert_hears("switcher on French", l, &[fr], &[es]);
    let bleed = l[floor] - l[fr];
    assert!(
        (bleed + 18.0).abs() < 3.0,
        "the floor under French: {bleed:.1} dB, want -18"
    );
    let l = switcher.levels(second, 1.5);
    assert_hears("switcher on Spanish", l, &[es], &[fr]);
    // The floor's listener and the speaker never hear an interpreter.
    assert_hears("floor listener", on_floor.levels(second, 1.5), &[floor], &[es, fr]);
    let l = speaker.levels(second, 1.5);
    eprintln!("speaker: {l:?}");
    assert!(
        l.iter().all(|&x| x < l_of_full() - 40.0),
        "the speaker hears nothing (no one else on the floor, no interpreter): {l:?}"
    );
    // Interpreters hear the floor, not themselves, not the other booth.
    assert_hears("Spanish interpreter", spanish.levels(second, 1.5), &[floor], &[es, fr]);
    assert_hears("French interpreter", french.levels(second, 1.5), &[floor], &[es, fr]);
}

/// dB of a full-level tone as [`Heard::levels`] measures it (the tone files' amplitude).
fn l_of_full() -> f64 {
    let dir = common::unique_dir("interp-ref");
    let path = dir.join("ref.wav");
    write_tone_wav(&path, FLOOR_HZ, 1, 8000, 1);
    let (pcm, rate) = common::baresip::read_wav(&path);
    10.0 * tolk::media::analysis::tone_power(&pcm, FLOOR_HZ, rate).log10()
}

const PARTNER_HZ: f64 = 1700.0;

/// dB of `freq` in a window of what a phone heard.
fn level(h: &Heard, from: Instant, secs: f64, freq: f64) -> f64 {
    let w = h.window(from, secs);
    10.0 * tolk::media::analysis::tone_power(w, freq, h.rate).max(1e-3).log10()
}

fn post(gw: &Gateway, path: &str) -> (u16, String) {
    http_request(gw.admin, "POST", path, Some(TOKEN), "")
}

#[test]
fn interpreters_hand_over_by_keypad_admins_and_moderators_force_it_and_relay_works() {
    let db = TestDb::new("interp_handover");
    let tokens = format!("[\"{TOKEN}\"]");
    let gw = Gateway::start(&[
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_DATABASE_URL", db.url.as_str()),
    ]);
    let speaker = phone(&gw, "speaker", "PCMU", 8000, Some(FLOOR_HZ));
    let first = phone(&gw, "es-1", "PCMU", 8000, Some(SPANISH_HZ));
    let partner = phone(&gw, "es-2", "G722", 16_000, Some(PARTNER_HZ));
    let french = phone(&gw, "fr", "PCMU", 8000, Some(FRENCH_HZ));
    let listener = phone(&gw, "l-es", "PCMU", 8000, None);
    let moderator = phone(&gw, "moderator", "PCMU", 8000, None);
    speaker.key_when_connected("1111#");
    first.key_when_connected("2222#");
    let all = [&speaker, &first, &partner, &french, &listener, &moderator];
    // The first Spanish interpreter is in before its partner: it goes live.
    wait_view(&gw, "the first interpreter live", |v| v["channels"][0]["live"].is_u64());
    partner.key_when_connected("2222#");
    french.key_when_connected("3333#");
    listener.key_when_connected("4444#");
    moderator.key_when_connected("8888#");
    wait_members(&gw, 6, &all);
    wait_view(&gw, "two in the Spanish booth", |v| {
        v["channels"][0]["interpreters"].as_array().map_or(0, Vec::len) == 2
    });
    let view = summit(&gw)["interpretation"].clone();
    let first_call = view["channels"][0]["live"].as_u64().unwrap();
    let partner_call = view["channels"][0]["interpreters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_u64())
        .find(|&c| c != first_call)
        .unwrap();
    // The listener takes Spanish through the API (the menu it hears is cut short).
    let (status, body) = post(
        &gw,
        &format!("/api/v1/rooms/summit/members/{}/channel/1", listener_call(&gw)),
    );
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(2000));
    let before = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // Hand-over by keypad: the live one offers (1), the partner takes (1).
    first.command("/sndcode 1");
    wait_view(&gw, "the hand-over offered", |v| {
        v["channels"][0]["handover_offered"] == true
    });
    partner.command("/sndcode 1");
    wait_view(&gw, "the partner live", |v| v["channels"][0]["live"] == partner_call);
    // The prompts ("you are live", "you are off the microphone") go to the interpreters,
    // not to the listener: its channel swaps voices at once.
    std::thread::sleep(Duration::from_millis(1000));
    let after_keys = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // An admin forces it back.
    let (status, body) = post(&gw, &format!("/api/v1/rooms/summit/booths/1/handover?to={first_call}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["interpretation"]["channels"][0]["live"],
        first_call
    );
    std::thread::sleep(Duration::from_millis(1000));
    let after_force = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // The moderator forces it again by keypad: 0 and the booth's channel digit.
    moderator.command("/sndcode 01");
    wait_view(&gw, "the partner live again", |v| {
        v["channels"][0]["live"] == partner_call
    });
    std::thread::sleep(Duration::from_millis(1000));
    let after_moderator = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // The speaker picks Spanish by keypad (*1): it hears the interpretation of itself.
    speaker.command("/sndcode *1");
    // Relay: French interprets from Spanish; Spanish relaying French would be a loop.
    let (status, body) = post(&gw, "/api/v1/rooms/summit/booths/2/relay/1");
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&gw, "/api/v1/rooms/summit/booths/1/relay/2");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("loop"), "{body}");
    let (status, _) = post(&gw, "/api/v1/rooms/summit/booths/9/relay/0");
    assert_eq!(status, 404);
    // The French interpreter hears "your source is ... español" first.
    std::thread::sleep(Duration::from_millis(3000));
    let relayed = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let heard: Vec<Heard> = [listener, french, partner, first, speaker, moderator]
        .into_iter()
        .map(finish)
        .collect();
    let [listener, french, partner, _, speaker, _] = &heard[..] else {
        unreachable!()
    };
    let l = |h: &Heard, at, f| level(h, at, 1.2, f);
    let report = |what: &str, h: &Heard, at| {
        eprintln!(
            "{what}: floor {:.1}, first {:.1}, partner {:.1}, French {:.1}",
            l(h, at, FLOOR_HZ),
            l(h, at, SPANISH_HZ),
            l(h, at, PARTNER_HZ),
            l(h, at, FRENCH_HZ)
        );
    };
    report("listener before", listener, before);
    report("listener after the keys", listener, after_keys);
    report("listener after the force", listener, after_force);
    report("listener after the moderator", listener, after_moderator);
    report("speaker on Spanish", speaker, relayed);
    report("off-mic partner", partner, after_force);
    report("French, relaying", french, relayed);
    // One microphone live at a time, and the one the model says.
    assert!(l(listener, before, SPANISH_HZ) > l(listener, before, PARTNER_HZ) + 30.0);
    assert!(l(listener, after_keys, PARTNER_HZ) > l(listener, after_keys, SPANISH_HZ) + 30.0);
    assert!(l(listener, after_force, SPANISH_HZ) > l(listener, after_force, PARTNER_HZ) + 30.0);
    assert!(l(listener, after_moderator, PARTNER_HZ) > l(listener, after_moderator, SPANISH_HZ) + 30.0);
    // The speaker on Spanish hears the live interpreter, not its own voice under it (the
    // floor bleed is the floor without the speaker), not French.
    let s = |f| l(speaker, relayed, f);
    assert!(
        s(PARTNER_HZ) > s(FLOOR_HZ) + 30.0
            && s(PARTNER_HZ) > s(FRENCH_HZ) + 30.0
            && s(PARTNER_HZ) > s(SPANISH_HZ) + 30.0
    );
    // The off-mic partner hears the floor and the live one, not itself.
    let p = |f| l(partner, after_force, f);
    assert!(p(FLOOR_HZ) > p(PARTNER_HZ) + 30.0 && p(SPANISH_HZ) > p(PARTNER_HZ) + 30.0);
    // The relaying French interpreter hears Spanish (the live partner's), clean (no floor),
    // and not itself.
    let f = |x| l(french, relayed, x);
    assert!(f(PARTNER_HZ) > f(FLOOR_HZ) + 30.0 && f(PARTNER_HZ) > f(FRENCH_HZ) + 30.0);
    // The CDRs keep the live periods and the listener's choice (once every record is
    // closed: six calls with their role): the first Spanish interpreter went live at its
    // join, after the admin's forced hand-over and when its live partner hung up first (the
    // booth stays staffed), its partner after the keys and the moderator's; each went off
    // at a hand-over (and the live ones when they hung up).
    let closed = db.wait_for(
        "SELECT count(*) FROM calls WHERE ended_at IS NOT NULL AND role IS NOT NULL",
        "6",
        Duration::from_secs(20),
    );
    assert_eq!(closed, "6");
    let events = |kind: &str| {
        db.query(&format!(
            "SELECT c.role, coalesce(e.detail->>'booth', e.detail->>'channel'), count(*) FROM call_events e \
             JOIN calls c ON c.id = e.call_id WHERE e.kind = '{kind}' GROUP BY 1, 2 ORDER BY 1, 2"
        ))
        .join(",")
    };
    assert_eq!(events("interpreter_live"), "interpreter|1|5,interpreter|2|1");
    assert_eq!(events("channel_chosen"), "listener|1|1,speaker|1|1");
    let off = events("interpreter_off");
    assert!(
        off.starts_with("interpreter|1|") && !off.starts_with("interpreter|1|1,"),
        "{off}"
    );
    // The report sums them per booth and channel.
    let (status, body) = http_request(gw.admin, "GET", "/api/v1/reports?by=interpretation", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Languages as rooms.toml names the channels.
    let has = |who: &str, channel: i64, language: &str| {
        rows["rows"].as_array().unwrap().iter().any(|r| {
            r["who"] == who
                && r["channel"] == channel
                && r["language"] == language
                && r["minutes"].as_f64().unwrap() > 0.0
        })
    };
    assert!(
        has("interpreter", 1, "Spanish") && has("interpreter", 2, "French") && has("listener", 1, "Spanish"),
        "{body}"
    );
}

/// The one listener's call.
fn listener_call(gw: &Gateway) -> u64 {
    summit(gw)["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "listener")
        .and_then(|m| m["call"].as_u64())
        .unwrap()
}

/// An event set up through the admin API instead of rooms.toml: the summit redefined with
/// Italian on channel 2 and a new booth PIN takes calls at once; the old PIN no longer
/// opens a booth; a wrong table is refused without repeating a PIN; deleting the definition
/// hands the room back to rooms.toml.
#[test]
fn an_event_set_up_through_the_admin_api_takes_calls() {
    let gw = start();
    let put = |body: &str| http_request(gw.admin, "PUT", "/api/v1/rooms/summit/settings", Some(TOKEN), body);
    let (status, body) = put(
        r#"{"floor": "English", "speaker_pin": "1111", "listener_pin": "4444", "moderator_pin": "8888",
            "channels": [{"number": 1, "language": "Spanish", "interpreter_pin": "2222"},
                         {"number": 2, "language": "Italian", "interpreter_pin": "7777"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Italian") && !body.contains("7777"), "{body}");
    let (status, body) = put(r#"{"floor": "English", "speaker_pin": "5151", "listener_pin": "5151"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("5151"), "PINs are not repeated: {body}");
    let italian = phone(&gw, "it", "PCMU", 8000, Some(FRENCH_HZ));
    let old_pin = phone(&gw, "fr-old", "PCMU", 8000, None);
    italian.key_when_connected("7777#");
    old_pin.key_when_connected("3333#");
    wait_view(&gw, "the Italian booth live", |v| {
        v["channels"][1]["language"] == "Italian" && v["channels"][1]["live"].is_u64()
    });
    // The old French PIN opens nothing: only the Italian interpreter is in the room.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(summit(&gw)["members"].as_array().map_or(0, Vec::len), 1);
    let delete = || http_request(gw.admin, "DELETE", "/api/v1/rooms/summit/settings", Some(TOKEN), "");
    assert_eq!(delete().0, 200);
    assert_eq!(delete().0, 404, "defined no more");
    // A live event keeps the layout it opened with until its last member leaves.
    assert_eq!(summit(&gw)["interpretation"]["channels"][1]["language"], "Italian");
    italian.finish();
    old_pin.finish();
    wait_members(&gw, 0, &[]);
    // rooms.toml's summit serves again: its French PIN opens channel 2, French.
    let french = phone(&gw, "fr", "PCMU", 8000, Some(FRENCH_HZ));
    french.key_when_connected("3333#");
    wait_view(&gw, "the French booth live", |v| {
        v["channels"][1]["language"] == "French" && v["channels"][1]["live"].is_u64()
    });
}
