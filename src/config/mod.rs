//! Configuration: `tolk.toml` plus `TOLK_<SECTION>_<KEY>` environment overrides, validated
//! with errors that name the file, the line and the key.
//!
//! Every setting has a default, so `tolk serve` runs with no file at all.

use crate::file_text::line_of;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod admin;
mod cdr;
mod hep;
mod secrets;
pub mod trunk;

pub use admin::AdminConfig;
pub use cdr::{CdrConfig, RetentionAction, RetentionPolicyConfig, RoomRecordingErasure};
pub use hep::HepConfig;

/// A configuration error: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {message}")]
pub struct ConfigError {
    /// `tolk.toml:12` or `env TOLK_SIP_LISTEN`.
    pub origin: String,
    pub key: String,
    pub message: String,
}

/// A SIP transport (`sip.transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// A codec name as the configuration spells it (`rtp.codecs`); the media layer maps it to
/// its codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

/// The container of room recordings (`room.record_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// PCM16 WAV.
    #[default]
    Wav,
    /// Ogg Opus (RFC 7845), about a tenth of the size.
    Ogg,
}

impl RecordFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            RecordFormat::Wav => "wav",
            RecordFormat::Ogg => "ogg",
        }
    }

    /// The format a file name asks for: `.ogg`/`.opus` is Ogg Opus, anything else WAV.
    pub fn from_path(path: &std::path::Path) -> RecordFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("ogg" | "opus") => RecordFormat::Ogg,
            _ => RecordFormat::Wav,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where tolk keeps its state (spool, keys, the private database).
    pub data_dir: PathBuf,
    /// The prompt set: `catalog.toml` and its WAV files.
    pub sounds_dir: PathBuf,
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub admin: AdminConfig,
    pub dialplan: DialplanConfig,
    pub flow: FlowConfig,
    pub room: RoomConfig,
    pub database: DatabaseConfig,
    pub cdr: CdrConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub hep: HepConfig,
    /// `[[trunks]]`: the carriers that may send us calls.
    pub trunks: Vec<trunk::TrunkConfig>,
    /// Where the values came from, for errors found after loading ([`Config::error_at`]).
    #[serde(skip)]
    pub source: Source,
}

/// The file and environment a configuration was read from.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Source {
    file: String,
    text: String,
    /// Dotted keys set by `TOLK_*` variables, with the variable's name.
    env_keys: Vec<(String, String)>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", if self.file.is_empty() { "(defaults)" } else { &self.file })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./var"),
            sounds_dir: PathBuf::from("./sounds"),
            sip: SipConfig::default(),
            rtp: RtpConfig::default(),
            admin: AdminConfig::default(),
            dialplan: DialplanConfig::default(),
            flow: FlowConfig::default(),
            room: RoomConfig::default(),
            database: DatabaseConfig::default(),
            cdr: CdrConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            hep: HepConfig::default(),
            trunks: Vec::new(),
            source: Source::default(),
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Addresses to listen on, each on every transport in `transports` (IPv4 and IPv6).
    pub listen: Vec<String>,
    /// `udp`, `tcp`.
    pub transports: Vec<Transport>,
    /// Largest SIP message accepted, bytes.
    pub max_message_bytes: usize,
    /// Largest number of header lines in a message.
    pub max_headers: usize,
    /// Longest header line, bytes.
    pub max_header_bytes: usize,
    /// Close idle TCP connections after this many seconds.
    pub tcp_idle_secs: u64,
    /// Most TCP connections at once.
    pub tcp_max_connections: usize,
    /// Session interval asked of callers that support timers (RFC 4028), seconds.
    pub session_expires_secs: u32,
    /// Smallest session interval accepted, seconds (at least 90).
    pub min_se_secs: u32,
    /// RFC 3261 T1 in milliseconds.
    pub t1_ms: u64,
    /// Most calls at once; beyond it new INVITEs get 503 with Retry-After.
    pub max_calls: usize,
    /// When inbound messages wait longer than this (ms) before the SIP core sees them, new
    /// INVITEs are shed with a fast 503.
    pub overload_delay_ms: u64,
    /// Sources whose calls are taken without a trunk (addresses or prefixes). Default:
    /// loopback only, so the quick start works and nothing else does.
    pub allow_unknown: Vec<trunk::Cidr>,
    /// The realm of our digest challenges (RFC 3261 §22.1).
    pub realm: String,
    /// The longest call, seconds from its INVITE; then tolk hangs up. 0: no limit.
    pub max_call_secs: u64,
    /// Out-of-dialog requests per second from a source that is neither a trunk nor in
    /// `allow_unknown`; more are dropped unanswered.
    pub stranger_rate: u32,
    /// Refusals of such a source within a minute that ban it; 0: never.
    pub ban_after: u32,
    /// How long a ban lasts, seconds.
    pub ban_secs: u64,
    /// User-Agent substrings of scanners: such a source is banned at once.
    pub scanner_user_agents: Vec<String>,
    /// `[sip.tls]`: SIP over TLS.
    pub tls: TlsConfig,
    /// SRTP (RFC 4568 SDES) for calls whose trunk does not say: "optional" takes SRTP when
    /// the caller offers it, "required" refuses plain RTP with 488, "off" refuses RTP/SAVP.
    pub srtp: trunk::SrtpPolicy,
}

