//! Wiring only: the CDR service, the SIP sockets, the admin listener, the mixer threads, the
//! prompt catalog, the dialplan (and its reloads), and the call controller
//! ([`crate::call::controller`]) that owns every call from there; then shutdown.
//!
//! Must not: act on calls (the controller does).

use crate::call::controller::{Controller, ControllerSetup, Inputs};
use crate::call::flow_call::LegSetup;
use crate::call::{LegReport, PortPool};
use crate::config::{Config, ConfigError, Transport};
use crate::dialplan::Dialplan;
use crate::flow::engine::Limits as FlowLimits;
use crate::flow::runner::Runner;
use crate::room::Rooms;
use crate::room::mixer::MixerConfig;
use crate::sip::dialog::{UasConfig, UasCore};
use crate::sip::msg::Limits;
use crate::sip::sdp::Codec;
use crate::sip::transport::{Inbound, ReceiveConfig, Transports, spawn_tcp_listener, spawn_udp_listener};
use crate::sip::txn::TimerConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What `serve` bound, for tests and logs.
#[derive(Debug, Clone)]
pub struct Bound {
    pub sip_udp: Vec<SocketAddr>,
    pub sip_tcp: Vec<SocketAddr>,
    pub sip_tls: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

/// Checks the settings that only a layer above the configuration can judge (tone names are
/// the media layer's), naming where each was set. `serve` and `check-config` run it.
pub fn check_config(cfg: &Config) -> Result<(), ConfigError> {
    for (key, tone) in [
        ("room.join_tone", &cfg.room.join_tone),
        ("room.leave_tone", &cfg.room.leave_tone),
    ] {
        if !tone.is_empty() && crate::media::tone::check(tone).is_err() {
            return Err(cfg.error_at(key, format!("`{tone}` is not a tone name or specification")));
        }
    }
    Ok(())
}

/// Runs the gateway until `shutdown` turns true (SIGTERM/SIGINT in `main`), then drains.
pub async fn run(
    cfg: Config,
    shutdown: watch::Receiver<bool>,
    bound_tx: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    check_config(&cfg)?;
    let metrics = crate::metrics::install();
    recover_recordings(&cfg.data_dir.join("recordings"));
    // CDRs first: calls must have somewhere to be accounted before any can arrive.
    let cdr = if cfg.cdr.enabled {
        Some(
            crate::cdr::CdrService::start(&cfg)
                .await
                .map_err(|e| anyhow::anyhow!("CDRs: {e}"))?,
        )
    } else {
        tracing::warn!("cdr.enabled = false: calls leave no records");
        None
    };
    let accounting = cdr
        .as_ref()
        .map(|c| crate::call::Accounting::new(c.sink.clone(), c.policy.clone()));
    let transports = Transports::new();
    // Copies of every SIP message to a Homer collector (`hep.destination`).
    if let Some(collector) = cfg
        .hep
        .collector()
        .map_err(|e| anyhow::anyhow!("hep.destination: {e}"))?
    {
        let sender = crate::sip::transport::hep::HepSender::new(collector, cfg.hep.capture_id, &cfg.hep.password)
            .map_err(|e| anyhow::anyhow!("hep.destination: cannot open a socket toward {collector}: {e}"))?;
        transports.export_to(sender);
        tracing::info!(%collector, "HEP export on: a copy of every SIP message goes to the collector");
    }
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(4096);
    let rcfg = ReceiveConfig {
        limits: Limits {
            max_message_bytes: cfg.sip.max_message_bytes,
            max_headers: cfg.sip.max_headers,
            max_header_bytes: cfg.sip.max_header_bytes,
        },
        tcp_idle: Duration::from_secs(cfg.sip.tcp_idle_secs),
        tcp_max_connections: cfg.sip.tcp_max_connections,
    };
    let mut bound = Bound {
        sip_udp: Vec::new(),
        sip_tcp: Vec::new(),
        sip_tls: Vec::new(),
        admin: cfg.admin_listen(),
    };
    for addr in cfg.sip_listen() {
        if cfg.sip.transports.contains(&Transport::Udp) {
            let a = spawn_udp_listener(addr, transports.clone(), in_tx.clone(), rcfg)
                .await
                .map_err(|e| anyhow::anyhow!("sip.listen: cannot bind UDP {addr}: {e}"))?;
            tracing::info!(addr = %a, "SIP listening on UDP");
            bound.sip_udp.push(a);
        }
        if cfg.sip.transports.contains(&Transport::Tcp) {
            // Same port as UDP when the configured port was 0 (tests).
            let tcp_addr = match bound.sip_udp.last() {
                Some(u) if addr.port() == 0 => SocketAddr::new(addr.ip(), u.port()),
                _ => addr,
            };
            let a = spawn_tcp_listener(tcp_addr, transports.clone(), in_tx.clone(), rcfg)
                .await
                .map_err(|e| anyhow::anyhow!("sip.listen: cannot bind TCP {tcp_addr}: {e}"))?;
            tracing::info!(addr = %a, "SIP listening on TCP");
            bound.sip_tcp.push(a);
        }
    }
    let certs = start_tls(&cfg, &transports, &in_tx, rcfg, &mut bound).await?;
    drop(in_tx);
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen())
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen: cannot bind {}: {e}", cfg.admin_listen()))?;
    bound.admin = admin.local_addr()?;
    tracing::info!(addr = %bound.admin, "admin API and /metrics listening");
    let scheduler = crate::room::scheduler::Scheduler::start(cfg.room.mixer_threads, MixerConfig::from(&cfg.room))
        .map_err(|e| anyhow::anyhow!("cannot start the mixer threads: {e}"))?;
    let mut rooms = Rooms::with_scheduler(scheduler, cfg.room.max_members);
    rooms.set_pin_limits(crate::room::pin_guard::PinLimits::from(&cfg.room));
    // PINs set through the admin API outlive restarts (room::pins), kept as digests under a
    // key of their own.
    let pin_key_file = cfg.data_dir.join("keys").join("pins.key");
    rooms.keep_pins_under(crate::keys::SecretKey::load_or_create(&pin_key_file).map_err(|e| anyhow::anyhow!("{e}"))?);
    for problem in rooms.keep_pins_in(cfg.data_dir.join("rooms").join("pins.json")) {
        tracing::warn!("{problem}");
    }
    // So do rooms defined through it (room::defined).
    for problem in rooms.keep_definitions_in(cfg.data_dir.join("rooms").join("rooms.json")) {
        tracing::warn!("{problem}");
    }
    let room_ledger = rooms.ledger();
    let (reload_tx, reload_rx) = mpsc::channel::<crate::admin::api::ReloadRequest>(4);
    // The admin API's questions about live calls, passed on to the call controller.
    let (calls_tx, mut calls_rx) = mpsc::channel::<crate::admin::api::CallsRequest>(16);
    let (query_tx, query_rx) = mpsc::channel::<crate::call::controller::CallQuery>(16);
    tokio::spawn(async move {
        use crate::admin::api::CallsRequest;
        use crate::call::controller::CallQuery;
        while let Some(r) = calls_rx.recv().await {
            let q = match r {
                CallsRequest::List(tx) => CallQuery::List(tx),
                CallsRequest::Hangup(call, tx) => CallQuery::Hangup(call, tx),
            };
            if query_tx.send(q).await.is_err() {
                break;
            }
        }
    });
    let api = std::sync::Arc::new(crate::admin::api::ApiState {
        sign_in: std::sync::Arc::new(crate::admin::console::SignIn::new(
            cfg.console_url(),
            crate::admin::console::sessions::Limits::default(),
        )),
        calls: calls_tx,
        tokens: cfg.admin.tokens.clone(),
        control_socket: false,
        rooms: rooms.clone(),
        reload: reload_tx.clone(),
        cdr: cdr.as_ref().map(|c| crate::admin::api::CdrApi {
            pool: c.pool.clone(),
            key: c.policy.key.clone(),
            sink: c.sink.clone(),
            stores: crate::cdr::erasure::ErasureStores::under(&cfg.data_dir, c.policy.key.clone()),
            erasure: crate::cdr::erasure::ErasurePolicy::of(&cfg.cdr),
            sweep: crate::cdr::retention::SweepScope::of(&cfg),
        }),
    });
    // The control socket serves the same API without tokens to the process's owner.
    let _control_socket = match cfg.control_socket() {
        Some(path) => {
            let (listener, guard) = crate::admin::control::bind(&path)?;
            let local = std::sync::Arc::new(crate::admin::api::ApiState {
                control_socket: true,
                ..(*api).clone()
            });
            let router = crate::admin::api::routes(local);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "control socket failed");
                }
            });
            tracing::info!(path = %path.display(), "control socket listening (owner only)");
            Some(guard)
        }
        None => None,
    };
    let capacity = crate::admin::console::Capacity {
        calls: cfg.sip.max_calls,
        flows: cfg.flow.max_concurrent,
    };
    let router = crate::admin::router(metrics, api, capacity);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    if let Some(tx) = bound_tx {
        let _ = tx.send(bound.clone());
    }

    let (first, last) = cfg.rtp_port_range().map_err(|e| anyhow::anyhow!("rtp.ports: {e}"))?;
    let rtp_bind: IpAddr = cfg.rtp.bind.parse()?;
    let ports = PortPool::new(rtp_bind, first, last);
    let rtp_advertise: Option<IpAddr> = cfg.rtp.advertise.as_deref().and_then(|a| a.parse().ok());
    let codecs: Vec<Codec> = cfg.rtp.codecs.iter().map(|&c| Codec::from(c)).collect();
    let seed = fastrand::u64(..);
    let gate = crate::sip::trunk::Gate::new(crate::sip::trunk::TrunkTable::from_config(&cfg), &cfg.sip.realm, seed);
    for t in gate.table().trunks() {
        tracing::info!(trunk = %t.name, "trunk configured");
    }
    let core = UasCore::with_gate(
        UasConfig {
            timers: TimerConfig {
                t1: Duration::from_millis(cfg.sip.t1_ms),
                ..TimerConfig::default()
            },
            session_expires_secs: cfg.sip.session_expires_secs,
            min_se_secs: cfg.sip.min_se_secs,
            // Each call holds an RTP/RTCP port pair: never admit more calls than pairs.
            max_calls: cfg.sip.max_calls.min(((last - first) / 2) as usize),
            max_call_duration: (cfg.sip.max_call_secs > 0).then(|| Duration::from_secs(cfg.sip.max_call_secs)),
            // The shell's randomness for tags, branches and nonces: unguessable per process.
            seed,
            ..UasConfig::default()
        },
        gate,
    );
    let (report_tx, report_rx) = mpsc::channel::<LegReport>(1024);
    let prompts = match crate::media_files::prompts::PromptCatalog::load(&cfg.sounds_dir) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "no prompt catalog: prompts will not play (tones still do)");
            None
        }
    };
    rooms.set_media(crate::room::RoomMedia {
        prompts: prompts.clone(),
        recordings_dir: cfg.data_dir.join("recordings"),
        format: cfg.room.record_format,
    });
    let classes: Vec<String> = cfg.retention_policies().into_iter().map(|p| p.name).collect();
    let dialplan_dir = dialplan_dir(&cfg)?;
    let dialplan = Dialplan::load(&dialplan_dir, FlowLimits::from(&cfg.flow), &classes)
        .map_err(|errors| anyhow::anyhow!("dialplan:\n{}", join_errors(&errors)))?;
    tracing::info!(dir = %dialplan_dir.display(), flows = ?dialplan.flows.names(), rooms = dialplan.rooms.read().map(|r| r.len()).unwrap_or(0), "dialplan loaded");
    rooms.configure(dialplan.rooms.clone());
    let (plan_tx, plan_rx) = watch::channel(Arc::new(dialplan));
    spawn_dialplan_reloads(
        reload_rx,
        DialplanSource {
            dir: dialplan_dir,
            limits: FlowLimits::from(&cfg.flow),
            classes: classes.clone(),
        },
        rooms.clone(),
        plan_tx,
    );
    spawn_sighup_reload(reload_tx, certs);
    let controller = Controller::new(ControllerSetup {
        core,
        transports,
        accounting,
        rooms,
        dialplan: plan_rx,
        runner: Runner::new(cfg.flow.max_concurrent, crate::flow::runner::stack_bytes(&cfg.flow)),
        ports,
        rtp_advertise,
        srtp: cfg.sip.srtp,
        codecs,
        legs: LegSetup {
            rtp_timeout: Duration::from_secs(cfg.rtp.timeout_secs),
            prompts,
            reports: report_tx,
            recordings_dir: cfg.data_dir.join("recordings"),
            tts_dir: cfg.data_dir.join("tts"),
            classes,
            pool: cdr.as_ref().map(|c| c.pool.clone()),
            join_tone: cfg.room.join_tone.clone(),
            leave_tone: cfg.room.leave_tone.clone(),
        },
        rtp_timeout: Duration::from_secs(cfg.rtp.timeout_secs),
        overload_delay: Duration::from_millis(cfg.sip.overload_delay_ms),
        drain: Duration::from_secs(cfg.shutdown.drain_secs),
    });
    controller
        .run(Inputs {
            sip: in_rx,
            reports: report_rx,
            room_ledger,
            shutdown,
            queries: query_rx,
        })
        .await;
    if let Some(cdr) = cdr {
        cdr.shutdown().await;
    }
    Ok(())
}

