//! [`UasCore`]: the sans-IO UAS core's state (transaction tables, calls, the timer queue)
//! and its driving surface (poll_transmit, poll_event, poll_timeout, handle_timeout).
//! Split by concern: [`txn`] transactions and timers, [`invite`] the INVITE server side,
//! [`in_dialog`] requests inside a dialog, [`refer`] transfer, [`body`] body helpers.

use super::call::{Call, CallRef, CallState, Pending2xx, PendingReliable, Resend, ResendStep};
use super::session_timer::{Negotiation, SessionTimer};
use super::{ACCEPT, ALLOW, CommandError, EndReason, IncomingCall, Peer, SUPPORTED, Transmit, UasConfig, UasEvent};
use crate::sip::msg::{HeaderLookup, Method, Name, Request, RequestUri, Response, new_tag, response_to};
use crate::sip::sdp::{self, Direction, LocalMedia, NegotiatedMedia, SessionDescription};
use crate::sip::trunk::{Admission, Gate, TrunkTable};
use crate::sip::txn::{
    ClientKey, InviteClientTxn, InviteServerTxn, MergeKey, NonInviteClientTxn, NonInviteServerTxn, ServerInviteState,
    ServerKey, Transaction, TxnEvent, TxnOutput,
};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

mod admit;
mod body;
mod in_dialog;
mod invite;
mod refer;
mod timers;
mod txn;

use body::*;

enum ServerTxn {
    Invite(InviteServerTxn),
    NonInvite(NonInviteServerTxn),
}

impl ServerTxn {
    fn as_txn(&mut self) -> &mut dyn Transaction {
        match self {
            ServerTxn::Invite(t) => t,
            ServerTxn::NonInvite(t) => t,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ServerTxn::Invite(t) => t.poll_timeout(),
            ServerTxn::NonInvite(t) => t.poll_timeout(),
        }
    }

    fn send_response(&mut self, code: u16, bytes: Bytes, now: Instant) -> TxnOutput {
        match self {
            ServerTxn::Invite(t) => t.send_response(code, bytes, now),
            ServerTxn::NonInvite(t) => t.send_response(code, bytes, now),
        }
    }
}

struct ServerEntry {
    txn: ServerTxn,
    peer: Peer,
    call: Option<CallRef>,
    merge: Option<MergeKey>,
    /// The To tag of our responses (RFC 2543 ACK matching compares it).
    to_tag: String,
}

enum ClientTxn {
    Invite(InviteClientTxn),
    NonInvite(NonInviteClientTxn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Bye,
    Refresh,
    /// A call transfer (RFC 3515).
    Refer,
}

struct ClientEntry {
    txn: ClientTxn,
    peer: Peer,
    call: CallRef,
    purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerTarget {
    Server(ServerKey),
    Client(ClientKey),
    Call(CallRef),
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreStats {
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub calls: usize,
    /// Pending timers: at most one per transaction and call.
    pub timers: usize,
}

/// The sans-IO UAS core. See the module docs for the driving loop.
pub struct UasCore {
    cfg: UasConfig,
    next_call: u64,
    /// Calls with a transfer (REFER) whose outcome is not known yet.
    referring: std::collections::HashSet<CallRef>,
    calls: HashMap<CallRef, Call>,
    dialogs: HashMap<(String, String), CallRef>,
    server: HashMap<ServerKey, ServerEntry>,
    merge: HashMap<MergeKey, ServerKey>,
    client: HashMap<ClientKey, ClientEntry>,
    timers: timers::TimerQueue<TimerTarget>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<UasEvent>,
    /// Calls whose TU was told they ended, kept until their BYE can go (RFC 3261 §15).
    hangup_after_ack: HashMap<CallRef, ()>,
    overloaded: bool,
    /// Tags and per-call seeds, from [`UasConfig::seed`] (sans-IO: no global generator).
    ids: fastrand::Rng,
    /// Who may call: trunks, digest challenges, per-trunk limits.
    gate: Gate,
}

impl UasCore {
    /// Files the INVITE server transaction `key` of call `cref` (an initial INVITE or a
    /// re-INVITE); its responses carry the dialog's To tag.
    fn insert_invite_txn(
        &mut self,
        key: &ServerKey,
        peer: Peer,
        cref: CallRef,
        merge: Option<MergeKey>,
        to_tag: String,
    ) {
        let txn = ServerTxn::Invite(InviteServerTxn::new(peer.transport.is_reliable(), self.cfg.timers));
        let entry = ServerEntry {
            txn,
            peer,
            call: Some(cref),
            merge,
            to_tag,
        };
        self.server.insert(key.clone(), entry);
    }

    /// A core that takes calls from any source, without trunks (tests of the SIP rules).
    pub fn new(cfg: UasConfig) -> Self {
        let gate = Gate::new(TrunkTable::open(), "tolk", cfg.seed);
        Self::with_gate(cfg, gate)
    }

    /// A core whose new requests pass `gate` (the gateway's trunks and `sip.allow_unknown`).
    pub fn with_gate(cfg: UasConfig, gate: Gate) -> Self {
        let cfg_seed = cfg.seed;
        UasCore {
            cfg,
            next_call: 1,
            referring: Default::default(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            server: HashMap::new(),
            merge: HashMap::new(),
            client: HashMap::new(),
            timers: timers::TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            hangup_after_ack: HashMap::new(),
            overloaded: false,
            ids: fastrand::Rng::with_seed(cfg_seed),
            gate,
        }
    }

    /// The admission gate (trunk limits in use, for gauges and tests).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn config(&self) -> &UasConfig {
        &self.cfg
    }

    /// Stop (or resume) accepting new calls: new INVITEs get 503 with Retry-After.
    pub fn set_refuse_new_calls(&mut self, refuse: bool) {
        self.cfg.refuse_new_calls = refuse;
    }

    /// Overload shedding: while set, new INVITEs get a fast 503 (the I/O shell sets it when
    /// its inbound queue backs up), so the calls already accepted keep their rate.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    pub fn stats(&self) -> CoreStats {
        CoreStats {
            server_transactions: self.server.len(),
            client_transactions: self.client.len(),
            calls: self.calls.len(),
            timers: self.timers.len(),
        }
    }

    /// Calls the core still tracks (for the drain on shutdown).
    pub fn call_refs(&self) -> Vec<CallRef> {
        self.calls.keys().copied().collect()
    }

    pub fn call_state(&self, call: CallRef) -> Option<CallState> {
        self.calls.get(&call).map(|c| c.state)
    }

    // ---------------------------------------------------------------- outputs

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<UasEvent> {
        self.events.pop_front()
    }

    /// The next instant [`Self::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn send(&mut self, peer: Peer, bytes: Bytes) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// `target`'s next wake-up (None: none), replacing the one it had.
    fn schedule(&mut self, target: TimerTarget, at: Option<Instant>) {
        self.timers.set(target, at);
    }

    // ---------------------------------------------------------------- timers

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(target) = self.timers.pop_due(now) {
            match target {
                TimerTarget::Server(key) => self.server_timeout(now, key),
                TimerTarget::Client(key) => self.client_timeout(now, key),
                TimerTarget::Call(call) => self.call_timeout(now, call),
            }
        }
    }
}
