//! The two ports from the start: HTTP health and readiness, and gRPC health plus reflection
//! (v1 and v1alpha) and the debug service, asked with real gRPC clients. Liveness: a receive
//! that never answers is timed out and counted while `/health` stays up; a poll loop that
//! dies fails `/health` at once.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reservation_worker::proto::reservation::worker::v1::GetStatusRequest;
use reservation_worker::proto::reservation::worker::v1::worker_debug_client::WorkerDebugClient;
use support::{Harness, WorkerProcess, bodies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
        format!("{}/123456789012/no-such-queue", h.sqs.endpoint()),
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

/// A TCP proxy in front of moto that can turn into a black hole: connections are accepted and
/// requests read, but nothing is forwarded or answered, like a half-dead network path.
struct Proxy {
    endpoint: String,
    black_hole: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let black_hole = Arc::new(AtomicBool::new(false));
        let hole = black_hole.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, hole.clone()));
                tokio::spawn(pipe(sr, cw, hole.clone()));
            }
        });
        Proxy {
            endpoint,
            black_hole,
        }
    }

    fn swallow(&self, on: bool) {
        self.black_hole.store(on, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    black_hole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !black_hole.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn metric(w: &WorkerProcess, series: &str) -> f64 {
    let (_, text) = w.get("/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing"))
}

#[tokio::test]
async fn a_black_holed_queue_is_timed_out_and_counted_while_health_stays_up() {
    let h = Harness::start().await;
    h.peers.hold("r-after");
    let proxy = Proxy::start(h.sqs.endpoint()).await;
    let mut env = h.env();
    // Short polls: each receive may take SQS_WAIT_TIME + 5 s = 5 s before it counts as failed.
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint.clone()));
    env.push(("SQS_WAIT_TIME".into(), "0".into()));
    let w = WorkerProcess::spawn(&env);
    w.wait_ready().await;
    assert_eq!(metric(&w, "sqs_poll_errors_total").await, 0.0);

    proxy.swallow(true);
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while metric(&w, "sqs_poll_errors_total").await < 1.0 {
        let (code, body) = w.get("/health").await.expect("health");
        assert_eq!(code, 200, "a receive that times out is not a wedge: {body}");
        assert!(body.contains(r#""status":"ok""#), "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unanswered receive was never given up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        w.logs_with_message("receive failed")
            .iter()
            .any(|l| l.to_string().contains("ReceiveMessage")),
        "the timeout is logged as a failed receive"
    );

    // The path heals: the loop was never stuck, so work flows again.
    proxy.swallow(false);
    h.queue.send(&bodies::expired("env-after", "r-after")).await;
    support::eventually("processed after the outage", || {
        h.peers
            .reservations
            .get("r-after")
            .is_some_and(|r| r.status == "EXPIRED")
    })
    .await;
    let (code, _) = w.get("/health").await.expect("health");
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_poll_loop_waiting_for_a_slot_keeps_beating_and_one_that_dies_fails_health() {
    use reservation_worker::Backoff;
    use reservation_worker::GrpcInventory;
    use reservation_worker::Peers;
    use reservation_worker::Poller;
    use reservation_worker::RestReservations;
    use reservation_worker::SqsQueue;
    use reservation_worker::WorkerStatus;
    use reservation_worker::{Pool, PoolSettings};
    use tokio_util::sync::CancellationToken;

    let h = Harness::start().await;
    let queue: Arc<dyn reservation_worker::Queue> = Arc::new(SqsQueue::new(
        &h.sqs.sdk_config().await,
        h.queue.url.clone(),
    ));
    let status = Arc::new(WorkerStatus::default());
    let peers = Peers::new(
        Arc::new(
            GrpcInventory::new(
                &format!("http://{}", h.peers.inventory_addr),
                Duration::from_secs(5),
            )
            .expect("inventory client"),
        ),
        Arc::new(
            RestReservations::new(
                &h.peers.reservation_base,
                None,
                Duration::from_secs(5),
                reservation_worker::config::Http2::Alpn,
            )
            .expect("reservation client"),
        ),
        reservation_worker::CircuitSettings::OFF,
        |_| {},
        CancellationToken::new(),
    );
    let (acks, _acks_rx) = tokio::sync::mpsc::channel(10);
    let pool = Pool::new(
        PoolSettings {
            concurrency: 1,
            max_retries: 1,
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(10),
            },
            redelivery_base: Duration::from_secs(30),
            redelivery_max: Duration::from_secs(60),
            visibility: Duration::from_secs(30),
            fifo: false,
            dedupe_capacity: 10,
            dedupe_ttl: Duration::from_secs(60),
        },
        queue.clone(),
        peers,
        acks,
        status.clone(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    // The only slot is taken: the loop can do nothing but wait for it.
    let _held = pool.reserve(1).await;
    let shutdown = CancellationToken::new();
    let poller = Poller {
        queue,
        pool,
        wait: Duration::from_secs(1),
        visibility: Duration::from_secs(30),
        status: status.clone(),
        batch: 10,
    };
    // Supervised exactly as the worker supervises it.
    let polling = tokio::spawn(status.clone().supervise(
        "poll loop",
        shutdown.clone(),
        poller.run(shutdown.clone()),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let health = format!("http://{}/health", listener.local_addr().expect("addr"));
    tokio::spawn(reservation_worker::serve_http(
        listener,
        status.clone(),
        CancellationToken::new(),
    ));
    let get = async || {
        let r = reqwest::get(&health).await.expect("GET /health");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    loop {
        let (code, body) = get().await;
        if body.contains(r#""status":"ok""#) {
            assert_eq!(code, 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never alive: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A 2 s limit instead of the 30 s one derived from a 1 s wait, so the wait below is short:
    // waiting for a slot is legitimate, so the loop must keep beating through it.
    status.set_beat_limit(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, body) = get().await;
    assert_eq!(code, 200, "waiting for a free slot is not a wedge: {body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");

    // The task ends the way a panic ends it: its future is dropped mid-poll.
    polling.abort();
    let _ = polling.await;
    let (code, body) = get().await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("poll loop stopped unexpectedly"), "{body}");
    assert!(body.contains(r#""status":"stopped""#), "{body}");
}
