//! Wiring: sockets, the SIP core task, the admin listener, graceful shutdown.
//!
//! The SIP core ([`UasCore`]) is owned by one task; transports hand it parsed messages over
//! a channel and it hands back what to send. Routing of new calls lives here until the
//! flow engine's dialplan replaces it: the demo echo number is answered, others get 404.

use crate::call::{DigitSource, ECHO_NUMBER, LegHandle, LegReport, PortPool, spawn_leg};
use crate::config::Config;
use crate::privacy::mask_opt;
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

/// Runs the gateway until `shutdown` turns true (SIGTERM/SIGINT in `main`), then drains.
pub async fn run(
    cfg: Config,
    mut shutdown: watch::Receiver<bool>,
    bound_tx: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
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
        if cfg.sip.transports.iter().any(|t| t == "udp") {
            let a = spawn_udp_listener(addr, transports.clone(), in_tx.clone(), rcfg)
                .await
                .map_err(|e| anyhow::anyhow!("sip.listen: cannot bind UDP {addr}: {e}"))?;
            tracing::info!(addr = %a, "SIP listening on UDP");
            bound.sip_udp.push(a);
        }
        if cfg.sip.transports.iter().any(|t| t == "tcp") {
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
    let api = std::sync::Arc::new(crate::admin::api::ApiState {
        tokens: cfg.admin.tokens.clone(),
        cdr: cdr.as_ref().map(|c| crate::admin::api::CdrApi {
            pool: c.pool.clone(),
            key: c.policy.key.clone(),
            sink: c.sink.clone(),
            recordings_dir: cfg.data_dir.join("recordings"),
            erasure_action: cfg.cdr.erasure_action.clone(),
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
    let codecs: Vec<Codec> = cfg.rtp.codecs.iter().filter_map(|c| Codec::from_name(c)).collect();
    let mut core = UasCore::new(UasConfig {
        timers: TimerConfig {
            t1: Duration::from_millis(cfg.sip.t1_ms),
            ..TimerConfig::default()
        },
        session_expires_secs: cfg.sip.session_expires_secs,
        min_se_secs: cfg.sip.min_se_secs,
        // Each call holds an RTP/RTCP port pair: never admit more calls than pairs.
        max_calls: cfg.sip.max_calls.min(((last - first) / 2) as usize),
        ..UasConfig::default()
    });
    let (report_tx, mut report_rx) = mpsc::channel::<LegReport>(1024);
    let mut legs: HashMap<CallRef, LegHandle> = HashMap::new();
    let mut draining: Option<tokio::time::Instant> = None;
    let drain = Duration::from_secs(cfg.shutdown.drain_secs);
    let rtp_timeout = Duration::from_secs(cfg.rtp.timeout_secs);
    let overload_delay = Duration::from_millis(cfg.sip.overload_delay_ms);
    let prompts = match crate::media::prompt::PromptCatalog::load(&cfg.sounds_dir) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "no prompt catalog: prompts will not play (tones still do)");
            None
        }
    };
    let echo = EchoRoute {
        rtp_timeout,
        prompts,
        beep: cfg.dialplan.echo_beep,
        reports: report_tx.clone(),
    };
    let ring = Duration::from_millis(cfg.dialplan.echo_ring_ms);

    // Calls ringing before the built-in echo route answers them.
    let mut ringing: Vec<(tokio::time::Instant, PendingAnswer)> = Vec::new();

    loop {
        let next = core.poll_timeout().map(tokio::time::Instant::from_std);
        let mut sleep_until = next.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        if let Some(at) = ringing.iter().map(|(at, _)| *at).min() {
            sleep_until = sleep_until.min(at);
        }
        tokio::select! {
            inbound = in_rx.recv() => {
                let Some(first) = inbound else { break };
                let now = std::time::Instant::now();
                // Shed new calls while messages wait too long in the queue (fast 503s keep the
                // rate of the calls already accepted instead of letting every call time out).
                // Queueing delay, not queue length: a burst read in one go is not overload.
                core.set_overloaded(now.saturating_duration_since(first.received) > overload_delay);
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
            Some(report) = report_rx.recv() => match report {
                LegReport::TimedOut { call } => {
                    tracing::info!(call = call.0, "no RTP for {}s; hanging up", rtp_timeout.as_secs());
                    if let Some(a) = accounting.as_mut() { a.rtp_timed_out(call); }
                    let _ = core.hangup(call, std::time::Instant::now());
                }
                LegReport::Digit { call, digit, source } => digit_received(call, digit, source),
                LegReport::PlaybackDone { call, what, ok } => {
                    tracing::debug!(call = call.0, what, ok, "playback done");
                }
                // Digits may be a PIN or a number: only their count is logged.
                LegReport::DigitsSent { call, digits } => {
                    tracing::debug!(call = call.0, count = digits.len(), "digits sent");
                }
                LegReport::RecordingDone { call, path, seconds, error } => match error {
                    None => tracing::info!(call = call.0, path = %path.display(), seconds = format!("{seconds:.1}"), "recording finished"),
                    Some(e) => tracing::warn!(call = call.0, path = %path.display(), error = e, "recording failed"),
                },
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
        let due = tokio::time::Instant::now();
        let mut i = 0;
        while i < ringing.len() {
            if ringing[i].0 <= due {
                let (_, pending) = ringing.swap_remove(i);
                echo.answer(&mut core, pending, &mut legs, accounting.as_mut(), now);
            } else {
                i += 1;
            }
        }
        while let Some(event) = core.poll_event() {
            match event {
                UasEvent::Incoming(inc) => {
                    if let Some(pending) = route_incoming(
                        &mut core,
                        *inc,
                        &ports,
                        rtp_advertise,
                        &codecs,
                        accounting.as_mut(),
                        now,
                    ) {
                        if ring.is_zero() {
                            echo.answer(&mut core, pending, &mut legs, accounting.as_mut(), now);
                        } else {
                            let _ = core.ring(pending.call, now);
                            if let Some(a) = accounting.as_mut() {
                                a.ringing(pending.call);
                            }
                            ringing.push((tokio::time::Instant::now() + ring, pending));
                        }
                    }
                }
                UasEvent::MediaChanged { call, media } => {
                    if let Some(leg) = legs.get(&call) {
                        tracing::info!(call = call.0, hold = media.on_hold(), "media changed");
                        let _ = leg.media.send(Some(media));
                    }
                }
                UasEvent::InfoDtmf { call, digit, .. } => digit_received(call, digit, DigitSource::SipInfo),
                UasEvent::Ended { call, reason } => {
                    tracing::info!(call = call.0, ?reason, "call ended");
                    let had_leg = legs.remove(&call).is_some();
                    if let Some(a) = accounting.as_mut() {
                        a.ended(call, reason, had_leg, crate::cdr::model::now_micros());
                    }
                    ringing.retain(|(_, p)| p.call != call);
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            transports.send(t);
        }
        if let Some(a) = accounting.as_mut() {
            a.flush_overdue(crate::cdr::model::now_micros());
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

/// A call the built-in route will answer with an echo leg.
struct PendingAnswer {
    call: CallRef,
    port: crate::call::RtpPort,
    local: LocalMedia,
}

/// The built-in route (until the flow engine's dialplan): the echo number is answered with
/// an echo leg; every other number gets 404.
fn route_incoming(
    core: &mut UasCore,
    inc: IncomingCall,
    ports: &Arc<PortPool>,
    rtp_advertise: Option<IpAddr>,
    codecs: &[Codec],
    accounting: Option<&mut crate::call::Accounting>,
    now: std::time::Instant,
) -> Option<PendingAnswer> {
    let dialled = inc.dialled.as_deref().and_then(crate::sip::number::normalise);
    if let Some(a) = accounting {
        a.offered(&inc, dialled.as_deref(), crate::cdr::model::now_micros());
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
        "incoming call"
    );
    if dialled.as_deref() != Some(ECHO_NUMBER) {
        metrics::counter!("calls_total", "outcome" => "not_found").increment(1);
        let _ = core.reject(inc.call, 404, now);
        return None;
    }
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
    Some(PendingAnswer {
        call: inc.call,
        port,
        local,
    })
}

/// One keypad digit, from whichever source (the flow engine will consume these).
fn digit_received(call: CallRef, digit: char, source: DigitSource) {
    metrics::counter!("dtmf_digits_total", "source" => source.label()).increment(1);
    tracing::info!(call = call.0, %digit, source = source.label(), "digit");
}

/// What answering the echo number needs beyond the call itself.
struct EchoRoute {
    rtp_timeout: Duration,
    prompts: Option<Arc<crate::media::prompt::PromptCatalog>>,
    beep: bool,
    reports: mpsc::Sender<LegReport>,
}

impl EchoRoute {
    /// Answers a routed call and starts its leg (the echo consumer).
    fn answer(
        &self,
        core: &mut UasCore,
        pending: PendingAnswer,
        legs: &mut HashMap<CallRef, LegHandle>,
        accounting: Option<&mut crate::call::Accounting>,
        now: std::time::Instant,
    ) {
        match core.answer(pending.call, pending.local, now) {
            Ok(media) => {
                metrics::counter!("calls_total", "outcome" => "answered").increment(1);
                if let Some(a) = accounting {
                    let codec = media.as_ref().map(|m| m.codec.encoding_name());
                    a.answered(pending.call, codec, crate::cdr::model::now_micros());
                }
                let leg = spawn_leg(
                    pending.call,
                    pending.port,
                    media,
                    self.rtp_timeout,
                    self.prompts.clone(),
                    self.reports.clone(),
                );
                // The echo test starts with a beep, then the caller hears themself.
                if self.beep {
                    let _ = leg.commands.try_send(crate::call::leg::LegCommand::Tone("beep".into()));
                }
                legs.insert(pending.call, leg);
            }
            Err(e) => {
                metrics::counter!("calls_total", "outcome" => "not_acceptable").increment(1);
                tracing::info!(call = pending.call.0, error = %e, "call refused");
            }
        }
    }
}

/// Crash recovery of recordings (media::record): every WAV and Ogg file under `dir` is checked
/// at start-up; torn ones are repaired, foreign ones moved aside, and each case is logged.
pub fn recover_recordings(dir: &std::path::Path) {
    use crate::media::record::{RepairOutcome, repair, repair_ogg};
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
