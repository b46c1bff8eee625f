//! SIP over UDP (RFC 3261 §18.1.2, §18.2.1).

use super::{Inbound, LocalAddressBook, ReceiveConfig, Transports, classify};
use crate::sip::dialog::{Peer, TransportKind};
use crate::sip::msg::{SipMessage, parse_datagram};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Binds `addr` and spawns its receive loop. Returns the bound address.
pub async fn spawn_udp_listener(
    addr: SocketAddr,
    transports: Arc<Transports>,
    inbound: mpsc::Sender<Inbound>,
    cfg: ReceiveConfig,
) -> std::io::Result<SocketAddr> {
    let socket = Arc::new(UdpSocket::bind(addr).await?);
    let local = socket.local_addr()?;
    transports.add_udp(socket.clone(), local);
    tokio::spawn(async move {
        let mut book = LocalAddressBook::new(local);
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, source) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                // ICMP port unreachable from an earlier send, and the like.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            };
            transports.captured_in(TransportKind::Udp, source, book.local_for(source.ip()), &buf[..n]);
            let parsed = parse_datagram(&buf[..n], &cfg.limits);
            let sock = socket.clone();
            let Some(msg) = classify(parsed, source, |bytes, dest| {
                let _ = sock.try_send_to(&bytes, dest);
            }) else {
                continue;
            };
            let remote = match &msg {
                SipMessage::Request(r) => r.response_destination(source),
                SipMessage::Response(_) => source,
            };
            let peer = Peer {
                transport: TransportKind::Udp,
                remote,
                local: book.local_for(source.ip()),
                connection: None,
            };
            if inbound
                .send(Inbound {
                    msg,
                    peer,
                    received: std::time::Instant::now(),
                })
                .await
                .is_err()
            {
                break; // the core is gone: shutting down
            }
        }
    });
    Ok(local)
}