/// Where the dialplan is loaded from, again on each reload.
struct DialplanSource {
    dir: std::path::PathBuf,
    limits: FlowLimits,
    classes: Vec<String>,
}

/// Reloads the dialplan on request (admin API, SIGHUP), off the call path: a plan that loads
/// replaces the one in force (new calls route by it, rooms take its settings); one with
/// errors is refused and the previous plan keeps serving. The requester hears which.
fn spawn_dialplan_reloads(
    mut requests: mpsc::Receiver<crate::admin::api::ReloadRequest>,
    source: DialplanSource,
    rooms: Rooms,
    plan: watch::Sender<Arc<Dialplan>>,
) {
    let source = Arc::new(source);
    tokio::spawn(async move {
        while let Some(done) = requests.recv().await {
            let s = source.clone();
            let loaded =
                tokio::task::spawn_blocking(move || Dialplan::load(&s.dir, s.limits.clone(), &s.classes)).await;
            let outcome = match loaded {
                Ok(Ok(new)) => {
                    let msg = format!("dialplan reloaded: flows {}", new.flows.names().join(", "));
                    tracing::info!("{msg}");
                    rooms.configure(new.rooms.clone());
                    plan.send_replace(Arc::new(new));
                    Ok(msg)
                }
                Ok(Err(errors)) => {
                    let msg = join_errors(&errors);
                    tracing::error!("dialplan reload rejected; the previous plan keeps serving:\n{msg}");
                    Err(msg)
                }
                Err(e) => Err(format!("dialplan reload failed: {e}")),
            };
            let _ = done.send(outcome);
        }
    });
}

