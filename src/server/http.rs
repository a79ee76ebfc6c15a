//! `GET /health` (liveness) and `GET /ready` (readiness) on `SERVER_PORT`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::worker::WorkerStatus;

/// The router, separate from serving so it can be tested without a socket.
pub fn router(status: Arc<WorkerStatus>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(status)
}

async fn health(State(s): State<Arc<WorkerStatus>>) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::OK,
        Json(
            json!({"status": "ok", "in_flight": s.in_flight(), "uptime_seconds": s.uptime().as_secs()}),
        ),
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
