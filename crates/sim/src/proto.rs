//! Code generated from the worker's `proto/` by `build.rs`; the module tree mirrors the
//! protobuf packages so cross-package references (`common.v1.Seat`) resolve.

#![allow(clippy::all, missing_docs, unreachable_pub)]

/// `common.v1`: money, seats and the shared error model.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("common.v1");
    }
}

/// `reservation.v1`: the inventory contract.
pub mod reservation {
    pub mod v1 {
        tonic::include_proto!("reservation.v1");
    }
}