/// `[sip.tls]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Addresses to take SIP over TLS on; empty: no TLS.
    pub listen: Vec<String>,
    /// PEM certificate chain and key; neither: a self-signed pair in `data_dir/tls/`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A handshake not done by then closes the connection.
    pub handshake_timeout_ms: u64,
    /// Most TLS connections from one address at once.
    pub max_connections_per_address: usize,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: vec!["0.0.0.0:5061".into()],
            cert: None,
            key: None,
            handshake_timeout_ms: 5000,
            max_connections_per_address: 32,
        }
    }
}

impl TlsConfig {
    /// The configured certificate and key, when both are given.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["0.0.0.0:5060".into()],
            transports: vec![Transport::Udp, Transport::Tcp],
            max_message_bytes: 65_535,
            max_headers: 128,
            max_header_bytes: 8_192,
            tcp_idle_secs: 300,
            tcp_max_connections: 1024,
            session_expires_secs: 1800,
            min_se_secs: 90,
            t1_ms: 500,
            max_calls: 4000,
            overload_delay_ms: 200,
            allow_unknown: trunk::loopback_only(),
            realm: "tolk".into(),
            max_call_secs: 4 * 3600,
            stranger_rate: 10,
            ban_after: 10,
            ban_secs: 600,
            scanner_user_agents: crate::config::trunk::default_scanners(),
            tls: TlsConfig::default(),
            srtp: trunk::SrtpPolicy::Optional,
        }
    }
}

/// `[rtp]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    /// `first-last`, inclusive; even ports are used for RTP.
    pub ports: String,
    /// Address to bind RTP sockets on.
    pub bind: String,
    /// Address to put in SDP, when the bind address is not reachable as it is.
    pub advertise: Option<String>,
    /// Codecs in preference order.
    pub codecs: Vec<CodecName>,
    /// Hang up a call whose RTP stops for this many seconds.
    pub timeout_secs: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ports: "20000-30000".into(),
            bind: "0.0.0.0".into(),
            advertise: None,
            codecs: vec![CodecName::Pcmu, CodecName::Pcma, CodecName::G722, CodecName::Opus],
            timeout_secs: 60,
        }
    }
}

/// `[dialplan]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DialplanConfig {
    /// `numbers.toml` and `flows/*.rhai`; when it does not exist, the built-in demo
    /// dialplan is written under `data_dir/dialplan` and served.
    pub dir: PathBuf,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        DialplanConfig {
            dir: PathBuf::from("./dialplans"),
        }
    }
}

