//! `GET /health` (liveness), `GET /ready` (readiness) and `GET /metrics` (Prometheus) on
//! `SERVER_PORT`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::WorkerStatus;
use crate::telemetry::metrics::{self, metrics};

/// The router, separate from serving so it can be tested without a socket.
pub(crate) fn router(status: Arc<WorkerStatus>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(prometheus))
        .with_state(status)
}

/// 200 while every receive loop beats and every long-lived part runs; 503 when restarting
/// the process is the fix (a wedged receive loop, a part that stopped).
async fn health(State(s): State<Arc<WorkerStatus>>) -> (StatusCode, Json<serde_json::Value>) {
    let liveness = s.liveness();
    let code = if liveness.is_alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": liveness.as_str(),
            "reason": liveness.reason(),
            "in_flight": s.in_flight(),
            "uptime_seconds": s.uptime().as_secs(),
        })),
    )
}

async fn ready(State(s): State<Arc<WorkerStatus>>) -> (StatusCode, Json<serde_json::Value>) {
    match s.not_ready_reason() {
        None => (StatusCode::OK, Json(json!({"ready": true}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        ),
    }
}

async fn prometheus(State(s): State<Arc<WorkerStatus>>) -> impl IntoResponse {
    // A scrape never counts an event whose log line is still kept back.
    crate::telemetry::write_pending_log_lines();
    metrics().health(s.liveness().as_str(), s.is_ready());
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics().encode(),
    )
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    status: Arc<WorkerStatus>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(status))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logging::{keep_back, one_test_at_a_time, pending_lines};

    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the lock only keeps other tests off the process's kept-back lines meanwhile"
    )]
    async fn a_scrape_first_writes_the_log_lines_kept_back() {
        let _one_at_a_time = one_test_at_a_time();
        keep_back("{\"msg\":\"scrape test: kept back\"}\n");
        assert!(pending_lines().contains("scrape test: kept back"));
        let _ = prometheus(State(Arc::new(WorkerStatus::default()))).await;
        assert!(
            !pending_lines().contains("scrape test: kept back"),
            "a scrape never counts an event whose line is still kept back"
        );
    }
}
