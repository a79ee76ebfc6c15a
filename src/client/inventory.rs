//! The inventory service over gRPC (tonic). One lazily connected channel, shared by all tasks:
//! start-up does not wait for the peer, and a broken connection is re-dialled per call.

use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use super::Inventory;
use super::classify::{self, Applied, CallError};
use crate::proto::reservation::v1::inventory_service_client::InventoryServiceClient;
use crate::proto::reservation::v1::{CommitReservationRequest, ReleaseHoldRequest};
use crate::telemetry::tracing::ClientSpan;

/// A tonic client of `reservation.v1.InventoryService` with a per-call deadline.
#[derive(Clone, Debug)]
pub struct GrpcInventory {
    client: InventoryServiceClient<Channel>,
    /// The same connection, for the circuit breaker's `grpc.health.v1` probe.
    health: HealthClient<Channel>,
    /// Per-call deadline, enforced here rather than by tonic's `Endpoint::timeout`: tonic
    /// reports its own timeout as CANCELLED, a terminal code, and a merely slow peer must be
    /// retried, not dead-lettered.
    timeout: Duration,
    /// The peer's host and port, for the calls' spans.
    server: (String, u16),
}

impl GrpcInventory {
    /// Builds the channel for `uri` (`http://host:port`, or `https://…` for TLS). Fails only
    /// on an unusable URI; the connection itself is made on first use.
    pub fn new(uri: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(uri.to_string())?
            // tonic adds its own name after this one, as the REST client's names the worker.
            .user_agent(concat!("reservation-worker/", env!("CARGO_PKG_VERSION")))?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if uri.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
        }
        let target = endpoint.uri();
        let tls = target.scheme_str() == Some("https");
        let server = (
            target.host().unwrap_or_default().to_string(),
            target.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        );
        let channel = endpoint.connect_lazy();
        Ok(GrpcInventory {
            client: InventoryServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            timeout,
            server,
        })
    }

    /// Runs one call under the deadline; running out of time is DEADLINE_EXCEEDED (retryable),
    /// and dropping the call cancels its stream at the peer. Callers pin the call and pass it
    /// by reference: tonic's call future is large, and each layer that took it by value copied it.
    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within the {} ms deadline",
                self.timeout.as_millis()
            ))),
        }
    }
}

#[async_trait]
impl Inventory for GrpcInventory {
    async fn release_hold(&self, req: ReleaseHoldRequest) -> Result<Applied, CallError> {
        let call = ClientSpan::grpc("ReleaseHold", (&self.server.0, self.server.1));
        let mut req = tonic::Request::new(req);
        call.inject_grpc(req.metadata_mut());
        let mut client = self.client.clone();
        let rpc = std::pin::pin!(client.release_hold(req));
        let result = self
            .within_deadline(rpc)
            .instrument(call.span().clone())
            .await;
        call.grpc_result(&result);
        match result {
            Ok(resp) => {
                let r = resp.into_inner();
                classify::release_status(r.status, r.error.as_ref())
            }
            Err(status) => classify::grpc_status(&status),
        }
    }

    async fn commit_reservation(
        &self,
        req: CommitReservationRequest,
    ) -> Result<Applied, CallError> {
        let call = ClientSpan::grpc("CommitReservation", (&self.server.0, self.server.1));
        let mut req = tonic::Request::new(req);
        call.inject_grpc(req.metadata_mut());
        let mut client = self.client.clone();
        let rpc = std::pin::pin!(client.commit_reservation(req));
        let result = self
            .within_deadline(rpc)
            .instrument(call.span().clone())
            .await;
        call.grpc_result(&result);
        match result {
            Ok(resp) => {
                let r = resp.into_inner();
                classify::commit_status(r.status, r.error.as_ref())
            }
            Err(status) => classify::grpc_status(&status),
        }
    }

    /// `grpc.health.v1.Health/Check` of the whole server, on the calls' connection.
    async fn probe(&self) -> Result<(), CallError> {
        let mut health = self.health.clone();
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match self.within_deadline(check).await {
            Ok(resp) => match resp.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(CallError::Retryable(format!(
                    "grpc.health.v1 reports {}",
                    other.as_str_name()
                ))),
            },
            Err(status) => classify::grpc_probe(&status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reservation_sim::{GrpcFault, HoldState, InventoryMethod, InventorySim, serve_inventory};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    /// An inventory simulator on a free port: the simulator, its address, its stop token and
    /// its server task.
    async fn inventory_sim() -> (
        InventorySim,
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let sim = InventorySim::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_inventory(listener, sim.clone(), stop.clone()));
        (sim, addr, stop, server)
    }

    /// Found by the chaos soak: a peer slower than `INVENTORY_TIMEOUT_MS` must be retried. Tonic
    /// reports its own client timeout as CANCELLED, which the classification calls terminal, so
    /// a merely slow inventory service used to send valid events to the DLQ.
    #[tokio::test]
    async fn a_call_past_the_deadline_is_retryable() {
        let (sim, addr, stop, server) = inventory_sim().await;
        sim.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Delay(Duration::from_millis(600)),
        );
        let client =
            GrpcInventory::new(&format!("http://{addr}"), Duration::from_millis(150)).unwrap();
        let req = ReleaseHoldRequest {
            reservation_id: "r-slow".into(),
            event_id: "evt-1".into(),
            seat_ids: vec!["A-1".into()],
            quantity: 1,
            reason: "expired".into(),
            idempotency_key: "env-slow".into(),
        };
        let first = client.release_hold(req.clone()).await;
        assert!(
            matches!(&first, Err(CallError::Retryable(e)) if e.contains("DeadlineExceeded")),
            "{first:?}"
        );
        // The abandoned call was cancelled at the peer before it applied anything; the retry
        // does the work.
        assert_eq!(client.release_hold(req).await, Ok(Applied::Done));
        assert_eq!(sim.state_of("r-slow"), Some(HoldState::Released));
        stop.cancel();
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }

    /// The other side of the CANCELLED rule: a CANCELLED the peer sends over the wire is its
    /// verdict and stays terminal. Guards the rule's reliance on tonic leaving such a status
    /// without a source.
    #[tokio::test]
    async fn a_cancelled_sent_by_the_peer_is_terminal() {
        let (sim, addr, stop, server) = inventory_sim().await;
        sim.push_fault(
            InventoryMethod::ReleaseHold,
            GrpcFault::Status(tonic::Code::Cancelled),
        );
        let client = GrpcInventory::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
        let req = ReleaseHoldRequest {
            reservation_id: "r-cancelled".into(),
            event_id: "evt-1".into(),
            seat_ids: vec!["A-1".into()],
            quantity: 1,
            reason: "expired".into(),
            idempotency_key: "env-cancelled".into(),
        };
        let answer = client.release_hold(req).await;
        assert!(
            matches!(&answer, Err(CallError::Terminal { .. })),
            "{answer:?}"
        );
        stop.cancel();
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
}
