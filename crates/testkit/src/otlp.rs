//! An in-process OTLP trace receiver: the collector's gRPC `TraceService` and its HTTP
//! `POST /v1/traces` (protobuf bodies), both storing what they receive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// OTLP span kinds, as numbered in the protocol.
pub const KIND_CLIENT: i32 = 3;
pub const KIND_PRODUCER: i32 = 4;
pub const KIND_CONSUMER: i32 = 5;

/// One received span, flattened for assertions. Ids are lowercase hex; a root span's
/// parent is the empty string.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// Attribute values as text (numbers and booleans formatted).
    pub attributes: HashMap<String, String>,
    /// The resource of the batch the span came in.
    pub resource: HashMap<String, String>,
    /// The spans it links to, as (trace id, span id).
    pub links: Vec<(String, String)>,
    /// `grpc` or `http`: which endpoint received it.
    pub via: &'static str,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver; stopped on drop.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:port` of the gRPC service.
    pub grpc_endpoint: String,
    /// `http://127.0.0.1:port`, the base URL of the HTTP receiver (it serves `/v1/traces`).
    pub http_endpoint: String,
    received: Arc<Mutex<Vec<(&'static str, ExportTraceServiceRequest)>>>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Store(Arc<Mutex<Vec<(&'static str, ExportTraceServiceRequest)>>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .expect("store")
            .push(("grpc", request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();

        let grpc = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind otlp grpc");
        let grpc_endpoint = format!("http://{}", grpc.local_addr().expect("addr"));
        let service = TraceServiceServer::new(Store(received.clone()));
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc),
                    s.cancelled_owned(),
                )
                .await;
        });

        let http = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind otlp http");
        let http_endpoint = format!("http://{}", http.local_addr().expect("addr"));
        let store = Store(received.clone());
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let store = store.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            store.0.lock().expect("store").push(("http", req));
                            (
                                StatusCode::OK,
                                [(header::CONTENT_TYPE, "application/x-protobuf")],
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                                .into_response()
                        }
                        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    }
                }
            }),
        );
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, router)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });

        OtlpReceiver {
            grpc_endpoint,
            http_endpoint,
            received,
            stop,
        }
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for (via, req) in self.received.lock().expect("store").iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(ReceivedSpan {
                            name: s.name.clone(),
                            kind: s.kind,
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            attributes: attributes(&s.attributes),
                            resource: resource.clone(),
                            links: s
                                .links
                                .iter()
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
                            via,
                        });
                    }
                }
            }
        }
        out
    }

    /// Everything received, every string included (escaped as `Debug` writes it), for tests
    /// that grep all of it.
    pub fn all_text(&self) -> String {
        format!("{:?}", self.received.lock().expect("store"))
    }

    /// The spans named `name`.
    pub fn named(&self, name: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(AnyValueKind::IntValue(i)) => i.to_string(),
        Some(AnyValueKind::DoubleValue(d)) => d.to_string(),
        Some(AnyValueKind::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