/// `[flow]`: the limits every call flow runs under (`docs/flows.md`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Flows running at once; a call beyond it is refused with 503 + Retry-After.
    pub max_concurrent: usize,
    /// Wall-clock time a script may compute between two verbs.
    pub step_budget_ms: u64,
    /// Rhai operations over a whole flow.
    pub max_operations: u64,
    /// Script function call depth.
    pub max_call_levels: usize,
    /// Stack of each flow thread (0: tolk's default, sized for `max_call_levels` 32).
    pub stack_kib: usize,
    /// URL prefixes flows may reach with `http(...)` (`http://` only); empty disables it.
    pub http_allow: Vec<String>,
    /// Days a text-to-speech file stays in `data_dir/tts` after it was made (the spoken text
    /// may be personal); the retention sweep removes older ones. 0 keeps them.
    pub tts_cache_days: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_concurrent: 4000,
            step_budget_ms: 500,
            max_operations: 20_000_000,
            max_call_levels: 32,
            stack_kib: 0,
            http_allow: Vec::new(),
            tts_cache_days: 30,
        }
    }
}

/// `[room]`: conference rooms and their mixer threads (`docs/conference.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoomConfig {
    /// Mixer threads (0: one per core). Rooms are spread over them by name.
    pub mixer_threads: usize,
    /// Mixing rate in Hz: 8000, 16000 or 48000.
    pub rate: u32,
    /// Frame energy (dBFS) above which a member counts as talking.
    pub talk_threshold_dbfs: f64,
    /// Members per room (a caller beyond it hears that the room is full).
    pub max_members: usize,
    /// libopus complexity (0-10) of the room's Opus encoders. At 0-1 SILK quantises without
    /// delayed decision: 48 us a frame against 109 us at 3 and 177 us at libopus's default 9
    /// (docs/PERFORMANCE.md), with the same waveform SNR on voice; the room's capacity in
    /// Opus legs rests on it.
    pub opus_complexity: i32,
    /// Leave undecoded the Opus packets of members who are not talking when the packet's
    /// voice-activity flags say no speech (RFC 6716 §4.2.3; one in 16 is decoded anyway).
    /// Decoding is most of an Opus room's cost; turn off only for far ends whose VAD
    /// misjudges (a member would then be heard up to 320 ms late).
    pub skip_quiet_opus: bool,
    /// Room recordings: "wav" (PCM16) or "ogg" (Ogg Opus, about a tenth of the size).
    pub record_format: RecordFormat,
    /// Tone played to the room when a member joins / leaves ("" for none).
    pub join_tone: String,
    pub leave_tone: String,
    /// Wrong PINs (any room, any call) within `pin_window_secs` that lock a caller out.
    pub pin_caller_failures: u32,
    /// Wrong PINs for one room (all callers) within the window that stop its PIN entry;
    /// 0: never.
    pub pin_room_failures: u32,
    pub pin_window_secs: u64,
    /// How long a lockout lasts.
    pub pin_lock_secs: u64,
}

// f64 fields: compared exactly like the rest of the configuration.
impl Eq for RoomConfig {}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            mixer_threads: 0,
            rate: 16_000,
            talk_threshold_dbfs: -45.0,
            max_members: 1000,
            opus_complexity: 1,
            skip_quiet_opus: true,
            record_format: RecordFormat::Wav,
            join_tone: "join".into(),
            leave_tone: "leave".into(),
            pin_caller_failures: 5,
            pin_room_failures: 50,
            pin_window_secs: 900,
            pin_lock_secs: 900,
        }
    }
}

