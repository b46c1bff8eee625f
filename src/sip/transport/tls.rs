//! SIP over TLS (RFC 3261 §26.2.1; TLS 1.2 and 1.3 by rustls with the ring provider): the
//! TCP framing ([`super::tcp`]) over a TLS stream, with a handshake timeout, a cap on
//! connections per source address, and a certificate that can be replaced (SIGHUP) without
//! touching connections already up.
//!
//! With no `sip.tls.cert`/`sip.tls.key`, the first start writes a self-signed certificate for
//! `localhost`, `127.0.0.1` and `::1` to `data_dir/tls/` (key 0600), so TLS can be tried at
//! once; a real deployment names its own.

use super::{Inbound, ReceiveConfig, Transports};
use crate::sip::dialog::TransportKind;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Pem { path: PathBuf, error: String },
    #[error("the certificate and key do not go together: {0}")]
    Config(String),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
}

/// The certificate in use, replaceable while running.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl CertStore {
    /// Loads `cert` (PEM, the chain) and `key` (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let config = server_config(cert, key)?;
        Ok(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// The rustls configuration in use (the fuzz target drives it without sockets).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let pem = |path: &Path, error: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        error: error.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            error: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e))?;
    // ring, as chosen (no aws-lc build); rustls deprecates its default set only to point
    // at aws-lc's post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The certificate and key to use: the configured pair, or a self-signed pair in `dir`
/// (made on first use, kept afterwards).
pub fn cert_files(configured: Option<(&Path, &Path)>, dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    if let Some((c, k)) = configured {
        return Ok((c.to_path_buf(), k.to_path_buf()));
    }
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let io = |path: &Path, error: std::io::Error| TlsError::Io {
        path: path.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes()).map_err(|e| io(&key, e))?;
    std::fs::write(&cert, made.cert.pem()).map_err(|e| io(&cert, e))?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate for localhost, 127.0.0.1 and ::1");
    Ok((cert, key))
}

/// Writes a secret: created 0600, never wider.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// What a TLS listener enforces beyond TCP's settings.
#[derive(Debug, Clone, Copy)]
pub struct TlsLimits {
    pub handshake_timeout: Duration,
    pub per_address: usize,
}

/// Binds `addr` and spawns its accept loop. Returns the bound address.
pub async fn spawn_tls_listener(
    addr: SocketAddr,
    certs: Arc<CertStore>,
    transports: Arc<Transports>,
    inbound: mpsc::Sender<Inbound>,
    cfg: ReceiveConfig,
    limits: TlsLimits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(cfg.tcp_max_connections));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics::counter!("sip_tls_refused_total", "reason" => "max_connections").increment(1);
                continue;
            };
            let Some(slot) = AddressSlot::take(&per_address, remote.ip(), limits.per_address) else {
                metrics::counter!("sip_tls_refused_total", "reason" => "per_address").increment(1);
                tracing::warn!(target: "tolk::security", source = %remote.ip(), reason = "tls_per_address", "refused: too many TLS connections from one address");
                continue;
            };
            let acceptor = certs.acceptor();
            let transports = transports.clone();
            let inbound = inbound.clone();
            tokio::spawn(async move {
                let local_addr = stream
                    .local_addr()
                    .map(|a| SocketAddr::new(a.ip(), local.port()))
                    .unwrap_or(local);
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        metrics::counter!("sip_tls_handshakes_total", "outcome" => "ok").increment(1);
                        super::tcp::serve(tls, TransportKind::Tls, remote, local_addr, transports, inbound, cfg).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("sip_tls_handshakes_total", "outcome" => "failed").increment(1);
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("sip_tls_handshakes_total", "outcome" => "timeout").increment(1);
                        tracing::debug!(%remote, "TLS handshake timed out");
                    }
                }
                drop(slot);
                drop(permit);
            });
        }
    });
    Ok(local)
}

/// One of an address's connections, given back when dropped.
struct AddressSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}
