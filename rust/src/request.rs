//! A validated inference request as the queue holds it, and its answer.

use std::time::Instant;

use bytes::Bytes;

use crate::handover::Handover;

/// Tensor data in the protocol's raw layout: little-endian, row-major, BYTES
/// elements each behind a 4-byte length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// A request checked against its model's signature.
#[derive(Debug)]
pub struct InferRequest {
    /// Echoed in the answer.
    pub id: String,
    /// One tensor per model input, in the model's input order.
    pub inputs: Vec<Tensor>,
    /// Indices of the outputs to return, ascending.
    pub outputs: Vec<usize>,
    /// Rows this request adds to a batch (its batch dimension; 1 when the
    /// model does not batch).
    pub rows: usize,
    /// Priority level, 1 (served first) to the model's `priority_levels`.
    pub priority: u32,
    /// The earliest of the client's deadline, its `timeout` and the model's objective.
    pub deadline: Option<Instant>,
    /// Whether `deadline` is the client's own (gRPC deadline or `timeout`)
    /// rather than the model's objective.
    pub client_deadline: bool,
    /// When the request arrived: for a gRPC call, when its bytes reached the
    /// server's socket. Its deadlines and its time in the server run from here.
    pub arrival: Instant,
}

impl InferRequest {
    /// Whether two requests can share a batch: every input has the same shape
    /// past the batch dimension.
    pub fn batches_with(&self, other: &InferRequest) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .all(|(a, b)| a.shape.get(1..) == b.shape.get(1..))
    }
}

/// The answer to one request: the requested outputs, by output index.
#[derive(Debug)]
pub struct InferResponse {
    pub outputs: Vec<(usize, Tensor)>,
    /// What is recorded of the request when the answer is let go (see
    /// `handover`); none until the worker hands the answer back.
    pub handover: Option<Handover>,
}
