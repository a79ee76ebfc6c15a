//! The two ports from the start: HTTP health and readiness, and gRPC health plus reflection
//! (v1 and v1alpha) and the debug service, asked with real gRPC clients.

mod support;

use reservation_worker::proto::reservation::worker::v1::GetStatusRequest;
use reservation_worker::proto::reservation::worker::v1::worker_debug_client::WorkerDebugClient;
use support::{Harness, WorkerProcess};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the gRPC debug port")
}

async fn health_status(port: u16) -> i32 {
    HealthClient::new(channel(port).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Check")
        .into_inner()
        .status
}

async fn list_services_v1(port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel(port).await)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection v1")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("response")
        .expect("one message");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(port: u16) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel(port).await)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("response")
        .expect("one message");
    match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn a_ready_worker_answers_on_both_ports() {
    let h = Harness::start().await;
    let w = h.worker(&[]).await;
    let (code, body) = w.get("/health").await.expect("health");
    assert_eq!(code, 200, "{body}");
    let (code, body) = w.get("/ready").await.expect("ready");
    assert_eq!((code, body.as_str()), (200, r#"{"ready":true}"#));

    let port = w.grpc_port().await;
    assert_eq!(health_status(port).await, ServingStatus::Serving as i32);
    for services in [
        list_services_v1(port).await,
        list_services_v1alpha(port).await,
    ] {
        let mut s = services.clone();
        s.sort();
        assert_eq!(
            s,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "reservation.worker.v1.WorkerDebug"
            ],
            "{services:?}"
        );
    }
    let status = WorkerDebugClient::new(channel(port).await)
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert_eq!(status.queue_url, h.queue.url);
    assert!(status.ready && !status.draining);
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_worker_that_cannot_reach_its_queue_is_alive_but_not_ready() {
    let h = Harness::start().await;
    let mut env = h.env();
    env.push((
        "SQS_QUEUE_URL".into(),
        format!("{}/123456789012/no-such-queue", h.moto.endpoint),
    ));
    let w = WorkerProcess::spawn(&env);
    support::eventually("queue failure logged", || {
        !w.logs_with_message("queue not reachable yet").is_empty()
    })
    .await;
    let (code, _) = w.get("/health").await.expect("health");
    assert_eq!(code, 200);
    let (code, body) = w.get("/ready").await.expect("ready");
    assert_eq!(code, 503);
    assert!(
        body.contains("the queue has not been reached yet"),
        "{body}"
    );
    assert_eq!(
        health_status(w.grpc_port().await).await,
        ServingStatus::NotServing as i32
    );
}
