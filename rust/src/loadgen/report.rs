//! What a load run measured.

use std::collections::BTreeMap;
use std::time::Duration;

/// One answered request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Intended send time, from the start of the measured window.
    pub intended: Duration,
    /// From the intended send time to the answer.
    pub latency: Duration,
    /// gRPC status code (0 is OK; a stream answer with an error message counts as 2, UNKNOWN).
    pub code: i32,
}

/// Everything measured in the window after warm-up.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Answers inside the window, in completion order.
    pub samples: Vec<Sample>,
    /// Requests whose intended send time fell inside the window.
    pub sent: u64,
    /// Actual minus intended send time, per request sent in the window.
    pub send_lag: Vec<Duration>,
    /// Length of the measured window.
    pub window: Duration,
    /// Failures by gRPC status name, inside the window.
    pub errors: BTreeMap<String, u64>,
    /// First error message seen per status name, to show the user.
    pub error_examples: BTreeMap<String, String>,
    /// Answers whose outputs did not match the expected count.
    pub malformed: u64,
}