fn join_errors(errors: &[crate::file_text::FileError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// The shipped demo dialplan, compiled into the binary: `serve` uses it (written out under
/// `data_dir/dialplan`) when `dialplan.dir` does not exist, so a first run needs no files.
const EMBEDDED_DIALPLAN: &[(&str, &str)] = &[
    ("numbers.toml", include_str!("../dialplans/numbers.toml")),
    ("rooms.toml", include_str!("../dialplans/rooms.toml")),
    (
        "flows/conference.rhai",
        include_str!("../dialplans/flows/conference.rhai"),
    ),
    (
        "flows/assistant.rhai",
        include_str!("../dialplans/flows/assistant.rhai"),
    ),
    ("flows/echo.rhai", include_str!("../dialplans/flows/echo.rhai")),
    (
        "flows/interpretation.rhai",
        include_str!("../dialplans/flows/interpretation.rhai"),
    ),
];

/// The dialplan directory to load: `dialplan.dir`, or the embedded demo written out.
fn dialplan_dir(cfg: &Config) -> anyhow::Result<std::path::PathBuf> {
    if cfg.dialplan.dir.is_dir() {
        return Ok(cfg.dialplan.dir.clone());
    }
    let dir = cfg.data_dir.join("dialplan");
    if !dir.join("numbers.toml").exists() {
        for (name, text) in EMBEDDED_DIALPLAN {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)?;
        }
    }
    tracing::warn!(
        configured = %cfg.dialplan.dir.display(),
        using = %dir.display(),
        "dialplan.dir does not exist: serving the built-in demo dialplan"
    );
    Ok(dir)
}

/// SIGHUP reloads the dialplan (the outcome is logged by the gateway task).
/// SIP over TLS on `sip.tls.listen` (none when empty), with the configured certificate or
/// a self-signed one made in `data_dir/tls/`.
async fn start_tls(
    cfg: &Config,
    transports: &Arc<Transports>,
    in_tx: &mpsc::Sender<Inbound>,
    rcfg: ReceiveConfig,
    bound: &mut Bound,
) -> anyhow::Result<Option<Arc<crate::sip::transport::tls::CertStore>>> {
    use crate::sip::transport::tls::{CertStore, TlsLimits, cert_files, spawn_tls_listener};
    if cfg.sip.tls.listen.is_empty() {
        return Ok(None);
    }
    let (cert, key) =
        cert_files(cfg.sip.tls.files(), &cfg.data_dir.join("tls")).map_err(|e| anyhow::anyhow!("sip.tls: {e}"))?;
    let certs = Arc::new(CertStore::load(&cert, &key).map_err(|e| anyhow::anyhow!("sip.tls: {e}"))?);
    let limits = TlsLimits {
        handshake_timeout: Duration::from_millis(cfg.sip.tls.handshake_timeout_ms),
        per_address: cfg.sip.tls.max_connections_per_address,
    };
    for l in &cfg.sip.tls.listen {
        let addr: SocketAddr = l.parse()?;
        let a = spawn_tls_listener(addr, certs.clone(), transports.clone(), in_tx.clone(), rcfg, limits)
            .await
            .map_err(|e| anyhow::anyhow!("sip.tls.listen: cannot bind TLS {addr}: {e}"))?;
        tracing::info!(addr = %a, cert = %cert.display(), "SIP listening on TLS");
        bound.sip_tls.push(a);
    }
    Ok(Some(certs))
}

/// SIGHUP: the dialplan is reloaded, and the TLS certificate read again (connections up
/// keep theirs; a bad new file leaves the old certificate in use).
fn spawn_sighup_reload(
    tx: mpsc::Sender<crate::admin::api::ReloadRequest>,
    certs: Option<Arc<crate::sip::transport::tls::CertStore>>,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(c) = &certs {
                match c.reload() {
                    Ok(()) => tracing::info!(cert = %c.cert_path().display(), "TLS certificate reloaded"),
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the one in use stays"),
                }
            }
            let (done, _outcome) = tokio::sync::oneshot::channel();
            if tx.send(done).await.is_err() {
                return;
            }
        }
    });
}

/// Crash recovery of recordings (media_files::recorder): every WAV and Ogg file under `dir` is checked
/// at start-up; torn ones are repaired, foreign ones moved aside, and each case is logged.
pub fn recover_recordings(dir: &std::path::Path) {
    use crate::media_files::recorder::{RepairOutcome, repair, repair_ogg};
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let outcome = match path.extension().and_then(|e| e.to_str()) {
            Some("wav") => repair(&path),
            Some("opus") | Some("ogg") => repair_ogg(&path),
            _ => continue,
        };
        match outcome {
            Ok(RepairOutcome::Intact) => {}
            Ok(RepairOutcome::Repaired { samples }) => {
                tracing::warn!(file = %path.display(), samples, "recording cut short by a crash: header repaired");
            }
            Ok(RepairOutcome::Truncated { bytes_removed }) => {
                tracing::warn!(file = %path.display(), bytes_removed, "recording cut short by a crash: torn page removed");
            }
            Ok(RepairOutcome::Corrupt { reason, moved_to }) => {
                tracing::error!(file = %path.display(), moved_to = %moved_to.display(), reason, "not a recording tolk wrote: moved aside");
            }
            Err(e) => tracing::error!(file = %path.display(), error = %e, "could not check recording"),
        }
    }
}
