//! The one place that owns a call's life: it drives the SIP core ([`UasCore`]) with what the
//! transports received and what its timers say, routes each new call through the dialplan to
//! a flow, carries out the flow's requests ([`super::flow_call`]), hears the media legs' and
//! the mixer threads' reports ([`LegReport`]: digits, talk, playback, recordings, quality),
//! files room events the CDRs keep ([`ledger`]), accounts every call, and drains on shutdown.
//!
//! One task runs it (`run`); everything a call does passes through here, in order, so no lock
//! guards a call's state. The gateway (`crate::gateway`) only wires sockets, threads and
//! channels to it.
//!
//! Owns: the SIP core, the media legs by call, the per-call flow state, the accounting.
//! Must not: block (dialplan loading and flows run elsewhere), or parse or print SIP (the
//! transports do).

use super::accounting::Accounting;
use super::flow_call::{Ctx, FlowCalls, FlowMsg, LegSetup};
use super::leg::{DigitSource, LegHandle, LegReport};
use super::ports::PortPool;
use crate::config::trunk::SrtpPolicy;
use crate::dialplan::Dialplan;
use crate::flow::runner::Runner;
use crate::room::{RoomEvent, Rooms};
use crate::sip::dialog::{CallRef, UasCore, UasEvent};
use crate::sip::msg::SipMessage;
use crate::sip::sdp::Codec;
use crate::sip::transport::{Inbound, Transports};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

mod ledger;
mod routing;

/// How many queued SIP messages one wake-up takes before the core's output is sent.
const SIP_BATCH: usize = 64;
/// How many queued flow requests one wake-up takes (flows must not wait behind a SIP flood).
const FLOW_BATCH: usize = 256;

/// What the controller is built from; the gateway makes each part.
pub struct ControllerSetup {
    pub core: UasCore,
    /// Where the core's output goes.
    pub transports: Arc<Transports>,
    /// None when `cdr.enabled = false`.
    pub accounting: Option<Accounting>,
    pub rooms: Rooms,
    /// The dialplan in force; a reload replaces it (new calls route by the new plan).
    pub dialplan: watch::Receiver<Arc<Dialplan>>,
    pub runner: Runner,
    pub ports: Arc<PortPool>,
    /// The address put in SDP instead of the local one (`rtp.advertise`).
    pub rtp_advertise: Option<IpAddr>,
    pub codecs: Vec<Codec>,
    /// SRTP for calls whose trunk does not say (`sip.srtp`).
    pub srtp: SrtpPolicy,
    /// What media legs need; `reports` is the sender of [`Inputs::reports`].
    pub legs: LegSetup,
    /// Silence after which a call is hung up (`rtp.timeout_secs`), for the log line.
    pub rtp_timeout: Duration,
    /// Queueing delay above which new calls are shed with 503 (`sip.overload_delay_ms`).
    pub overload_delay: Duration,
    /// How long calls may go on after shutdown is asked (`shutdown.drain_secs`).
    pub drain: Duration,
}

/// The channels the controller listens on.
pub struct Inputs {
    /// Parsed SIP messages from every transport.
    pub sip: mpsc::Receiver<Inbound>,
    /// Reports of the media legs and of the mixer threads (room digits, talk, leaves).
    pub reports: mpsc::Receiver<LegReport>,
    /// Room events the CDRs keep (`Rooms::ledger`).
    pub room_ledger: mpsc::UnboundedReceiver<RoomEvent>,
    /// Turns true when the gateway is asked to stop.
    pub shutdown: watch::Receiver<bool>,
    /// The admin API's questions about live calls ([`live::CallQuery`]).
    pub queries: mpsc::Receiver<live::CallQuery>,
}

