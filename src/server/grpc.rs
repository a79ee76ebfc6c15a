//! gRPC on `GRPC_DEBUG_PORT`: `grpc.health.v1.Health` mirroring readiness, server reflection
//! (v1 and v1alpha, since many clients still speak only v1alpha) and `WorkerDebug`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::proto::reservation::worker::v1::worker_debug_server::{WorkerDebug, WorkerDebugServer};
use crate::proto::reservation::worker::v1::{GetStatusRequest, GetStatusResponse};
use crate::worker::WorkerStatus;

/// Why the gRPC port could not be served.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServerError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// `reservation.worker.v1.WorkerDebug`.
pub struct Debug {
    status: Arc<WorkerStatus>,
    queue_url: String,
}

#[tonic::async_trait]
impl WorkerDebug for Debug {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let s = &self.status;
        Ok(Response::new(GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: s.uptime().as_secs(),
            queue_url: self.queue_url.clone(),
            in_flight: s.in_flight() as u64,
            ready: s.is_ready(),
            draining: s.is_draining(),
        }))
    }
}

/// Reflection over what this port serves, identical in both versions. The inventory contract
/// is compiled into the same descriptor set but not served here, so it is not listed.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .with_service_name("reservation.worker.v1.WorkerDebug")
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    status: Arc<WorkerStatus>,
    queue_url: String,
    stop: CancellationToken,
) -> Result<(), GrpcServerError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut ready = status.watch_ready();
    let follow = {
        let reporter = reporter.clone();
        let stop = stop.clone();
        async move {
            loop {
                let serving = if *ready.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status("", serving).await;
                reporter
                    .set_service_status("reservation.worker.v1.WorkerDebug", serving)
                    .await;
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    tokio::spawn(follow);
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(WorkerDebugServer::new(Debug { status, queue_url }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            stop.cancelled().await
        })
        .await?;
    Ok(())
}
