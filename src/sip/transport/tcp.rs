//! SIP over TCP (RFC 3261 §18.3): framing by Content-Length, resynchronisation on garbage,
//! CRLF keep-alives (RFC 5626 §3.5.1), a connection limit and an idle timeout.

use super::{Inbound, LocalAddressBook, ReceiveConfig, Transports, classify};
use crate::sip::dialog::{Peer, TransportKind};
use crate::sip::msg::stream::{StreamFramer, StreamItem};
use crate::sip::msg::{Framing, parse_message};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Binds `addr` and spawns its accept loop. Returns the bound address.
pub async fn spawn_tcp_listener(
    addr: SocketAddr,
    transports: Arc<Transports>,
    inbound: mpsc::Sender<Inbound>,
    cfg: ReceiveConfig,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(cfg.tcp_max_connections));
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "TCP connection limit reached; closing new connection");
                drop(stream);
                continue;
            };
            let transports = transports.clone();
            let inbound = inbound.clone();
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let local_addr = stream
                    .local_addr()
                    .map(|a| SocketAddr::new(a.ip(), local.port()))
                    .unwrap_or_else(|_| LocalAddressBook::new(local).local_for(remote.ip()));
                serve(stream, TransportKind::Tcp, remote, local_addr, transports, inbound, cfg).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

/// Serves one connection (TCP, or TLS once its handshake is done): messages framed by
/// Content-Length in, responses and requests to this peer out.
pub(super) async fn serve<S>(
    mut stream: S,
    transport: TransportKind,
    remote: SocketAddr,
    local: SocketAddr,
    transports: Arc<Transports>,
    inbound: mpsc::Sender<Inbound>,
    cfg: ReceiveConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    transports.add_tcp(id, tx);
    let peer = Peer {
        transport,
        remote,
        local,
        connection: Some(id),
    };
    let mut framer = StreamFramer::new(cfg.limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut garbage = 0usize;
    'conn: loop {
        tokio::select! {
            read = tokio::time::timeout(cfg.tcp_idle, stream.read(&mut buf)) => {
                let n = match read {
                    Err(_) => { tracing::debug!(%remote, "TCP connection idle; closing"); break; }
                    Ok(Err(_)) | Ok(Ok(0)) => break,
                    Ok(Ok(n)) => n,
                };
                framer.push(&buf[..n]);
                while let Some(item) = framer.next_item() {
                    match item {
                        StreamItem::Message(bytes) => {
                            transports.captured_in(transport, remote, local, &bytes);
                            let parsed = parse_message(&bytes, Framing::Stream, &cfg.limits);
                            let mut reply = None;
                            let msg = classify(parsed, remote, |b, _| reply = Some(b));
                            if let Some(r) = reply
                                && stream.write_all(&r).await.is_err() { break 'conn; }
                            if let Some(msg) = msg
                                && inbound.send(Inbound { msg, peer, received: std::time::Instant::now() }).await.is_err() { break 'conn; }
                        }
                        StreamItem::Ping => {
                            if stream.write_all(b"\r\n").await.is_err() { break 'conn; }
                        }
                        StreamItem::Garbage(n) => {
                            garbage += n;
                            metrics::counter!("sip_parse_errors_total", "reason" => "tcp garbage").increment(1);
                            // A peer that sends mostly garbage is cut off.
                            if garbage > 4 * cfg.limits.max_message_bytes {
                                tracing::info!(%remote, "closing TCP connection after repeated garbage");
                                break 'conn;
                            }
                        }
                    }
                }
            }
            out = rx.recv() => {
                match out {
                    Some(bytes) => if stream.write_all(&bytes).await.is_err() { break },
                    None => break,
                }
            }
        }
    }
    transports.remove_tcp(id);
}