/// Owns the calls; see the module's face.
pub struct Controller {
    core: UasCore,
    transports: Arc<Transports>,
    legs: HashMap<CallRef, LegHandle>,
    accounting: Option<Accounting>,
    rooms: Rooms,
    flows: FlowCalls,
    dialplan: watch::Receiver<Arc<Dialplan>>,
    runner: Runner,
    flow_tx: mpsc::Sender<FlowMsg>,
    flow_rx: mpsc::Receiver<FlowMsg>,
    ports: Arc<PortPool>,
    rtp_advertise: Option<IpAddr>,
    codecs: Vec<Codec>,
    srtp: SrtpPolicy,
    rtp_timeout: Duration,
    overload_delay: Duration,
    /// How long the last flow request waited for this task (an overload signal).
    flow_lag: Duration,
    drain: Duration,
    /// When draining must end, once shutdown was asked.
    draining: Option<tokio::time::Instant>,
}

/// What the flow handlers act on, borrowed afresh for each event.
macro_rules! ctx {
    ($c:expr, $now:expr) => {
        Ctx {
            core: &mut $c.core,
            legs: &mut $c.legs,
            accounting: $c.accounting.as_mut(),
            rooms: &$c.rooms,
            now: $now,
        }
    };
}

mod live;
pub use live::CallQuery;

impl Controller {
    pub fn new(setup: ControllerSetup) -> Controller {
        let (flow_tx, flow_rx) = mpsc::channel::<FlowMsg>(4096);
        Controller {
            core: setup.core,
            transports: setup.transports,
            legs: HashMap::new(),
            accounting: setup.accounting,
            rooms: setup.rooms,
            flows: FlowCalls::new(setup.legs),
            dialplan: setup.dialplan,
            runner: setup.runner,
            flow_tx,
            flow_rx,
            ports: setup.ports,
            rtp_advertise: setup.rtp_advertise,
            codecs: setup.codecs,
            srtp: setup.srtp,
            rtp_timeout: setup.rtp_timeout,
            overload_delay: setup.overload_delay,
            flow_lag: Duration::ZERO,
            drain: setup.drain,
            draining: None,
        }
    }

    /// Runs until every call is over after shutdown was asked (or the drain time ran out and
    /// the rest were hung up), or until the transports close; then writes what the CDRs
    /// still hold.
    pub async fn run(mut self, mut inputs: Inputs) {
        loop {
            let mut sleep_until = self
                .core
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            if let Some(at) = self.flows.next_deadline() {
                sleep_until = sleep_until.min(tokio::time::Instant::from_std(at));
            }
            let draining = self.draining.is_some();
            tokio::select! {
                inbound = inputs.sip.recv() => {
                    let Some(first) = inbound else { break };
                    self.on_sip(first, &mut inputs.sip);
                }
                _ = tokio::time::sleep_until(sleep_until) => {
                    self.core.handle_timeout(Instant::now());
                }
                Some(first) = self.flow_rx.recv() => self.on_flow_requests(first),
                Some(report) = inputs.reports.recv() => self.on_leg_report(report),
                Some(e) = inputs.room_ledger.recv() => {
                    ledger::file_room_event(&e, &self.rooms, self.accounting.as_mut());
                }
                Some(q) = inputs.queries.recv() => self.on_query(q),
                changed = inputs.shutdown.changed(), if !draining => {
                    if changed.is_err() || *inputs.shutdown.borrow() {
                        self.start_draining();
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)), if draining => {}
            }
            if self.after_wake().await {
                break;
            }
        }
        self.finish(&mut inputs.reports).await;
    }

    /// SIP messages: the first and what else is queued (bounded), handled in one go.
    fn on_sip(&mut self, first: Inbound, rx: &mut mpsc::Receiver<Inbound>) {
        let now = Instant::now();
        // Shed new calls while messages wait too long in the queue (fast 503s keep the rate
        // of the calls already accepted instead of letting every call time out). Queueing
        // delay, not queue length: a burst read in one go is not overload. Flows waiting
        // for their calls count too: a gateway that keeps up with SIP but not with its
        // flows is overloaded as well.
        let queued = now.saturating_duration_since(first.received);
        self.core
            .set_overloaded(queued > self.overload_delay || self.flow_lag > self.overload_delay);
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(Inbound { msg, peer, .. }) = next.take() {
            match msg {
                SipMessage::Request(r) => self.core.handle_request(now, r, peer),
                SipMessage::Response(r) => self.core.handle_response(now, r, peer),
            }
            taken += 1;
            if taken < SIP_BATCH {
                next = rx.try_recv().ok();
            }
        }
    }

