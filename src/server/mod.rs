//! The two ports operators reach: HTTP health and readiness ([`http`]), and gRPC health,
//! reflection and the debug service ([`grpc`]).

pub(crate) mod grpc;
pub(crate) mod http;
