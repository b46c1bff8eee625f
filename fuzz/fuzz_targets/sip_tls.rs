//! TLS framing: what a client sends to the SIP-over-TLS port, in arbitrary chunks, goes
//! through our server configuration (rustls, ring, the first-start certificate) and whatever
//! plaintext comes out through the SIP stream framer. Never a panic, never a loop, bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tolk::sip::msg::stream::{StreamFramer, StreamItem};
use tolk::sip::msg::{Framing, Limits, parse_message};
use tolk::sip::transport::tls::{CertStore, cert_files};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("tolk-fuzz-tls-{}", std::process::id()));
            let (cert, key) = cert_files(None, &dir).expect("a self-signed pair");
            CertStore::load(&cert, &key).expect("loads").server_config()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut conn) = rustls::ServerConnection::new(config()) else { return };
    let limits = Limits { max_message_bytes: 4096, max_header_bytes: 1024, ..Limits::default() };
    let mut framer = StreamFramer::new(limits);
    let chunk = (data.first().copied().unwrap_or(1) as usize).max(1);
    let mut plain = [0u8; 4096];
    for piece in data.chunks(chunk) {
        let mut rest = piece;
        let mut rounds = 0;
        while !rest.is_empty() {
            rounds += 1;
            assert!(rounds <= piece.len() + 1, "read_tls makes no progress");
            match conn.read_tls(&mut rest) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                // The alert we would send, then the connection is closed.
                let _ = conn.write_tls(&mut std::io::sink());
                return;
            }
            while let Ok(n) = std::io::Read::read(&mut conn.reader(), &mut plain) {
                if n == 0 {
                    break;
                }
                framer.push(&plain[..n]);
                while let Some(item) = framer.next_item() {
                    if let StreamItem::Message(m) = item {
                        let _ = parse_message(&m, Framing::Stream, &limits);
                    }
                }
            }
            while conn.wants_write() {
                if conn.write_tls(&mut std::io::sink()).is_err() {
                    return;
                }
            }
        }
    }
});
