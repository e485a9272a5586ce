//! Wire contracts of vigil, generated from `proto/vigil/**.proto`, and the
//! conversions between wire and domain types.
//!
//! Architecture invariant: code outside this crate handles domain types
//! (`vigil_domain`); a wire message becomes a domain value only through the
//! `TryFrom` impls in `convert`, whose errors name the offending field.

mod agent_session_wire;
mod agent_summary_wire;
mod audit_wire;
mod cluster_wire;
mod convert;
pub mod endpoint;
mod gpu_wire;
mod inventory_wire;
mod kserve_codec;
mod model_wire;
mod policy_summary_wire;
mod revocation_wire;
mod siem_wire;
mod unfreeze_wire;
mod workload_wire;

pub use convert::{sensor_mode_from_wire, severity_from_wire, signal_from_wire, WireError};
pub use inventory_wire::{inventory_kind_from_wire, inventory_kind_to_wire};
pub use model_wire::model_state_from_wire;
pub use siem_wire::{
    event_kind_from_wire, siem_event_to_wire, MAX_FILTER_VALUES, MAX_FILTER_VALUE_LEN,
};

pub mod types {
    pub mod v1 {
        tonic::include_proto!("vigil.types.v1");
    }
}
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("vigil.agent.v1");
    }
}
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("vigil.admin.v1");
    }
}
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("vigil.raft.v1");
    }
}
pub mod siem {
    pub mod v1 {
        tonic::include_proto!("vigil.siem.v1");
    }
}

/// The KServe v2 inference protocol (package `inference`, as Triton ships
/// it: `proto/kserve/`), served by `vigil-sidecar`. Not part of
/// [`FILE_DESCRIPTOR_SET`]. A request that does not decode is
/// `INVALID_ARGUMENT` (`kserve_codec.rs`).
pub mod kserve {
    tonic::include_proto!("inference");
}

/// The OpenTelemetry protocol's logs service (OTLP v1.10.0,
/// `proto/opentelemetry/`): `vigilctl siem otlp` pushes the SIEM export to
/// a collector with it. Not part of [`FILE_DESCRIPTOR_SET`].
pub mod otlp {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.common.v1");
        }
    }
    pub mod resource {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.resource.v1");
        }
    }
    pub mod logs {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.logs.v1");
        }
    }
    pub mod collector {
        pub mod logs {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.collector.logs.v1");
            }
        }
    }
}

/// Encoded `FileDescriptorSet` of every vigil proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_descriptor.bin"));