/// `[database]`
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; empty means tolk's private cluster under `data_dir` (CDR issue).
    pub url: Option<String>,
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// On SIGTERM, how long calls in progress may continue before they are hung up.
    pub drain_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_secs: 30 }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `tolk=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

const SECTIONS: &[&str] = &[
    "sip", "rtp", "admin", "dialplan", "flow", "room", "database", "cdr", "shutdown", "log", "hep",
];

impl Config {
    /// Loads `path` (if given) and applies the environment. With no path, `./tolk.toml` is read
    /// when it exists.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (name, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    origin: p.display().to_string(),
                    key: "-".into(),
                    message: format!("cannot read: {e}"),
                })?;
                (p.display().to_string(), text)
            }
            None if Path::new("tolk.toml").exists() => {
                let text = std::fs::read_to_string("tolk.toml").map_err(|e| ConfigError {
                    origin: "tolk.toml".into(),
                    key: "-".into(),
                    message: format!("cannot read: {e}"),
                })?;
                ("tolk.toml".to_string(), text)
            }
            None => ("(defaults)".to_string(), String::new()),
        };
        Self::from_parts(&name, &text, &env)
    }

    /// Parses `text` (named `file` in errors), applies `TOLK_*` pairs from `env`, validates.
    pub fn from_parts(file: &str, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        // The file alone first: the TOML deserializer knows the span of a bad value, so the
        // error names its line and its key exactly.
        if let Err(e) = toml::from_str::<Config>(text) {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let msg = e.message().to_string();
            let key = match guess_unknown_field(&msg) {
                Some(field) => field,
                None => key_at_line(text, line),
            };
            return Err(ConfigError {
                origin: format!("{file}:{line}"),
                key: if key.is_empty() { "-".into() } else { key },
                message: msg,
            });
        }
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            origin: format!("{file}:{}", e.span().map(|s| line_of(text, s.start)).unwrap_or(1)),
            key: "-".into(),
            message: e.message().to_string(),
        })?;
        let mut env_keys: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("TOLK_") else { continue };
            let rest = rest.to_ascii_lowercase();
            let (section, key) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
                Some(s) => (Some(*s), rest[s.len() + 1..].to_string()),
                None => (None, rest.clone()),
            };
            let value = parse_env_value(v);
            let dotted = match section {
                Some(s) => format!("{s}.{key}"),
                None => key.clone(),
            };
            let target = match section {
                Some(s) => {
                    let entry = table
                        .entry(s.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match entry.as_table_mut() {
                        Some(t) => t,
                        None => {
                            return Err(ConfigError {
                                origin: format!("env {k}"),
                                key: s.to_string(),
                                message: "is not a section".into(),
                            });
                        }
                    }
                }
                None => &mut table,
            };
            target.insert(key, value);
            // The file parsed, so a value that does not now is this variable's.
            if let Err(e) = Config::deserialize(toml::Value::Table(table.clone())) {
                return Err(ConfigError {
                    origin: format!("env {k}"),
                    key: dotted,
                    message: e.message().to_string(),
                });
            }
            env_keys.push((dotted, k.clone()));
        }
        if let Some(url) = env.iter().find(|(k, _)| k == "DATABASE_URL").map(|(_, v)| v.clone())
            && let Some(db) = table
                .entry("database".to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
        {
            db.entry("url".to_string()).or_insert(toml::Value::String(url));
        }
        let mut config: Config = Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError {
            origin: file.to_string(),
            key: "-".into(),
            message: e.message().to_string(),
        })?;
        config.source = Source {
            file: file.to_string(),
            text: text.to_string(),
            env_keys,
        };
        config
            .validate()
            .map_err(|(key, message)| config.error_at(&key, message))?;
        Ok(config)
    }

    /// An error about `key` (dotted, `room.join_tone`) naming where it was set: the file's
    /// line or the environment variable. Layers that check their own settings against what
    /// only they know (tone names, codecs) report through it.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let s = &self.source;
        ConfigError {
            origin: origin_of(&s.file, &s.text, key, &s.env_keys),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks values that parse but make no sense.
    fn validate(&self) -> Result<(), (String, String)> {
        if ![8_000, 16_000, 48_000].contains(&self.room.rate) {
            return Err(("room.rate".into(), "must be 8000, 16000 or 48000".into()));
        }
        if !(0..=10).contains(&self.room.opus_complexity) {
            return Err(("room.opus_complexity".into(), "must be 0 to 10".into()));
        }
        if self.room.pin_caller_failures == 0 {
            return Err(("room.pin_caller_failures".into(), "must be at least 1".into()));
        }
        if self.room.pin_window_secs == 0 || self.room.pin_lock_secs == 0 {
            return Err((
                "room.pin_lock_secs".into(),
                "pin_window_secs and pin_lock_secs must be at least 1".into(),
            ));
        }
        if self.room.max_members == 0 {
            return Err(("room.max_members".into(), "must be at least 1".into()));
        }
        if self.flow.max_concurrent == 0 {
            return Err(("flow.max_concurrent".into(), "must be at least 1".into()));
        }
        if !(10..=60_000).contains(&self.flow.step_budget_ms) {
            return Err(("flow.step_budget_ms".into(), "must be between 10 and 60000".into()));
        }
        if !(1..=64).contains(&self.flow.max_call_levels) {
            return Err(("flow.max_call_levels".into(), "must be between 1 and 64".into()));
        }
        for p in &self.flow.http_allow {
            // The authority must be closed by a '/', or `http://api.example.com` would also
            // allow `http://api.example.com.elsewhere.net/`.
            let closed = p
                .strip_prefix("http://")
                .and_then(|r| r.find('/'))
                .is_some_and(|i| i > 0);
            if !closed {
                return Err((
                    "flow.http_allow".into(),
                    format!(
                        "`{p}`: each entry is an http:// URL prefix with a path, like http://127.0.0.1:9000/ (https is not supported)"
                    ),
                ));
            }
        }
        if self.flow.stack_kib != 0 && self.flow.stack_kib < 128 {
            return Err(("flow.stack_kib".into(), "must be 0 (default) or at least 128".into()));
        }
        if self.sip.listen.is_empty() {
            return Err(("sip.listen".into(), "needs at least one address".into()));
        }
        for l in &self.sip.listen {
            l.parse::<SocketAddr>().map_err(|_| {
                (
                    "sip.listen".to_string(),
                    format!("`{l}` is not an address:port (IPv6 as [::1]:5060)"),
                )
            })?;
        }
        for l in &self.sip.tls.listen {
            l.parse::<SocketAddr>()
                .map_err(|_| ("sip.tls.listen".to_string(), format!("`{l}` is not an address:port")))?;
        }
        if self.sip.tls.cert.is_some() != self.sip.tls.key.is_some() {
            return Err(("sip.tls.cert".into(), "cert and key go together".into()));
        }
        if self.sip.tls.handshake_timeout_ms == 0 || self.sip.tls.max_connections_per_address == 0 {
            return Err((
                "sip.tls.handshake_timeout_ms".into(),
                "handshake_timeout_ms and max_connections_per_address must be at least 1".into(),
            ));
        }
        if self.sip.transports.is_empty() {
            return Err(("sip.transports".into(), "needs udp, tcp or both".into()));
        }
        if self.sip.max_message_bytes < 1024 || self.sip.max_message_bytes > 1 << 20 {
            return Err((
                "sip.max_message_bytes".into(),
                "must be between 1024 and 1048576".into(),
            ));
        }
        if self.sip.min_se_secs < 90 {
            return Err(("sip.min_se_secs".into(), "RFC 4028 §4 requires at least 90".into()));
        }
        if self.sip.session_expires_secs < self.sip.min_se_secs {
            return Err((
                "sip.session_expires_secs".into(),
                "must not be below sip.min_se_secs".into(),
            ));
        }
        if self.sip.t1_ms == 0 || self.sip.t1_ms > 10_000 {
            return Err(("sip.t1_ms".into(), "must be between 1 and 10000".into()));
        }
        if self.sip.realm.is_empty() || self.sip.realm.contains(['"', '\\']) {
            return Err(("sip.realm".into(), "a realm without quotes or backslashes".into()));
        }
        trunk::validate(&self.trunks)?;
        self.rtp_port_range().map_err(|m| ("rtp.ports".to_string(), m))?;
        self.rtp.bind.parse::<std::net::IpAddr>().map_err(|_| {
            (
                "rtp.bind".to_string(),
                format!("`{}` is not an IP address", self.rtp.bind),
            )
        })?;
        if let Some(a) = &self.rtp.advertise {
            a.parse::<std::net::IpAddr>()
                .map_err(|_| ("rtp.advertise".to_string(), format!("`{a}` is not an IP address")))?;
        }
        if self.rtp.codecs.is_empty() {
            return Err(("rtp.codecs".into(), "needs at least one codec".into()));
        }
        self.admin.listen.parse::<SocketAddr>().map_err(|_| {
            (
                "admin.listen".to_string(),
                format!("`{}` is not an address:port", self.admin.listen),
            )
        })?;
        if self.cdr.batch_rows == 0 || self.cdr.batch_rows > 100_000 {
            return Err(("cdr.batch_rows".into(), "must be between 1 and 100000".into()));
        }
        if self.cdr.batch_wait_ms > 10_000 {
            return Err(("cdr.batch_wait_ms".into(), "must be at most 10000".into()));
        }
        if self.admin.tokens.iter().any(|t| t.len() < 16) {
            return Err(("admin.tokens".into(), "each token needs at least 16 characters".into()));
        }
        let policies = self.retention_policies();
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name == p.name && q.tenant == p.tenant) {
                let whose = p
                    .tenant
                    .as_deref()
                    .map_or(String::new(), |t| format!(" of tenant `{t}`"));
                return Err(("cdr.policies".into(), format!("`{}`{whose} is defined twice", p.name)));
            }
            if p.tenant.is_some() && !policies.iter().any(|q| q.name == p.name && q.tenant.is_none()) {
                return Err((
                    "cdr.policies".into(),
                    format!(
                        "`{}` is defined for a tenant only: a tenant's policy replaces a class every tenant has",
                        p.name
                    ),
                ));
            }
        }
        if !policies
            .iter()
            .any(|p| p.name == self.cdr.default_retention && p.tenant.is_none())
        {
            return Err((
                "cdr.default_retention".into(),
                format!("`{}` is not a defined retention policy", self.cdr.default_retention),
            ));
        }
        if let Err(e) = self.hep.collector() {
            return Err(("hep.destination".into(), e));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a valid filter: {e}")));
        }
        Ok(())
    }

    /// The RTP port range, inclusive, starting even.
    pub fn rtp_port_range(&self) -> Result<(u16, u16), String> {
        let (a, b) = self
            .rtp
            .ports
            .split_once('-')
            .ok_or_else(|| format!("`{}` is not first-last", self.rtp.ports))?;
        let a: u16 = a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?;
        let b: u16 = b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?;
        if a < 1024 || b < a || b - a < 2 {
            return Err(format!(
                "`{}` must be a range of at least 2 ports above 1023",
                self.rtp.ports
            ));
        }
        Ok((a, b))
    }

    /// The pseudonym key's path.
    pub fn key_file(&self) -> PathBuf {
        self.cdr
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("pseudonym.key"))
    }

    pub fn sip_listen(&self) -> Vec<SocketAddr> {
        self.sip.listen.iter().filter_map(|l| l.parse().ok()).collect()
    }

    /// Where the control socket is (`admin.control_socket`), or None when it is off.
    pub fn control_socket(&self) -> Option<std::path::PathBuf> {
        let name = self.admin.control_socket.trim();
        (!name.is_empty()).then(|| self.data_dir.join(name))
    }

    pub fn admin_listen(&self) -> SocketAddr {
        self.admin
            .listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// The web console's address as printed in sign-in links: `admin.console_url`, else
    /// `http://LISTEN/console/` (an unspecified listen address shown as loopback).
    pub fn console_url(&self) -> String {
        let given = self.admin.console_url.trim();
        if !given.is_empty() {
            return format!("{}/", given.trim_end_matches('/'));
        }
        let mut addr = self.admin_listen();
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}/console/")
    }
}

