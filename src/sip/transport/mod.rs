//! SIP transports (the I/O shell): UDP and TCP sockets on the configured addresses.
//!
//! Owns: sockets, connection tasks, framing of streams, the first answer to malformed input
//! (a 400 straight from the receive path, RFC 3261 §18.3), response routing (RFC 3261 §18.2.2,
//! RFC 3581), and knowing which local address a peer sees.
//!
//! Must not: keep SIP state. Everything parsed is handed to the core task as [`Inbound`].

pub mod hep;
mod tcp;
pub mod tls;
mod udp;

pub use tcp::spawn_tcp_listener;
pub use udp::spawn_udp_listener;

use crate::sip::dialog::{Peer, Transmit, TransportKind};
use crate::sip::msg::{Limits, ParseError, SipMessage};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A parsed message and where it came from.
#[derive(Debug)]
pub struct Inbound {
    pub msg: SipMessage,
    pub peer: Peer,
    /// When the transport read it (for measuring queueing delay, the overload signal).
    pub received: std::time::Instant,
}

/// The outbound side of every transport.
#[derive(Default)]
pub struct Transports {
    udp: Mutex<HashMap<(bool, u16), Arc<UdpSocket>>>,
    tcp: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    /// Where copies of every message go (`hep.destination`), when set.
    hep: std::sync::OnceLock<hep::HepSender>,
}

impl Transports {
    pub fn new() -> Arc<Self> {
        Arc::new(Transports::default())
    }

    fn add_udp(&self, socket: Arc<UdpSocket>, local: SocketAddr) {
        if let Ok(mut map) = self.udp.lock() {
            map.insert((local.is_ipv6(), local.port()), socket);
        }
    }

    fn add_tcp(&self, id: u64, tx: mpsc::Sender<Bytes>) {
        if let Ok(mut map) = self.tcp.lock() {
            map.insert(id, tx);
        }
    }

    fn remove_tcp(&self, id: u64) {
        if let Ok(mut map) = self.tcp.lock() {
            map.remove(&id);
        }
    }

    /// Sends a copy of every SIP message from now on to a Homer collector ([`hep`]).
    pub fn export_to(&self, sender: hep::HepSender) {
        let _ = self.hep.set(sender);
    }

    /// A message as it arrived (before parsing: a collector sees malformed ones too).
    pub(crate) fn captured_in(&self, transport: TransportKind, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if let Some(h) = self.hep.get() {
            h.capture(transport, from, to, bytes);
        }
    }

    /// Number of open TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Sends without waiting: a full socket buffer or a closed connection loses the message,
    /// which the transaction layer's retransmissions (or the peer's) recover.
    pub fn send(&self, t: Transmit) {
        if let Some(h) = self.hep.get() {
            h.capture(t.peer.transport, t.peer.local, t.peer.remote, &t.bytes);
        }
        match t.peer.transport {
            TransportKind::Udp => {
                let socket = self
                    .udp
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&(t.peer.remote.is_ipv6(), t.peer.local.port())).cloned());
                if let Some(s) = socket
                    && let Err(e) = s.try_send_to(&t.bytes, t.peer.remote)
                {
                    tracing::debug!(error = %e, "UDP send failed");
                }
            }
            TransportKind::Tcp | TransportKind::Tls => {
                let tx = t
                    .peer
                    .connection
                    .and_then(|id| self.tcp.lock().ok().and_then(|m| m.get(&id).cloned()));
                match tx {
                    Some(tx) => {
                        if tx.try_send(t.bytes).is_err() {
                            tracing::debug!("TCP connection busy or closed; message dropped");
                        }
                    }
                    None => tracing::debug!("TCP connection gone; message dropped"),
                }
            }
        }
    }
}

/// Shared settings of the receive paths.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveConfig {
    pub limits: Limits,
    pub tcp_idle: std::time::Duration,
    pub tcp_max_connections: usize,
}

/// The local address a peer reaches us on: the bound address, or, for a wildcard bind, the
/// source address the kernel routes from toward that peer (found with a connected UDP
/// socket, which sends nothing).
pub(crate) struct LocalAddressBook {
    bound: SocketAddr,
    cache: HashMap<IpAddr, IpAddr>,
}

impl LocalAddressBook {
    pub fn new(bound: SocketAddr) -> Self {
        LocalAddressBook {
            bound,
            cache: HashMap::new(),
        }
    }

    pub fn local_for(&mut self, remote: IpAddr) -> SocketAddr {
        if !self.bound.ip().is_unspecified() {
            return self.bound;
        }
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        let ip = *self.cache.entry(remote).or_insert_with(|| {
            let any: SocketAddr = if remote.is_ipv6() {
                "[::]:0".parse()
            } else {
                "0.0.0.0:0".parse()
            }
            .unwrap_or(self.bound);
            std::net::UdpSocket::bind(any)
                .and_then(|s| {
                    s.connect(SocketAddr::new(remote, 9))?;
                    s.local_addr()
                })
                .map(|a| a.ip())
                .unwrap_or(remote)
        });
        SocketAddr::new(ip, self.bound.port())
    }
}

/// Handles a parse result common to both transports: a message is returned for the core;
/// a rejection is answered at once through `reply`; anything else is counted and dropped.
pub(crate) fn classify(
    result: Result<SipMessage, ParseError>,
    source: SocketAddr,
    reply: impl FnOnce(Bytes, SocketAddr),
) -> Option<SipMessage> {
    match result {
        Ok(SipMessage::Request(mut req)) => {
            req.stamp_received(source);
            Some(SipMessage::Request(req))
        }
        Ok(resp) => Some(resp),
        Err(ParseError::Reject(r)) => {
            metrics::counter!("sip_parse_errors_total", "reason" => r.detail).increment(1);
            tracing::debug!(status = r.status, reason = r.detail, %source, "malformed request rejected");
            let dest = r
                .top_via()
                .map(|v| crate::sip::msg::response_destination(&v, source))
                .unwrap_or(source);
            reply(r.response_bytes(source), dest);
            None
        }
        Err(ParseError::Drop(reason)) => {
            metrics::counter!("sip_parse_errors_total", "reason" => reason).increment(1);
            tracing::debug!(reason, %source, "unparseable message dropped");
            None
        }
    }
}
