//! Code generated from `proto/` by `build.rs`; the module tree mirrors the protobuf packages
//! so cross-package references (`common.v1.Seat`) resolve.

#![allow(clippy::all, missing_docs)]

/// `common.v1`: money, seats and the shared error model.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("common.v1");
    }
}

/// `reservation.v1` (the inventory contract) and `reservation.worker.v1` (our debug service).
pub mod reservation {
    pub mod v1 {
        tonic::include_proto!("reservation.v1");
    }
    pub mod worker {
        pub mod v1 {
            tonic::include_proto!("reservation.worker.v1");
        }
    }
}

/// Every compiled file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
