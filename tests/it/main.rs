//! The integration tests, one binary: linking the AWS, tonic and OpenTelemetry graph once
//! instead of once per file. Each module is one area; `support` holds what they share
//! (moto, the peers, the worker process, the chaos harness).

mod support;

mod alerts;
mod backpressure;
mod chaos;
mod circuit;
mod cli;
mod config;
mod conformance;
mod corpus;
mod dead_letter;
mod debug;
mod duplicates;
mod logs;
mod metrics;
mod ops;
mod ordering;
mod parser_properties;
mod ports;
mod prometheus;
mod proxies;
mod receive_loops;
mod redaction;
mod retry;
mod runtime_threads;
mod secrets;
mod send;
mod settle;
mod shutdown;
mod sqs_sim;
mod traces;
mod visibility;
mod workflows;
