//! The admin HTTP listener: `/metrics` for Prometheus, `/healthz`, the `/api/v1`
//! CDR and privacy endpoints ([`api`]) and the web console under `/console/` ([`console`]).

pub mod api;
pub mod console;
pub mod control;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// The router for the admin listener.
pub fn router(
    metrics: Option<PrometheusHandle>,
    api: std::sync::Arc<api::ApiState>,
    capacity: console::Capacity,
) -> Router {
    let console = console::Console::new(api.clone(), metrics.clone(), capacity);
    api::routes(api)
        .merge(console::routes(console))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics {
                        Some(h) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
                            let mut text = h.render();
                            crate::room::scheduler::render_metrics(&mut text);
                            text
                        })
                            .into_response(),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "no such endpoint; try /console/, /metrics, /healthz or /api/v1/openapi.json\n",
            )
        })
}
