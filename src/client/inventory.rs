//! The inventory service over gRPC (tonic). One lazily connected channel, shared by all tasks:
//! start-up does not wait for the peer, and a broken connection is re-dialled per call.

use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
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
}

impl GrpcInventory {
    /// Builds the channel for `uri` (`http://host:port`, or `https://…` for TLS). Fails only
    /// on an unusable URI; the connection itself is made on first use.
    pub fn new(uri: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(uri.to_string())?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if uri.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
        }
        Ok(GrpcInventory {
            client: InventoryServiceClient::new(endpoint.connect_lazy()),
        })
    }
}

#[async_trait]
impl Inventory for GrpcInventory {
    async fn release_hold(&self, req: ReleaseHoldRequest) -> Result<Applied, CallError> {
        let call = ClientSpan::grpc("ReleaseHold");
        let mut req = tonic::Request::new(req);
        call.inject_grpc(req.metadata_mut());
        let result = self
            .client
            .clone()
            .release_hold(req)
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
        let call = ClientSpan::grpc("CommitReservation");
        let mut req = tonic::Request::new(req);
        call.inject_grpc(req.metadata_mut());
        let result = self
            .client
            .clone()
            .commit_reservation(req)
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
}
