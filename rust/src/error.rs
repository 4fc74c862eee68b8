//! The core's error type: every way a request can fail, with the context a
//! user needs to act on it. The server maps each variant to a gRPC status in
//! one place (`server::status`), the Python layer to an exception.

use std::time::Duration;

/// Why a request, a model operation or a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// No model (or no such version of it) is being served.
    #[error("model `{name}`{} is not served", version_suffix(.version))]
    ModelNotFound { name: String, version: String },
    /// The model repository has no model of that name.
    #[error("the model repository has no model `{name}`: {detail}")]
    NotInRepository { name: String, detail: String },
    /// The request does not match the model's signature or the protocol.
    #[error("{0}")]
    InvalidArgument(String),
    /// A message or tensor is larger than the configured limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The model's queue holds as many requests as it may: retry elsewhere or later.
    #[error("model `{model}` is overloaded: its queue is full ({capacity} requests waiting); retry later")]
    QueueFull { model: String, capacity: usize },
    /// The request would finish after its deadline behind what is queued:
    /// refused at once so the client can retry elsewhere.
    #[error("model `{model}` is overloaded: the request cannot be served within its deadline; retry later or elsewhere")]
    Overloaded { model: String },
    /// The model is shutting down or being replaced and takes no more requests.
    #[error("model `{model}` is not accepting requests: {reason}")]
    Unavailable { model: String, reason: String },
    /// The request's deadline passed, or could not be met, before it was computed.
    #[error("request to model `{model}` cannot meet its deadline (waited {waited:?} in the queue); it was not computed")]
    DeadlineExceeded { model: String, waited: Duration },
    /// The client went away before its request was computed.
    #[error("request to model `{model}` was cancelled by the client")]
    Cancelled { model: String },
    /// The model's executor failed on the batch that held this request.
    #[error("model `{model}` failed to execute a batch of {batch_size}: {message}")]
    Execution {
        model: String,
        batch_size: usize,
        message: String,
    },
    /// The operation is not supported by this server.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug or an unexpected state; the message is for the server's log.
    #[error("internal error: {0}")]
    Internal(String),
}

fn version_suffix(version: &str) -> String {
    if version.is_empty() {
        String::new()
    } else {
        format!(" (version `{version}`)")
    }
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}
