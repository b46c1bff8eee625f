//! The host API: the verbs a flow calls (documented for clients in `docs/flows.md`). Each
//! verb is a blocking request to the call ([`super::port`]); a hangup makes the verb return
//! an error the script cannot catch, which ends it at once. Bad arguments are ordinary
//! (catchable) errors naming the verb and the option.

use super::engine::{self, FLOW_HANGUP_CAUSE, INFO, PORT, STOP_FLOW_HANGUP, STOP_HANGUP};
use super::port::{CallPort, Note, PortError, Reply, Request, Source};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};
use std::time::Duration;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The verbs, by name (for `tolk flow check`).
pub const VERBS: &[&str] = &[
    "answer",
    "ring",
    "play",
    "say",
    "tone",
    "gather",
    "menu",
    "record",
    "echo",
    "join_conference",
    "join_interpretation",
    "room_role",
    "transfer",
    "hangup",
    "tag",
    "retention",
    "opt_out",
    "consent",
    "caller",
    "http",
    "log",
];

fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    msg.into().into()
}

/// Runs `f` on this thread's call port.
pub(crate) fn with_port<T>(f: impl FnOnce(&mut dyn CallPort) -> T) -> Res<T> {
    PORT.with(|p| match p.try_borrow_mut() {
        Ok(mut guard) => match guard.as_mut() {
            Some(port) => Ok(f(port.as_mut())),
            None => Err(err("no call is attached to this flow")),
        },
        Err(_) => Err(err("verbs cannot be called from inside another verb")),
    })
}

/// One request to the call: the script's step pauses while the call works.
fn call(req: Request) -> Res<Reply> {
    engine::pause_step();
    let result = with_port(|p| p.request(req));
    engine::resume_step();
    match result? {
        Ok(reply) => Ok(reply),
        Err(PortError::HungUp) => Err(engine::stop(STOP_HANGUP)),
        Err(PortError::Failed(why)) => Err(err(why)),
    }
}

fn secs(verb: &str, key: &str, v: &Dynamic) -> Res<Duration> {
    let s = if let Some(i) = v.clone().try_cast::<i64>() {
        i as f64
    } else if let Some(f) = v.clone().try_cast::<f64>() {
        f
    } else {
        return Err(err(format!("{verb}: `{key}` must be a number of seconds")));
    };
    if !(0.0..=86_400.0).contains(&s) {
        return Err(err(format!("{verb}: `{key}` must be between 0 and 86400 seconds")));
    }
    Ok(Duration::from_secs_f64(s))
}

fn opt_secs(verb: &str, o: &Map, key: &str, default: f64) -> Res<Duration> {
    match o.get(key) {
        Some(v) => secs(verb, key, v),
        None => Ok(Duration::from_secs_f64(default)),
    }
}