fn parse_env_value(v: &str) -> toml::Value {
    match format!("v = {v}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(v.to_string())),
        Err(_) => toml::Value::String(v.to_string()),
    }
}

/// The field named by serde's ``unknown field `foo` `` message.
fn guess_unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The dotted key (`sip.transports`) set on `line` (1-based) of `text`: the nearest section
/// header above it and the key before its `=`. Empty when the line sets no key.
fn key_at_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(here) = lines.get(line.saturating_sub(1)) else {
        return String::new();
    };
    let Some((key, _)) = here.split_once('=') else {
        return String::new();
    };
    let key = key.trim().trim_matches('"');
    let section = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(['[', ']']).trim());
    match section {
        Some(sec) => format!("{sec}.{key}"),
        None => key.to_string(),
    }
}

/// `file:line` of the key's line in the file, or `env NAME` when the environment set it.
fn origin_of(file: &str, text: &str, key: &str, env_keys: &[(String, String)]) -> String {
    if let Some((_, var)) = env_keys
        .iter()
        .find(|(dotted, _)| dotted == key || dotted.ends_with(&format!(".{key}")))
    {
        return format!("env {var}");
    }
    let leaf = key.rsplit('.').next().unwrap_or(key);
    // `trunks[2].password`: the key in the third `[[trunks]]` table.
    let (section, nth) = match key.rsplit_once('.').map(|(s, _)| s) {
        Some(s) => match s.split_once('[') {
            Some((name, rest)) => (Some(name), rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (Some(s), None),
        },
        None => (None, None),
    };
    let mut current = String::new();
    let mut occurrence = 0usize;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(['[', ']']).trim().to_string();
            if section == Some(current.as_str()) {
                occurrence += 1;
            }
            continue;
        }
        let Some((k, _)) = t.split_once('=') else { continue };
        if k.trim() == leaf && section.is_none_or(|s| s == current) && nth.is_none_or(|n| occurrence == n + 1) {
            return format!("{file}:{}", i + 1);
        }
    }
    file.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::from_parts("tolk.toml", "", &[]).unwrap();
        assert_eq!(c.sip.listen, vec!["0.0.0.0:5060"]);
        assert_eq!(c.rtp.ports, "20000-30000");
        assert_eq!(c.admin.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./var"));
        assert_eq!(c.dialplan.dir, PathBuf::from("./dialplans"));
    }

    #[test]
    fn a_tenants_policy_keeps_the_defaults_and_must_name_a_class_every_tenant_has() {
        let acme = "[[cdr.policies]]\nname = \"standard\"\ntenant = \"acme\"\nkeep_days = 30\naction = \"delete\"\n";
        let c = Config::from_parts("tolk.toml", acme, &[]).unwrap();
        let policies = c.retention_policies();
        assert!(
            policies.iter().any(|p| p.name == "billing" && p.tenant.is_none()),
            "defaults seeded"
        );
        assert!(
            policies
                .iter()
                .any(|p| p.name == "standard" && p.tenant.as_deref() == Some("acme"))
        );
        let orphan = acme.replace("\"standard\"", "\"vip\"");
        let e = Config::from_parts("tolk.toml", &orphan, &[]).unwrap_err().to_string();
        assert!(e.contains("cdr.policies") && e.contains("for a tenant only"), "{e}");
        let twice = format!("{acme}{acme}");
        let e = Config::from_parts("tolk.toml", &twice, &[]).unwrap_err().to_string();
        assert!(e.contains("of tenant `acme` is defined twice"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            ("TOLK_SIP_LISTEN".to_string(), "[\"127.0.0.1:5070\"]".to_string()),
            ("TOLK_ADMIN_LISTEN".to_string(), "127.0.0.1:9000".to_string()),
            ("TOLK_SHUTDOWN_DRAIN_SECS".to_string(), "5".to_string()),
            ("TOLK_DATA_DIR".to_string(), "/tmp/x".to_string()),
        ];
        let c = Config::from_parts("tolk.toml", "[admin]\nlisten = \"127.0.0.1:1\"\n", &env).unwrap();
        assert_eq!(c.sip.listen, vec!["127.0.0.1:5070"]);
        assert_eq!(c.admin.listen, "127.0.0.1:9000");
        assert_eq!(c.shutdown.drain_secs, 5);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_parts("tolk.toml", "[sip]\n\nlistn = [\"0.0.0.0:5060\"]\n", &[]).unwrap_err();
        assert_eq!(err.key, "listn");
        assert_eq!(err.origin, "tolk.toml:3");
    }

    #[test]
    fn bad_value_is_named_with_file_line_and_key() {
        let err = Config::from_parts("tolk.toml", "[rtp]\nports = \"30000-20000\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "rtp.ports");
        assert_eq!(err.origin, "tolk.toml:2");
        let err = Config::from_parts("tolk.toml", "[sip]\nlisten = [\"nowhere\"]\n", &[]).unwrap_err();
        assert_eq!((err.origin.as_str(), err.key.as_str()), ("tolk.toml:2", "sip.listen"));
    }

    #[test]
    fn a_word_outside_a_vocabulary_is_named_with_file_line_and_key() {
        let text = "[sip]\nlisten = [\"127.0.0.1:5060\"]\n\n[rtp]\ncodecs = [\"pcmu\", \"g729\"]\n";
        let err = Config::from_parts("tolk.toml", text, &[]).unwrap_err();
        assert_eq!(
            (err.origin.as_str(), err.key.as_str()),
            ("tolk.toml:5", "rtp.codecs"),
            "{err}"
        );
        assert!(err.message.contains("g729"), "{err}");
        let err = Config::from_parts("tolk.toml", "[sip]\ntransports = [\"quic\"]\n", &[]).unwrap_err();
        assert_eq!(
            (err.origin.as_str(), err.key.as_str()),
            ("tolk.toml:2", "sip.transports"),
            "{err}"
        );
        let env = vec![("TOLK_ROOM_RECORD_FORMAT".to_string(), "mp3".to_string())];
        let err = Config::from_parts("tolk.toml", "", &env).unwrap_err();
        assert_eq!(
            (err.origin.as_str(), err.key.as_str()),
            ("env TOLK_ROOM_RECORD_FORMAT", "room.record_format")
        );
        let c = Config::from_parts("tolk.toml", "[room]\nrecord_format = \"ogg\"\n", &[]).unwrap();
        assert_eq!(c.room.record_format, RecordFormat::Ogg);
    }

    #[test]
    fn a_layer_reports_a_bad_setting_where_it_was_set() {
        let c = Config::from_parts("tolk.toml", "[room]\n\njoin_tone = \"kazoo\"\n", &[]).unwrap();
        let err = c.error_at("room.join_tone", "not a tone");
        assert_eq!(
            (err.origin.as_str(), err.key.as_str()),
            ("tolk.toml:3", "room.join_tone")
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = vec![("TOLK_ADMIN_LISTEN".to_string(), "nope".to_string())];
        let err = Config::from_parts("tolk.toml", "", &env).unwrap_err();
        assert_eq!(err.origin, "env TOLK_ADMIN_LISTEN");
        assert_eq!(err.key, "admin.listen");
    }

    #[test]
    fn srtp_policy_defaults_to_optional_and_a_trunk_may_say_otherwise() {
        let cfg = Config::from_parts("tolk.toml", "", &[]).unwrap();
        assert_eq!(cfg.sip.srtp, trunk::SrtpPolicy::Optional);
        let text = "[sip]\nsrtp = \"off\"\n\n[[trunks]]\nname = \"a\"\nsources = [\"192.0.2.1\"]\nsrtp = \"required\"\n\n\
[[trunks]]\nname = \"b\"\nsources = [\"192.0.2.2\"]\n";
        let cfg = Config::from_parts("tolk.toml", text, &[]).unwrap();
        assert_eq!(cfg.sip.srtp, trunk::SrtpPolicy::Off);
        assert_eq!(cfg.trunks[0].srtp, Some(trunk::SrtpPolicy::Required));
        assert_eq!(cfg.trunks[1].srtp, None, "unset: sip.srtp decides");
        let bad = text.replace("srtp = \"required\"", "srtp = \"sometimes\"");
        let err = Config::from_parts("tolk.toml", &bad, &[]).unwrap_err();
        assert_eq!(err.origin, "tolk.toml:7", "{err}");
        assert!(err.key.ends_with("srtp"), "{err}");
    }

    #[test]
    fn toml_syntax_error_names_the_line() {
        let err = Config::from_parts("tolk.toml", "[sip]\nlisten = [\n", &[]).unwrap_err();
        assert!(err.origin.starts_with("tolk.toml:"), "{err}");
    }
}
