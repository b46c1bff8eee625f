//! Wiring: sockets, the SIP core task, the admin listener, graceful shutdown.
//!
//! The SIP core ([`UasCore`]) is owned by one task; transports hand it parsed messages over
//! a channel and it hands back what to send. New calls are routed by the dialplan
//! (`flow::dialplan`) to a flow, which runs on its own thread and asks this task to act on
//! its call ([`crate::call::flow_call`]).

use crate::call::flow_call::{Ctx, FlowCalls, FlowMsg, GatewayPort, LegSetup, MediaSlot};
use crate::call::{DigitSource, LegHandle, LegReport, PortPool};
use crate::config::{Config, ConfigError, Transport};
use crate::dialplan::{Dialplan, Target};
use crate::flow::engine::Limits as FlowLimits;
use crate::flow::runner::Runner;
use crate::privacy::mask_opt;
use crate::room::Rooms;
use crate::room::mixer::MixerConfig;
use crate::sip::dialog::{CallRef, IncomingCall, UasConfig, UasCore, UasEvent};
use crate::sip::msg::{Limits, SipMessage};
use crate::sip::sdp::{Codec, LocalMedia};
use crate::sip::transport::{Inbound, ReceiveConfig, Transports, spawn_tcp_listener, spawn_udp_listener};
use crate::sip::txn::TimerConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What `serve` bound, for tests and logs.
#[derive(Debug, Clone)]
pub struct Bound {
    pub sip_udp: Vec<SocketAddr>,
    pub sip_tcp: Vec<SocketAddr>,
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
    mut shutdown: watch::Receiver<bool>,
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
    let mut accounting = cdr
        .as_ref()
        .map(|c| crate::call::Accounting::new(c.sink.clone(), c.policy.clone()));
    let transports = Transports::new();
    let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(4096);
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
    drop(in_tx);
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen())
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen: cannot bind {}: {e}", cfg.admin_listen()))?;
    bound.admin = admin.local_addr()?;
    tracing::info!(addr = %bound.admin, "admin API and /metrics listening");
    let scheduler = crate::room::scheduler::Scheduler::start(cfg.room.mixer_threads, MixerConfig::from(&cfg.room))
        .map_err(|e| anyhow::anyhow!("cannot start the mixer threads: {e}"))?;
    let mut rooms = Rooms::with_scheduler(scheduler, cfg.room.max_members);
    // PINs set through the admin API outlive restarts (room::pins).
    for problem in rooms.keep_pins_in(cfg.data_dir.join("rooms").join("pins.json")) {
        tracing::warn!("{problem}");
    }
    let mut room_events = rooms.ledger();
    let (reload_tx, mut reload_rx) = mpsc::channel::<crate::admin::api::ReloadRequest>(4);
    let api = std::sync::Arc::new(crate::admin::api::ApiState {
        tokens: cfg.admin.tokens.clone(),
        rooms: rooms.clone(),
        reload: reload_tx.clone(),
        cdr: cdr.as_ref().map(|c| crate::admin::api::CdrApi {
            pool: c.pool.clone(),
            key: c.policy.key.clone(),
            sink: c.sink.clone(),
            recordings_dir: cfg.data_dir.join("recordings"),
            erasure_action: cfg.cdr.erasure_action,
        }),
    });
    let router = crate::admin::router(metrics, api);
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
    let mut core = UasCore::new(UasConfig {
        timers: TimerConfig {
            t1: Duration::from_millis(cfg.sip.t1_ms),
            ..TimerConfig::default()
        },
        session_expires_secs: cfg.sip.session_expires_secs,
        min_se_secs: cfg.sip.min_se_secs,
        // Each call holds an RTP/RTCP port pair: never admit more calls than pairs.
        max_calls: cfg.sip.max_calls.min(((last - first) / 2) as usize),
        // The shell's randomness for tags and branches: unguessable per process.
        seed: fastrand::u64(..),
        ..UasConfig::default()
    });
    let (report_tx, mut report_rx) = mpsc::channel::<LegReport>(1024);
    let mut legs: HashMap<CallRef, LegHandle> = HashMap::new();
    let mut draining: Option<tokio::time::Instant> = None;
    let drain = Duration::from_secs(cfg.shutdown.drain_secs);
    let rtp_timeout = Duration::from_secs(cfg.rtp.timeout_secs);
    let overload_delay = Duration::from_millis(cfg.sip.overload_delay_ms);
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
    let mut dialplan = Arc::new(
        Dialplan::load(&dialplan_dir, FlowLimits::from(&cfg.flow), &classes)
            .map_err(|errors| anyhow::anyhow!("dialplan:\n{}", join_errors(&errors)))?,
    );
    tracing::info!(dir = %dialplan_dir.display(), flows = ?dialplan.flows.names(), rooms = dialplan.rooms.read().map(|r| r.len()).unwrap_or(0), "dialplan loaded");
    rooms.configure(dialplan.rooms.clone());
    spawn_sighup_reload(reload_tx);
    let runner = Runner::new(cfg.flow.max_concurrent, crate::flow::runner::stack_bytes(&cfg.flow));
    let (flow_tx, mut flow_rx) = mpsc::channel::<FlowMsg>(4096);
    // How long the last flow request waited for this task (an overload signal).
    let mut flow_lag = Duration::ZERO;
    let mut flows = FlowCalls::new(LegSetup {
        rtp_timeout,
        prompts,
        reports: report_tx.clone(),
        recordings_dir: cfg.data_dir.join("recordings"),
        tts_dir: cfg.data_dir.join("tts"),
        classes: classes.clone(),
        pool: cdr.as_ref().map(|c| c.pool.clone()),
        join_tone: cfg.room.join_tone.clone(),
        leave_tone: cfg.room.leave_tone.clone(),
    });

    // What the flow handlers act on, borrowed afresh for each event.
    macro_rules! ctx {
        () => {
            Ctx {
                core: &mut core,
                legs: &mut legs,
                accounting: accounting.as_mut(),
                rooms: &rooms,
                now: std::time::Instant::now(),
            }
        };
    }

    loop {
        let next = core.poll_timeout().map(tokio::time::Instant::from_std);
        let mut sleep_until = next.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        if let Some(at) = flows.next_deadline() {
            sleep_until = sleep_until.min(tokio::time::Instant::from_std(at));
        }
        tokio::select! {
            inbound = in_rx.recv() => {
                let Some(first) = inbound else { break };
                let now = std::time::Instant::now();
                // Shed new calls while messages wait too long in the queue (fast 503s keep the
                // rate of the calls already accepted instead of letting every call time out).
                // Queueing delay, not queue length: a burst read in one go is not overload.
                // Flows waiting for their calls count too: a gateway that keeps up with SIP but
                // not with its flows is overloaded as well.
                core.set_overloaded(now.saturating_duration_since(first.received) > overload_delay || flow_lag > overload_delay);
                // Take what is queued in one go (bounded), then drain outputs once.
                let mut batch = Some(first);
                let mut taken = 0;
                while let Some(Inbound { msg, peer, .. }) = batch.take() {
                    match msg {
                        SipMessage::Request(r) => core.handle_request(now, r, peer),
                        SipMessage::Response(r) => core.handle_response(now, r, peer),
                    }
                    taken += 1;
                    if taken < 64 { batch = in_rx.try_recv().ok(); }
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                core.handle_timeout(std::time::Instant::now());
            }
            Some(first) = flow_rx.recv() => {
                // Take what is queued (bounded): flows must not wait behind a SIP flood.
                let mut ctx = ctx!();
                flow_lag = ctx.now.saturating_duration_since(first.sent_at());
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(msg) = next.take() {
                    flows.handle(msg, &mut ctx);
                    taken += 1;
                    if taken < 256 { next = flow_rx.try_recv().ok(); }
                }
            }
            Some(done) = reload_rx.recv() => {
                let dir = dialplan_dir.clone();
                let limits = FlowLimits::from(&cfg.flow);
                let classes = classes.clone();
                let loaded = tokio::task::spawn_blocking(move || Dialplan::load(&dir, limits, &classes)).await;
                let outcome = match loaded {
                    Ok(Ok(plan)) => {
                        let msg = format!("dialplan reloaded: flows {}", plan.flows.names().join(", "));
                        tracing::info!("{msg}");
                        rooms.configure(plan.rooms.clone());
                        dialplan = Arc::new(plan);
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
            Some(report) = report_rx.recv() => match report {
                LegReport::TimedOut { call } => {
                    tracing::info!(call = call.0, "no RTP for {}s; hanging up", rtp_timeout.as_secs());
                    if let Some(a) = accounting.as_mut() { a.rtp_timed_out(call); }
                    let _ = core.hangup(call, std::time::Instant::now());
                }
                LegReport::Digit { call, digit, source } => {
                    digit_received(call, digit, source);
                    let mut ctx = ctx!();
                    flows.digit(call, digit, &mut ctx);
                }
                LegReport::PlaybackDone { call, what, ok } => {
                    tracing::debug!(call = call.0, what, ok, "playback done");
                    flows.playback_done(call, &what, ok);
                }
                // Digits may be a PIN or a number: only their count is logged.
                LegReport::DigitsSent { call, digits } => {
                    tracing::debug!(call = call.0, count = digits.len(), "digits sent");
                }
                LegReport::RecordingDone { call, path, seconds, error } => {
                    match &error {
                        None => tracing::info!(call = call.0, path = %path.display(), seconds = format!("{seconds:.1}"), "recording finished"),
                        Some(e) => tracing::warn!(call = call.0, path = %path.display(), error = e, "recording failed"),
                    }
                    flows.recording_done(call, seconds, error);
                }
                LegReport::Talking { call, talking } => rooms.set_talking(call.0, talking),
                LegReport::LeftRoom { call } => {
                    let mut ctx = ctx!();
                    flows.left_room(call, &mut ctx);
                }
                LegReport::RoomRefused { call } => {
                    tracing::warn!(call = call.0, "the room's mixer thread refused the member (queue full)");
                    let mut ctx = ctx!();
                    flows.left_room(call, &mut ctx);
                }
                LegReport::Summary { call, summary } => {
                    if let Some(a) = accounting.as_mut() { a.summary(call, &summary); }
                    tracing::info!(
                        call = call.0,
                        received = summary.packets_received,
                        lost = summary.packets_lost,
                        jitter_ms = format!("{:.1}", summary.jitter_ms),
                        mos = format!("{:.2}", summary.mos),
                        foreign_packets = summary.foreign_packets,
                        rtcp_received = summary.rtcp_received,
                        rtt_ms = summary.rtt_ms.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                        "media quality"
                    );
                }
            },
            Some(e) = room_events.recv() => {
                room_event_to_cdr(&e, &rooms, accounting.as_mut());
            }
            changed = shutdown.changed(), if draining.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!(calls = core.stats().calls, drain_secs = drain.as_secs(), "shutting down: refusing new calls, draining");
                    core.set_refuse_new_calls(true);
                    draining = Some(tokio::time::Instant::now() + drain);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(250)), if draining.is_some() => {}
        }
        let now = std::time::Instant::now();
        {
            let mut ctx = ctx!();
            flows.poll(&mut ctx);
        }
        while let Some(event) = core.poll_event() {
            match event {
                UasEvent::Incoming(inc) => {
                    let call = inc.call;
                    if let Some((flow, slot, info)) = route_incoming(
                        &mut core,
                        *inc,
                        &dialplan,
                        &ports,
                        rtp_advertise,
                        &codecs,
                        accounting.as_mut(),
                        now,
                    ) {
                        let hung_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        flows.add(call, slot, hung_up.clone());
                        let port = GatewayPort {
                            call,
                            tx: flow_tx.clone(),
                        };
                        let finished = flow_tx.clone();
                        let started = runner.start(
                            dialplan.flows.clone(),
                            flow,
                            Box::new(port),
                            info,
                            hung_up,
                            move |end| {
                                let _ = finished.blocking_send(FlowMsg::Finished { call, end });
                            },
                        );
                        if let Err(busy) = started {
                            tracing::warn!(call = call.0, "{busy}: refusing the call");
                            metrics::counter!("calls_total", "outcome" => "flows_busy").increment(1);
                            let _ = core.reject(call, 503, now);
                        }
                    }
                }
                UasEvent::MediaChanged { call, media } => {
                    if let Some(leg) = legs.get(&call) {
                        tracing::info!(call = call.0, hold = media.on_hold(), "media changed");
                        // A member on hold is neither heard in its room nor sent the mix.
                        if rooms.member(call.0).is_some_and(|(_, m)| m.held != media.on_hold()) {
                            rooms.set_held(call.0, media.on_hold());
                        }
                        let _ = leg.media.send(Some(media));
                    }
                }
                UasEvent::InfoDtmf { call, digit, .. } => {
                    digit_received(call, digit, DigitSource::SipInfo);
                    let mut ctx = ctx!();
                    flows.digit(call, digit, &mut ctx);
                }
                UasEvent::TransferResult { call, status } => {
                    tracing::info!(call = call.0, status, "transfer result");
                    flows.transfer_result(call, status);
                }
                UasEvent::Ended { call, reason } => {
                    tracing::info!(call = call.0, ?reason, "call ended");
                    {
                        let mut ctx = ctx!();
                        flows.ended(call, &mut ctx);
                    }
                    let had_leg = legs.remove(&call).is_some();
                    if let Some(a) = accounting.as_mut() {
                        a.ended(call, reason, had_leg, crate::clock::now_micros());
                    }
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            transports.send(t);
        }
        if let Some(a) = accounting.as_mut() {
            a.flush_overdue(crate::clock::now_micros());
        }
        let stats = core.stats();
        metrics::gauge!("sip_transactions_active").set((stats.server_transactions + stats.client_transactions) as f64);
        metrics::gauge!("sip_dialogs_active").set(stats.calls as f64);
        if let Some(deadline) = draining {
            if stats.calls == 0 && stats.client_transactions == 0 {
                tracing::info!("drained; exiting");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for call in core.call_refs() {
                    let _ = core.hangup(call, now);
                }
                while let Some(t) = core.poll_transmit() {
                    transports.send(t);
                }
                // One grace period for the BYEs to go out and be answered.
                draining = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                if core.stats().calls == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
    // Give the legs a moment to report their summaries, then write what is left.
    if let Some(a) = accounting.as_mut() {
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while !a.is_empty() && tokio::time::Instant::now() < until {
            match tokio::time::timeout_at(until, report_rx.recv()).await {
                Ok(Some(LegReport::Summary { call, summary })) => a.summary(call, &summary),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        a.flush_all();
    }
    if let Some(cdr) = cdr {
        cdr.shutdown().await;
    }
    Ok(())
}

/// Routes a new call through the dialplan: refused calls are answered here; a call for a flow
/// gets an RTP port and the facts its flow may read.
#[allow(clippy::too_many_arguments)]
fn route_incoming(
    core: &mut UasCore,
    inc: IncomingCall,
    dialplan: &Dialplan,
    ports: &Arc<PortPool>,
    rtp_advertise: Option<IpAddr>,
    codecs: &[Codec],
    mut accounting: Option<&mut crate::call::Accounting>,
    now: std::time::Instant,
) -> Option<(String, MediaSlot, crate::flow::port::CallInfo)> {
    // Trunks (sip::trunk) are not identified yet: every call routes as from no trunk.
    let route = inc.dialled.as_deref().map(|d| dialplan.route(d, None));
    let dialled = route.as_ref().map(|r| r.dialled.clone());
    if let Some(a) = accounting.as_deref_mut() {
        a.offered(&inc, dialled.as_deref(), route.as_ref(), crate::clock::now_micros());
    }
    let caller = if inc.privacy_requested {
        None
    } else {
        inc.caller.as_deref()
    };
    tracing::info!(
        call = inc.call.0,
        dialled = %mask_opt(dialled.as_deref()),
        caller = %mask_opt(caller),
        peer = %inc.peer.remote,
        route = route.as_ref().map(|r| r.source.as_str()).unwrap_or("no number"),
        "incoming call"
    );
    let flow = match route.as_ref().map(|r| &r.target) {
        Some(Target::Flow(f)) => f.clone(),
        Some(Target::Reject(status)) => {
            metrics::counter!("calls_total", "outcome" => "not_found").increment(1);
            let _ = core.reject(inc.call, *status, now);
            return None;
        }
        None => {
            metrics::counter!("calls_total", "outcome" => "not_found").increment(1);
            let _ = core.reject(inc.call, 404, now);
            return None;
        }
    };
    let Some(port) = ports.allocate() else {
        tracing::warn!("RTP port range exhausted");
        metrics::counter!("calls_total", "outcome" => "no_ports").increment(1);
        let _ = core.reject(inc.call, 503, now);
        return None;
    };
    let ip = rtp_advertise.unwrap_or(inc.peer.local.ip());
    let local = LocalMedia {
        rtp: SocketAddr::new(ip, port.port),
        codecs: codecs.to_vec(),
        session_id: fastrand::u64(1..1 << 40),
        session_version: 1,
    };
    let (masked, pseudonym, anonymous) = accounting
        .as_deref()
        .and_then(|a| a.caller_view(inc.call))
        .unwrap_or_else(|| match caller.and_then(crate::number::normalise) {
            Some(n) => (crate::privacy::mask_number(&n), String::new(), false),
            None => ("anonymous".into(), String::new(), true),
        });
    let route = route?;
    let info = crate::flow::port::CallInfo {
        masked,
        pseudonym,
        anonymous,
        toll_free: route.kind == crate::number::DialledKind::TollFree,
        dialled: route.dialled.clone(),
        trunk: String::new(),
        tenant: route.tenant.clone().unwrap_or_default(),
    };
    Some((flow, MediaSlot { port, local }, info))
}

/// One keypad digit, from whichever source; the call's flow consumes it.
fn digit_received(call: CallRef, digit: char, source: DigitSource) {
    metrics::counter!("dtmf_digits_total", "source" => source.label()).increment(1);
    // Digits may be a PIN: logged only at debug level.
    tracing::debug!(call = call.0, %digit, source = source.label(), "digit");
}

fn join_errors(errors: &[crate::file_text::FileError]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// What the CDRs keep of room events, all through the CDR journal (so an outage or a crash
/// loses none): member changes (joins and leaves are written by the flow path) on the
/// member's record; a room session in `room_sessions` (and its room in `rooms`); a room
/// recording in `recordings` (retention of the room's first member's record) and named on
/// every member's record.
fn room_event_to_cdr(e: &crate::room::RoomEvent, rooms: &Rooms, accounting: Option<&mut crate::call::Accounting>) {
    use crate::cdr::model::{JournalEntry, RecordingRow, RoomSessionRow};
    use crate::room::RoomEventKind as K;
    let Some(a) = accounting else { return };
    match &e.kind {
        K::SessionStarted { session } | K::SessionEnded { session, .. } => {
            let (ended_at, max_members) = match &e.kind {
                K::SessionEnded { peak_members, .. } => {
                    (Some(e.at), Some((*peak_members).min(i32::MAX as usize) as i32))
                }
                _ => (None, None),
            };
            let tenant = e.call.and_then(|c| a.record(CallRef(c))).and_then(|r| r.tenant.clone());
            a.journal(JournalEntry::RoomSession(RoomSessionRow {
                room: e.room.clone(),
                tenant,
                session: *session,
                // The end's entry repeats no start: the upsert keeps the first one's.
                started_at: e.at,
                ended_at,
                max_members,
            }));
        }
        K::Muted | K::Unmuted | K::Held | K::Resumed => {
            if let Some(call) = e.call {
                a.event(CallRef(call), e.name(), serde_json::json!({ "room": e.room }));
            }
        }
        K::Recording { id, file } | K::RecordingDone { id, file, .. } => {
            let room = rooms.get(&e.room);
            let members: Vec<u64> = room
                .as_ref()
                .map(|r| r.members.iter().map(|m| m.call).collect())
                .unwrap_or_default();
            let seconds = match &e.kind {
                K::RecordingDone { seconds, .. } => Some(*seconds),
                _ => None,
            };
            if seconds.is_none() {
                for &call in &members {
                    a.event(
                        CallRef(call),
                        "room_recording",
                        serde_json::json!({ "id": id, "room": e.room }),
                    );
                }
            }
            let first = members.first().and_then(|&c| a.record(CallRef(c)));
            let row = RecordingRow {
                id: *id,
                call_id: None,
                room: Some(e.room.clone()),
                room_session: room.map(|r| r.session),
                path: file.clone(),
                started_at: e.at,
                ended_at: seconds.map(|_| e.at),
                seconds,
                caller_pseudonym: None,
                retention_class: first
                    .map(|r| r.retention_class.clone())
                    .unwrap_or_else(|| "standard".into()),
                expires_at: first.and_then(|r| r.expires_at),
            };
            a.journal(JournalEntry::Recording(Box::new(row)));
        }
        _ => {}
    }
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
fn spawn_sighup_reload(tx: mpsc::Sender<crate::admin::api::ReloadRequest>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
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