fn opt_int(verb: &str, o: &Map, key: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> Res<i64> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => match v.clone().try_cast::<i64>() {
            Some(i) if range.contains(&i) => Ok(i),
            _ => Err(err(format!(
                "{verb}: `{key}` must be a whole number from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

fn opt_str(verb: &str, o: &Map, key: &str) -> Res<Option<String>> {
    match o.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .clone()
            .into_string()
            .map(Some)
            .map_err(|_| err(format!("{verb}: `{key}` must be a string"))),
    }
}

fn opt_bool(verb: &str, o: &Map, key: &str, default: bool) -> Res<bool> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .map_err(|_| err(format!("{verb}: `{key}` must be true or false"))),
    }
}

fn check_keys(verb: &str, o: &Map, known: &[&str]) -> Res<()> {
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            return Err(err(format!(
                "{verb}: unknown option `{k}` (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// A prompt name, a `.wav` path or `say:` text to [`Source`].
fn source(what: &str) -> Source {
    match what.strip_prefix("say:") {
        Some(text) => Source::Say(text.trim().to_string()),
        None => Source::Prompt(what.to_string()),
    }
}

fn play(what: &str, barge_in: bool) -> Res<bool> {
    if what.is_empty() {
        return Err(err("play: give a prompt name or a .wav path"));
    }
    match call(Request::Play {
        source: source(what),
        barge_in,
    })? {
        Reply::Played { interrupted } => Ok(interrupted),
        _ => Ok(false),
    }
}

/// One prompt-and-collect round: the digits, empty on no input.
fn collect_once(
    prompt: Option<&str>,
    max: usize,
    terminators: &str,
    first: Duration,
    between: Duration,
) -> Res<String> {
    if let Some(p) = prompt {
        play(p, true)?;
    }
    match call(Request::Collect {
        max,
        terminators: terminators.to_string(),
        first,
        between,
    })? {
        Reply::Digits { digits, .. } => Ok(digits),
        _ => Ok(String::new()),
    }
}

/// `gather(#{prompt, digits, terminator, timeout, between, tries, valid, invalid})`.
fn gather(ctx: NativeCallContext, o: Map) -> Res<String> {
    const V: &str = "gather";
    check_keys(
        V,
        &o,
        &[
            "prompt",
            "digits",
            "terminator",
            "timeout",
            "between",
            "tries",
            "valid",
            "invalid",
        ],
    )?;
    let prompt = opt_str(V, &o, "prompt")?;
    let max = opt_int(V, &o, "digits", 20, 1..=64)? as usize;
    let terminator = opt_str(V, &o, "terminator")?.unwrap_or_else(|| "#".into());
    if !terminator.chars().all(|c| "0123456789*#ABCD".contains(c)) {
        return Err(err("gather: `terminator` must be keypad keys (\"#\", \"*#\"...)"));
    }
    let first = opt_secs(V, &o, "timeout", 5.0)?;
    let between = opt_secs(V, &o, "between", 3.0)?;
    let tries = opt_int(V, &o, "tries", 1, 1..=10)?;
    let invalid = opt_str(V, &o, "invalid")?;
    let valid = o.get("valid").cloned();
    for attempt in 1..=tries {
        let digits = collect_once(prompt.as_deref(), max, &terminator, first, between)?;
        if digits.is_empty() {
            continue;
        }
        if is_valid(&ctx, valid.as_ref(), &digits)? {
            return Ok(digits);
        }
        if attempt < tries
            && let Some(p) = &invalid
        {
            play(p, true)?;
        }
    }
    Ok(String::new())
}

/// `valid` is an array of accepted entries, or a function taking the digits.
fn is_valid(ctx: &NativeCallContext, valid: Option<&Dynamic>, digits: &str) -> Res<bool> {
    let Some(v) = valid else { return Ok(true) };
    if let Some(list) = v.clone().try_cast::<Array>() {
        return Ok(list.iter().any(|x| x.clone().into_string().is_ok_and(|s| s == digits)));
    }
    if let Some(f) = v.clone().try_cast::<FnPtr>() {
        return f
            .call_within_context::<bool>(ctx, (digits.to_string(),))
            .map_err(|e| err(format!("gather: `valid` function failed: {e}")));
    }
    Err(err("gather: `valid` must be an array of strings or a function"))
}

/// `menu(#{prompt, options, tries, timeout, invalid})`: one keypress among `options` (an
/// array of keys, or a map from key to value). Returns the key (array) or its value (map),
/// or "" when the caller chose nothing valid.
fn menu(o: Map) -> Res<Dynamic> {
    const V: &str = "menu";
    check_keys(V, &o, &["prompt", "options", "tries", "timeout", "invalid"])?;
    let prompt = opt_str(V, &o, "prompt")?;
    let tries = opt_int(V, &o, "tries", 3, 1..=10)?;
    let first = opt_secs(V, &o, "timeout", 5.0)?;
    let invalid = opt_str(V, &o, "invalid")?;
    let options: Vec<(String, Dynamic)> = match o.get("options") {
        Some(v) if v.is_map() => v
            .clone()
            .cast::<Map>()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        Some(v) if v.is_array() => v
            .clone()
            .cast::<Array>()
            .into_iter()
            .map(|k| {
                let s = k.to_string();
                (s.clone(), Dynamic::from(s))
            })
            .collect(),
        _ => {
            return Err(err(
                "menu: `options` must be an array of keys or a map from key to value",
            ));
        }
    };
    if options.is_empty() || options.iter().any(|(k, _)| k.chars().count() != 1) {
        return Err(err("menu: every option must be a single key (\"1\", \"*\"...)"));
    }
    for attempt in 1..=tries {
        let key = collect_once(prompt.as_deref(), 1, "", first, first)?;
        if let Some((_, v)) = options.iter().find(|(k, _)| *k == key) {
            return Ok(v.clone());
        }
        if attempt < tries
            && let Some(p) = &invalid
        {
            play(p, true)?;
        }
    }
    Ok(Dynamic::from(String::new()))
}

fn note(n: Note) -> Res<()> {
    call(Request::Note(n)).map(|_| ())
}

const SCOPES: [&str; 3] = ["record", "retain", "contact"];

fn scope(verb: &str, s: &str) -> Res<String> {
    if SCOPES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(err(format!(
            "{verb}: scope must be record, retain or contact, not `{s}`"
        )))
    }
}

fn hangup_with(cause: i64) -> Res<()> {
    let cause = u16::try_from(cause)
        .ok()
        .filter(|c| (1..=127).contains(c) || (400..=699).contains(c))
        .ok_or_else(|| err("hangup: cause must be a Q.850 cause (1-127) or a SIP status (400-699)"))?;
    call(Request::Hangup { cause })?;
    FLOW_HANGUP_CAUSE.with(|c| c.set(Some(cause)));
    Err(engine::stop(STOP_FLOW_HANGUP))
}

/// `http(#{url, method, body, json, timeout})`: `#{status, body, json}` (`json` when the
/// answer is JSON). Errors (not allowed, unreachable, timeout) are catchable.
fn http(ctx: NativeCallContext, o: Map) -> Res<Map> {
    const V: &str = "http";
    check_keys(V, &o, &["url", "method", "body", "json", "timeout"])?;
    let url = opt_str(V, &o, "url")?.ok_or_else(|| err("http: give a `url`"))?;
    let method = opt_str(V, &o, "method")?
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    if !["GET", "POST", "PUT", "DELETE"].contains(&method.as_str()) {
        return Err(err("http: `method` must be GET, POST, PUT or DELETE"));
    }
    let timeout = opt_secs(V, &o, "timeout", 5.0)?;
    let body = match (opt_str(V, &o, "body")?, o.get("json")) {
        (Some(_), Some(_)) => return Err(err("http: give `body` or `json`, not both")),
        (Some(b), None) => Some(("text/plain; charset=utf-8", b)),
        (None, Some(j)) => match j.clone().try_cast::<Map>() {
            Some(m) => Some(("application/json", rhai::format_map_as_json(&m))),
            None => return Err(err("http: `json` must be a map")),
        },
        (None, None) => None,
    };
    let allow = engine::HTTP_ALLOW.with(|a| a.borrow().clone());
    engine::pause_step();
    let result = super::http::request(
        &method,
        &url,
        body.as_ref().map(|(t, b)| (*t, b.as_str())),
        &allow,
        timeout,
    );
    engine::resume_step();
    let summary = match &result {
        Ok(r) => format!("http {method} {url} -> {}", r.status),
        Err(e) => format!("http {method} {url} -> {e}"),
    };
    let _ = call(Request::Log(summary))?;
    let r = result.map_err(|e| err(format!("http: {e}")))?;
    let mut m = Map::new();
    m.insert("status".into(), (r.status as i64).into());
    if r.content_type.to_ascii_lowercase().contains("json")
        && let Ok(j) = ctx.engine().parse_json(&r.body, true)
    {
        m.insert("json".into(), j.into());
    }
    m.insert("body".into(), r.body.into());
    Ok(m)
}

/// Registers every verb on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    engine.register_fn("answer", || -> Res<()> { call(Request::Answer).map(|_| ()) });
    engine.register_fn("ring", |s: i64| -> Res<()> {
        let d = secs("ring", "secs", &Dynamic::from(s))?;
        call(Request::Ring(d)).map(|_| ())
    });
    engine.register_fn("play", |what: &str| -> Res<()> { play(what, false).map(|_| ()) });
    engine.register_fn("say", |text: &str| -> Res<()> {
        if text.trim().is_empty() {
            return Err(err("say: nothing to say"));
        }
        if text.chars().count() > 1000 {
            return Err(err("say: at most 1000 characters at a time"));
        }
        call(Request::Play {
            source: Source::Say(text.to_string()),
            barge_in: false,
        })
        .map(|_| ())
    });
    engine.register_fn("tone", |spec: &str| -> Res<()> {
        call(Request::Play {
            source: Source::Tone(spec.to_string()),
            barge_in: false,
        })
        .map(|_| ())
    });
    engine.register_fn("gather", gather);
    engine.register_fn("http", http);
    engine.register_fn("menu", menu);
    engine.register_fn("record", |o: Map| -> Res<Map> {
        const V: &str = "record";
        check_keys(V, &o, &["max_secs", "beep", "silence_secs"])?;
        let req = Request::Record {
            max: opt_secs(V, &o, "max_secs", 60.0)?,
            beep: opt_bool(V, &o, "beep", true)?,
            silence: opt_secs(V, &o, "silence_secs", 3.0)?,
        };
        match call(req)? {
            Reply::Recorded { id, seconds } => {
                let mut m = Map::new();
                m.insert("id".into(), id.into());
                m.insert("secs".into(), seconds.into());
                Ok(m)
            }
            _ => Ok(Map::new()),
        }
    });
    engine.register_fn("echo", |max_secs: i64| -> Res<()> {
        let max = secs("echo", "max_secs", &Dynamic::from(max_secs))?;
        call(Request::Echo { max }).map(|_| ())
    });
    engine.register_fn("join_conference", |room: &str, o: Map| -> Res<String> {
        const V: &str = "join_conference";
        check_keys(V, &o, &["role", "muted"])?;
        let role = opt_str(V, &o, "role")?.unwrap_or_else(|| "participant".into());
        if role != "participant" && role != "moderator" {
            return Err(err("join_conference: `role` must be participant or moderator"));
        }
        if room.is_empty() {
            return Err(err("join_conference: give a room"));
        }
        let req = Request::JoinConference {
            room: room.to_string(),
            role,
            muted: opt_bool(V, &o, "muted", false)?,
        };
        match call(req)? {
            Reply::Left { reason } => Ok(reason),
            _ => Ok(String::new()),
        }
    });
    engine.register_fn("join_interpretation", |room: &str, o: Map| -> Res<String> {
        const V: &str = "join_interpretation";
        check_keys(V, &o, &["role", "language"])?;
        let role = opt_str(V, &o, "role")?.unwrap_or_else(|| "listener".into());
        if !["speaker", "interpreter", "listener", "moderator"].contains(&role.as_str()) {
            return Err(err(
                "join_interpretation: `role` must be speaker, interpreter, listener or moderator",
            ));
        }
        if room.is_empty() {
            return Err(err("join_interpretation: give a room"));
        }
        // A number is a channel's number; a string its number or language.
        let language = match o.get("language") {
            None => None,
            Some(v) if v.is_int() => Some(v.as_int().unwrap_or_default().to_string()),
            Some(_) => opt_str(V, &o, "language")?,
        };
        let req = Request::JoinInterpretation {
            room: room.to_string(),
            role,
            language,
        };
        match call(req)? {
            Reply::Left { reason } => Ok(reason),
            _ => Ok(String::new()),
        }
    });
    // The role a PIN gives in a room (rooms.toml, or PINs set through the admin API):
    // "moderator", "participant" or "" (no such PIN). The call answers: the flow holds no
    // room table of its own.
    engine.register_fn("room_role", |room: &str, pin: &str| -> Res<String> {
        match call(Request::RoomRole {
            room: room.to_string(),
            pin: pin.to_string(),
        })? {
            Reply::Role(role) => Ok(role),
            _ => Ok(String::new()),
        }
    });
    engine.register_fn("transfer", |target: &str| -> Res<()> {
        if target.is_empty() {
            return Err(err("transfer: give a number or a SIP URI"));
        }
        call(Request::Transfer {
            target: target.to_string(),
        })
        .map(|_| ())
    });
    engine.register_fn("hangup", || -> Res<()> { hangup_with(16) });
    engine.register_fn("hangup", hangup_with);
    engine.register_fn("tag", |k: &str, v: Dynamic| -> Res<()> {
        if k.is_empty() || k.len() > 64 {
            return Err(err("tag: the key must be 1-64 characters"));
        }
        note(Note::Tag {
            key: k.to_string(),
            value: v.to_string(),
        })
    });
    engine.register_fn("retention", |class: &str| -> Res<()> {
        note(Note::Retention(class.to_string()))
    });
    engine.register_fn("opt_out", |s: &str| -> Res<()> {
        note(Note::OptOut(scope("opt_out", s)?))
    });
    engine.register_fn("consent", |s: &str| -> Res<()> {
        note(Note::Consent(scope("consent", s)?))
    });
    engine.register_fn("caller", || -> Map {
        INFO.with(|i| {
            let i = i.borrow();
            let mut m = Map::new();
            m.insert("masked".into(), i.masked.clone().into());
            m.insert("pseudonym".into(), i.pseudonym.clone().into());
            m.insert("anonymous".into(), i.anonymous.into());
            m.insert("dialled".into(), i.dialled.clone().into());
            m.insert("toll_free".into(), i.toll_free.into());
            m.insert("trunk".into(), i.trunk.clone().into());
            m.insert("tenant".into(), i.tenant.clone().into());
            m
        })
    });
    engine.register_fn("log", |msg: Dynamic| -> Res<()> {
        call(Request::Log(msg.to_string())).map(|_| ())
    });
}
