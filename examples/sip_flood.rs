//! A SIP flood for `scripts/bench.sh flood`: INVITEs (and some scanner OPTIONS) from many
//! loopback source addresses at a set rate, for a set time, not waiting for answers. Prints
//! what it sent and how many responses came back (a banned source gets none).
//!
//!   cargo run --release --example sip_flood -- TARGET FIRST_SOURCE SOURCES RATE SECS
//!   e.g. 127.0.0.1:5099 127.0.1.1 200 2000 600
//!
//! Loopback only: every source must be in 127.0.0.0/8, and so must the target.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sip_flood TARGET FIRST_SOURCE SOURCES RATE SECS";
    let [target, first, sources, rate, secs] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let target: SocketAddr = target.parse().expect("TARGET is an address:port");
    let first: Ipv4Addr = first.parse().expect("FIRST_SOURCE is an IPv4 address");
    let sources: u32 = sources.parse().expect("SOURCES is a number");
    let rate: u64 = rate.parse().expect("RATE is requests per second");
    let secs: u64 = secs.parse().expect("SECS is a number");
    let loopback = |ip: Ipv4Addr| ip.octets()[0] == 127;
    assert!(loopback(first) && target.ip().is_loopback(), "loopback only");
    let sockets: Vec<UdpSocket> = (0..sources)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(first) + i);
            assert!(loopback(ip), "sources must stay in 127.0.0.0/8");
            let s = UdpSocket::bind((ip, 0)).expect("bind a source");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let (mut sent, mut answers, mut n) = (0u64, 0u64, 0u64);
    let mut next = start;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        let s = &sockets[(n % u64::from(sources)) as usize];
        let local = s.local_addr().expect("addr");
        // One request in fifty is a scanner's OPTIONS; the rest are INVITEs to a number.
        let msg = if n % 50 == 49 {
            format!(
                "OPTIONS sip:100@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKf{n}\r\n\
                 From: <sip:100@{local}>;tag={n}\r\nTo: <sip:100@{target}>\r\nCall-ID: flood-{n}\r\n\
                 CSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        } else {
            format!(
                "INVITE sip:+15550100300@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKf{n}\r\n\
                 From: <sip:+1555999{:04}@{local}>;tag={n}\r\nTo: <sip:+15550100300@{target}>\r\n\
                 Call-ID: flood-{n}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                n % 10_000
            )
        };
        if s.send_to(msg.as_bytes(), target).is_ok() {
            sent += 1;
        }
        n += 1;
        for s in sockets.iter().skip((n % u64::from(sources)) as usize).take(1) {
            while s.recv_from(&mut buf).is_ok() {
                answers += 1;
            }
        }
        next += gap;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    for s in &sockets {
        while s.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    println!(
        "sent {sent} requests from {sources} sources in {:.0} s; {answers} responses came back",
        start.elapsed().as_secs_f64()
    );
}
