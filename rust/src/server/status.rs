//! The one place where core errors become gRPC statuses.

use tonic::{Code, Status};

use crate::error::CoreError;

/// The status a client sees for `error`.
pub fn to_status(error: &CoreError) -> Status {
    let code = match error {
        CoreError::ModelNotFound { .. } | CoreError::NotInRepository { .. } => Code::NotFound,
        CoreError::InvalidArgument(_) => Code::InvalidArgument,
        CoreError::ResourceExhausted(_) => Code::ResourceExhausted,
        // Retryable: a client or balancer can go to another replica.
        CoreError::QueueFull { .. }
        | CoreError::Overloaded { .. }
        | CoreError::Unavailable { .. } => Code::Unavailable,
        CoreError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        CoreError::Cancelled { .. } => Code::Cancelled,
        CoreError::Execution { .. } | CoreError::Internal(_) => Code::Internal,
        CoreError::Unimplemented(_) => Code::Unimplemented,
    };
    Status::new(code, error.to_string())
}

impl From<CoreError> for Status {
    fn from(error: CoreError) -> Self {
        to_status(&error)
    }
}

/// tonic refuses an oversized message with OUT_OF_RANGE; gRPC's own servers
/// (and so Triton) say RESOURCE_EXHAUSTED, which is what clients expect.
pub fn is_message_too_large(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

/// Rewrites tonic's oversized-message status on a trailers-only response.
pub fn remap_message_size<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_error_has_its_code() {
        let cases = [
            (
                CoreError::ModelNotFound {
                    name: "m".into(),
                    version: String::new(),
                },
                Code::NotFound,
            ),
            (CoreError::invalid("x"), Code::InvalidArgument),
            (
                CoreError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                CoreError::QueueFull {
                    model: "m".into(),
                    capacity: 1,
                },
                Code::Unavailable,
            ),
            (
                CoreError::DeadlineExceeded {
                    model: "m".into(),
                    waited: Duration::ZERO,
                },
                Code::DeadlineExceeded,
            ),
            (CoreError::Cancelled { model: "m".into() }, Code::Cancelled),
            (
                CoreError::Execution {
                    model: "m".into(),
                    batch_size: 1,
                    message: "boom".into(),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
        }
    }

    #[test]
    fn oversized_message_status_is_rewritten() {
        let response = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "Error,%20decoded%20message%20length%20too%20large",
            )
            .body(())
            .unwrap();
        assert_eq!(remap_message_size(response).headers()["grpc-status"], "8");
        let other = http::Response::builder()
            .header("grpc-status", "11")
            .body(())
            .unwrap();
        assert_eq!(remap_message_size(other).headers()["grpc-status"], "11");
    }
}
