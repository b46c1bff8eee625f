//! The echo leg: RTP in, the same audio out.

use super::ports::RtpPort;
use crate::sip::dialog::CallRef;
use crate::sip::sdp::{Direction, NegotiatedMedia};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The gateway's handle on an echo leg: media updates in; dropping it ends the leg.
pub struct EchoLeg {
    pub media: watch::Sender<Option<NegotiatedMedia>>,
}

/// Spawns the echo task. It sends `call` on `timed_out` when no RTP arrives for `timeout`.
pub fn spawn_echo(
    call: CallRef,
    port: RtpPort,
    media: Option<NegotiatedMedia>,
    timeout: Duration,
    timed_out: mpsc::Sender<CallRef>,
) -> EchoLeg {
    let (tx, mut rx) = watch::channel(media);
    tokio::spawn(async move {
        let ssrc: u32 = fastrand::u32(..);
        let mut buf = vec![0u8; 2048];
        let mut latched: Option<SocketAddr> = None;
        loop {
            let current = rx.borrow().clone();
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() { break; } // the call ended
                    // A new remote address (re-INVITE) re-opens latching.
                    latched = None;
                }
                got = tokio::time::timeout(timeout, port.socket.recv_from(&mut buf)) => {
                    let (n, from) = match got {
                        Err(_) => { let _ = timed_out.send(call).await; break; }
                        Ok(Err(_)) => continue,
                        Ok(Ok(x)) => x,
                    };
                    // RTP version 2, at least the fixed header (RFC 3550 §5.1).
                    if n < 12 || buf[0] >> 6 != 2 { continue; }
                    let Some(media) = current else { continue };
                    // Symmetric RTP: send to where the caller sends from (RFC 4961), once
                    // the first packet comes from the signalled address or none was given.
                    if latched.is_none() {
                        latched = Some(from);
                    }
                    if latched != Some(from) { continue; }
                    // On hold we receive but do not send (RFC 3264 §8.4).
                    if matches!(media.direction, Direction::RecvOnly | Direction::Inactive) { continue; }
                    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    let _ = port.socket.try_send_to(&buf[..n], from);
                }
            }
        }
        drop(port);
    });
    EchoLeg { media: tx }
}
