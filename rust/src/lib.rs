//! tidal's core: per-model queues with priorities and deadlines, batch
//! policies, batch assembly, worker threads and statistics (pure Rust,
//! tested on its own), the KServe v2 gRPC server that adapts the protocol to
//! it, and, behind the `python` feature, the thin PyO3 layer that is the
//! `tidal._core` extension module.

pub mod batch;
pub mod cost;
pub mod error;
pub mod feedback;
pub mod gate;
pub mod handover;
pub mod loadgen;
pub mod model;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod request;
pub mod scheduler;
pub mod served;
pub mod server;
pub mod stats;
pub mod tensor;
pub mod validate;
pub mod worker;

#[cfg(feature = "python")]
mod python;

pub use error::CoreError;
