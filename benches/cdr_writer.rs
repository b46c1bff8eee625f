//! The CDR writer end to end: records handed to a [`CdrSink`] (one journal append each, as
//! calls do) and tailed by the real [`Writer::run`] loop (fdatasync, binary COPY, upsert) into
//! a local PostgreSQL. Not a criterion bench: what matters is sustained rows/s and the write
//! lag (record's last timestamp to commit), which criterion's per-iteration model cannot show.
//!
//! - `cargo bench --bench cdr_writer`: offered rates `RATES` (rows/s, default
//!   `1000 5000 20000`) for `DURATION` seconds each (default 10), then a replay of `REPLAY`
//!   spooled rows (default 200000) as after a database outage. Prints one line per scenario.
//! - `cargo test` runs it in smoke mode: 2,000 rows, checked present exactly once.
//!
//! The database is `tolk_bench_cdr` on `TOLK_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432`), dropped and created afresh.

use sqlx::{Connection, PgConnection};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tolk::cdr::db::DbTarget;
use tolk::cdr::journal::Journal;
use tolk::cdr::model::{CallRecord, CallerIdentity, Disposition, HangupBy, JournalEntry, Quality, now_micros};
use tolk::cdr::writer::{CdrSink, Writer, WriterConfig};
use tolk::number::DialledKind;

const DATABASE: &str = "tolk_bench_cdr";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A finished, answered call as the gateway writes it at the end (the biggest write).
fn record(n: u64) -> JournalEntry {
    let now = now_micros();
    JournalEntry::Call(Box::new(CallRecord {
        id: uuid::Uuid::now_v7(),
        revision: 3,
        node: "bench".into(),
        tenant: Some("demo".into()),
        trunk: Some("carrier-a".into()),
        direction: "inbound".into(),
        caller: CallerIdentity {
            pseudonym: Some(format!("{:064x}", n)),
            masked: Some("+1555010****".into()),
            number: None,
            anonymous: false,
        },
        dialled: "+18005550100".into(),
        dialled_kind: DialledKind::TollFree,
        sip_call_id: format!("{n}-bench@127.0.0.1"),
        started_at: now - 65_000_000,
        answered_at: Some(now - 60_000_000),
        ended_at: Some(now),
        disposition: Disposition::Answered,
        sip_status: Some(200),
        q850_cause: Some(16),
        hangup_by: Some(HangupBy::Caller),
        codec: Some("PCMU".into()),
        quality: Some(Quality {
            packets_received: 3000,
            packets_lost: 2,
            jitter_ms: 1.5,
            mos: Some(4.35),
            rtt_ms: Some(12.0),
        }),
        flow: Some("conference".into()),
        room: Some("demo".into()),
        room_session: None,
        role: Some("participant".into()),
        language: None,
        recording_id: None,
        consent: serde_json::json!({}),
        tags: serde_json::json!({"campaign": "bench"}),
        retention_class: "standard".into(),
        expires_at: Some(now + 395 * 86_400_000_000),
    }))
}

struct Scenario {
    name: String,
    rows: usize,
    seconds: f64,
    lags: Vec<f64>,
}

impl Scenario {
    fn print(&mut self) {
        self.lags.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            self.lags
                .get(((self.lags.len() as f64 * p) as usize).min(self.lags.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
                * 1e3
        };
        println!(
            "{:<28} rows {:>7}  {:>8.0} rows/s  lag p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            self.name,
            self.rows,
            self.rows as f64 / self.seconds,
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
}

/// Runs the writer over a fresh journal; `produce` feeds the sink; returns when `expect` rows
/// have been committed (or `give_up` passes).
async fn scenario(
    name: String,
    target: &DbTarget,
    expect: usize,
    preload: usize,
    rate: Option<u64>,
    give_up: Duration,
) -> Scenario {
    let dir = std::env::temp_dir().join(format!("tolk-bench-cdr-{}-{}", std::process::id(), now_micros()));
    let (journal, _) = Journal::open(&dir).expect("journal");
    let (sink, wake) = CdrSink::new(journal);
    for n in 0..preload {
        sink.write(record(n as u64));
    }
    let lags = Arc::new(Mutex::new(Vec::with_capacity(expect)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = Writer::new(target.clone(), &dir, WriterConfig::default());
    let seen = lags.clone();
    let started = Instant::now();
    let task = tokio::spawn(
        writer.run_observed(sink.clone(), wake, stop_rx, Duration::from_secs(5), move |out| {
            if let Ok(mut l) = seen.lock() {
                l.extend_from_slice(&out.lags);
            }
        }),
    );
    if let Some(rate) = rate {
        // Paced in 10 ms slices on absolute deadlines, as calls end spread over time.
        let per_slice = (rate / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = preload;
        while sent < expect {
            tick.tick().await;
            for _ in 0..per_slice.min((expect - sent) as u64) {
                sink.write(record(sent as u64));
                sent += 1;
            }
        }
    }
    let mut finished = started;
    while started.elapsed() < give_up {
        let done = lags.lock().map(|l| l.len()).unwrap_or(0);
        if done >= expect {
            finished = Instant::now();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let _ = task.await;
    std::fs::remove_dir_all(&dir).ok();
    let lags = std::mem::take(&mut *lags.lock().expect("lags"));
    Scenario {
        name,
        rows: lags.len(),
        seconds: finished.saturating_duration_since(started).as_secs_f64(),
        lags,
    }
}

async fn count_rows(url: &str) -> i64 {
    let mut c = PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(&mut c)
        .await
        .expect("count")
}

async fn truncate(url: &str) {
    let mut c = PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql("TRUNCATE calls, call_events")
        .execute(&mut c)
        .await
        .expect("truncate");
}

async fn main_async() {
    let bench = std::env::args().any(|a| a == "--bench");
    let base = env_or("TOLK_BENCH_PG", "postgres://postgres@127.0.0.1:5432");
    let mut admin = PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL for the CDR bench (TOLK_BENCH_PG)");
    for sql in [
        format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DATABASE}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("create the bench database");
    }
    let url = format!("{base}/{DATABASE}");
    let target = DbTarget::Url(url.clone());
    tolk::cdr::db::prepare(&target)
        .await
        .expect("migrate the bench database");

    if !bench {
        let mut s = scenario(
            "smoke".into(),
            &target,
            2000,
            1000,
            Some(20_000),
            Duration::from_secs(60),
        )
        .await;
        s.print();
        assert_eq!(s.rows, 2000, "every row committed");
        assert_eq!(count_rows(&url).await, 2000, "each row once");
        return;
    }

    let seconds: u64 = env_or("DURATION", "10").parse().expect("DURATION");
    for rate in env_or("RATES", "1000 5000 20000").split_whitespace() {
        let rate: u64 = rate.parse().expect("RATES");
        truncate(&url).await;
        let rows = (rate * seconds) as usize;
        let mut s = scenario(
            format!("offered {rate}/s for {seconds} s"),
            &target,
            rows,
            0,
            Some(rate),
            Duration::from_secs(seconds * 10 + 60),
        )
        .await;
        s.print();
        assert_eq!(count_rows(&url).await as usize, s.rows, "rows in the table");
    }
    let replay: usize = env_or("REPLAY", "200000").parse().expect("REPLAY");
    truncate(&url).await;
    let mut s = scenario(
        format!("replay of {replay} spooled"),
        &target,
        replay,
        replay,
        None,
        Duration::from_secs(600),
    )
    .await;
    s.print();
    assert_eq!(count_rows(&url).await as usize, s.rows, "rows in the table");
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(main_async());
}