    /// Flow requests: the first and what else is queued (bounded).
    fn on_flow_requests(&mut self, first: FlowMsg) {
        let now = Instant::now();
        self.flow_lag = now.saturating_duration_since(first.sent_at());
        let mut ctx = ctx!(self, now);
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            self.flows.handle(msg, &mut ctx);
            taken += 1;
            if taken < FLOW_BATCH {
                next = self.flow_rx.try_recv().ok();
            }
        }
    }

    /// A media leg's or a mixer thread's report on a call.
    fn on_leg_report(&mut self, report: LegReport) {
        let now = Instant::now();
        match report {
            LegReport::TimedOut { call } => {
                tracing::info!(call = call.0, "no RTP for {}s; hanging up", self.rtp_timeout.as_secs());
                if let Some(a) = self.accounting.as_mut() {
                    a.rtp_timed_out(call);
                }
                let _ = self.core.hangup(call, now);
            }
            LegReport::Digit { call, digit, source } => self.digit(call, digit, source, now),
            LegReport::PlaybackDone { call, what, ok } => {
                tracing::debug!(call = call.0, what, ok, "playback done");
                self.flows.playback_done(call, &what, ok);
            }
            // Digits may be a PIN or a number: only their count is logged.
            LegReport::DigitsSent { call, digits } => {
                tracing::debug!(call = call.0, count = digits.len(), "digits sent");
            }
            LegReport::RecordingDone {
                call,
                path,
                seconds,
                error,
            } => {
                match &error {
                    None => {
                        tracing::info!(call = call.0, path = %path.display(), seconds = format!("{seconds:.1}"), "recording finished")
                    }
                    Some(e) => tracing::warn!(call = call.0, path = %path.display(), error = e, "recording failed"),
                }
                self.flows.recording_done(call, seconds, error);
            }
            LegReport::Talking { call, talking } => self.rooms.set_talking(call.0, talking),
            LegReport::LeftRoom { call } => {
                self.flows.left_room(call, &mut ctx!(self, now));
            }
            LegReport::RoomRefused { call } => {
                tracing::warn!(call = call.0, "the room's mixer thread refused the member (queue full)");
                self.flows.left_room(call, &mut ctx!(self, now));
            }
            LegReport::Summary { call, summary } => {
                if let Some(a) = self.accounting.as_mut() {
                    a.summary(call, &summary);
                }
                tracing::info!(
                    call = call.0,
                    received = summary.packets_received,
                    lost = summary.packets_lost,
                    jitter_ms = format!("{:.1}", summary.jitter_ms),
                    mos = format!("{:.2}", summary.mos),
                    foreign_packets = summary.foreign_packets,
                    rtcp_received = summary.rtcp_received,
                    rtt_ms = summary.rtt_ms.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                    srtp = summary.srtp,
                    srtp_rejected = summary.srtp_rejected.total(),
                    "media quality"
                );
                srtp_rejections(call, &summary.srtp_rejected);
            }
        }
    }

    /// One keypad digit, from whichever source (RTP events, in-band tones, the room's mixer
    /// thread, SIP INFO); the call's flow consumes it.
    fn digit(&mut self, call: CallRef, digit: char, source: DigitSource, now: Instant) {
        metrics::counter!("dtmf_digits_total", "source" => source.label()).increment(1);
        // Digits may be a PIN: logged only at debug level.
        tracing::debug!(call = call.0, %digit, source = source.label(), "digit");
        self.flows.digit(call, digit, &mut ctx!(self, now));
    }

    /// Shutdown was asked: new calls are refused, the ones up may finish within the drain.
    fn start_draining(&mut self) {
        tracing::info!(
            calls = self.core.stats().calls,
            drain_secs = self.drain.as_secs(),
            "shutting down: refusing new calls, draining"
        );
        self.core.set_refuse_new_calls(true);
        self.draining = Some(tokio::time::Instant::now() + self.drain);
    }

    /// After every wake-up: answers due flow requests, acts on the core's events, sends its
    /// output, writes overdue CDRs. True when the drain is over.
    async fn after_wake(&mut self) -> bool {
        let now = Instant::now();
        self.flows.poll(&mut ctx!(self, now));
        while let Some(event) = self.core.poll_event() {
            self.on_call_event(event, now);
        }
        self.transmit();
        if let Some(a) = self.accounting.as_mut() {
            a.flush_overdue(crate::clock::now_micros());
        }
        let stats = self.core.stats();
        metrics::gauge!("sip_transactions_active").set((stats.server_transactions + stats.client_transactions) as f64);
        metrics::gauge!("sip_dialogs_active").set(stats.calls as f64);
        let Some(deadline) = self.draining else {
            return false;
        };
        if stats.calls == 0 && stats.client_transactions == 0 {
            tracing::info!("drained; exiting");
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            for call in self.core.call_refs() {
                let _ = self.core.hangup(call, now);
            }
            self.transmit();
            // One grace period for the BYEs to go out and be answered.
            self.draining = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            if self.core.stats().calls == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return true;
            }
        }
        false
    }

    fn transmit(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            self.transports.send(t);
        }
    }

    /// What the SIP core says happened to a call.
    fn on_call_event(&mut self, event: UasEvent, now: Instant) {
        match event {
            UasEvent::Incoming(inc) => self.incoming(*inc, now),
            UasEvent::MediaChanged { call, media } => {
                if let Some(leg) = self.legs.get(&call) {
                    tracing::info!(call = call.0, hold = media.on_hold(), "media changed");
                    // A member on hold is neither heard in its room nor sent the mix.
                    if self
                        .rooms
                        .member(call.0)
                        .is_some_and(|(_, m)| m.held != media.on_hold())
                    {
                        self.rooms.set_held(call.0, media.on_hold());
                    }
                    let _ = leg.media.send(Some(media));
                }
            }
            UasEvent::InfoDtmf { call, digit, .. } => self.digit(call, digit, DigitSource::SipInfo, now),
            UasEvent::TransferResult { call, status } => {
                tracing::info!(call = call.0, status, "transfer result");
                self.flows.transfer_result(call, status);
            }
            UasEvent::Ended { call, reason } => {
                tracing::info!(call = call.0, ?reason, "call ended");
                self.flows.ended(call, &mut ctx!(self, now));
                let had_leg = self.legs.remove(&call).is_some();
                if let Some(a) = self.accounting.as_mut() {
                    a.ended(call, reason, had_leg, crate::clock::now_micros());
                }
            }
        }
    }

    /// The loop is over: the legs get a moment to report their summaries, then the CDRs
    /// still held are written.
    async fn finish(mut self, reports: &mut mpsc::Receiver<LegReport>) {
        let Some(a) = self.accounting.as_mut() else { return };
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while !a.is_empty() && tokio::time::Instant::now() < until {
            match tokio::time::timeout_at(until, reports.recv()).await {
                Ok(Some(LegReport::Summary { call, summary })) => a.summary(call, &summary),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        a.flush_all();
    }
}

/// SRTP/SRTCP packets a call's stream dropped (RFC 3711 §3.3 step 5), into
/// `srtp_packets_rejected_total{reason}`; forged packets (failed authentication, unknown
/// SSRCs past the bound) also into one `tolk::security` line per call. Replays alone are
/// not an event: the network duplicates packets.
fn srtp_rejections(call: CallRef, r: &crate::rtp::srtp::RejectCounts) {
    for (reason, n) in r.by_reason() {
        if n > 0 {
            metrics::counter!("srtp_packets_rejected_total", "reason" => reason.label()).increment(n);
        }
    }
    if r.authentication + r.stranger_ssrc > 0 {
        tracing::warn!(
            target: "tolk::security",
            call = call.0,
            failed_authentication = r.authentication,
            stranger_ssrc = r.stranger_ssrc,
            "srtp packets rejected"
        );
    }
}
