//! Metrics: the `metrics` facade recorded by the Prometheus exporter, rendered at `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often histogram samples are folded into their summaries. Without upkeep the recorder
/// keeps every sample until `/metrics` is scraped, so a gateway nobody scrapes grows by each
/// call's samples (measured: part of the ~0.5 kB per call in `scripts/bench.sh flood`).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the global recorder once, starts its upkeep thread, and returns the handle that
/// renders it.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            let upkeep = handle.clone();
            // A plain thread: the recorder outlives any one runtime (tests start several).
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("sip_requests_received_total", "SIP requests received, by method");
    metrics::describe_counter!("sip_responses_sent_total", "SIP responses sent, by status code");
    metrics::describe_counter!("sip_responses_received_total", "SIP responses received, by status code");
    metrics::describe_counter!("sip_requests_sent_total", "SIP requests sent, by method");
    metrics::describe_counter!("sip_retransmissions_total", "SIP retransmissions sent, by kind");
    metrics::describe_counter!("sip_parse_errors_total", "SIP messages that failed to parse, by reason");
    metrics::describe_gauge!("sip_transactions_active", "SIP transactions in progress");
    metrics::describe_gauge!("sip_dialogs_active", "Calls (INVITE dialogs) in progress");
    metrics::describe_counter!("calls_total", "Calls offered, by outcome");
    metrics::describe_counter!("hep_packets_sent_total", "SIP message copies sent to the HEP collector");
    metrics::describe_counter!(
        "hep_send_errors_total",
        "SIP message copies that could not be sent to the HEP collector"
    );
    metrics::describe_counter!(
        "optout_registry_unavailable_calls_total",
        "Calls that started while the opt-out registry could not be read (not recorded, not contacted)"
    );
    metrics::describe_counter!(
        "sip_calls_refused_total",
        "New calls refused with 503, by reason (overload, draining)"
    );
    metrics::describe_counter!(
        "dtmf_digits_total",
        "Keypad digits received, by source (rfc4733, inband, sip_info)"
    );
}
