//! The two ports operators reach: HTTP health and readiness ([`http`]), and gRPC health,
//! reflection and the debug service ([`grpc`]).

pub mod grpc;
pub mod http;
