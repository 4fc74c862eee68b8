//! What a load run measured, and what it shows while it runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// A sample's code when the answer came back OK but not in the expected
/// form (missing output, wrong shape or size): not a gRPC code.
pub const MALFORMED: i32 = -1;

/// One answered request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Intended send time, from the start of the measured window.
    pub intended: Duration,
    /// From the intended send time to the answer.
    pub latency: Duration,
    /// Actual minus intended send time: the generator's own delay.
    pub send_lag: Duration,
    /// From the answer's last bytes reaching the generator's socket to the
    /// generator taking it: its own delay on the way back (at most; the
    /// stamp is that of the connection's latest read, which may be newer).
    pub receive_lag: Duration,
    /// gRPC status code: 0 OK, [`MALFORMED`] for an OK answer that failed the
    /// checks; a stream answer with an error message counts as 2, UNKNOWN.
    pub code: i32,
    /// Index of the request's traffic class.
    pub class: u16,
}

/// Everything measured in the window after warm-up.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Answers to requests intended inside the window, in completion order.
    pub samples: Vec<Sample>,
    /// Requests intended inside the window (what the schedule asked for).
    pub intended: u64,
    /// Requests intended inside the window that were sent, per class.
    pub sent: Vec<u64>,
    /// Requests actually sent while the window was open, whatever their
    /// intended time: over the window, the rate the generator achieved.
    pub sent_in_window: u64,
    /// Actual minus intended send time, per request sent in the window.
    pub send_lag: Vec<Duration>,
    /// Length of the measured window.
    pub window: Duration,
    /// Failures by gRPC status name (`UNAVAILABLE`, ...), inside the window.
    pub errors: BTreeMap<String, u64>,
    /// First error message seen per status name, to show the user.
    pub error_examples: BTreeMap<String, String>,
    /// Answers that came back OK but failed the checks (count, shape, size).
    pub malformed: u64,
    /// First reason an answer was malformed.
    pub malformed_example: Option<String>,
    /// Requests sent in the window that had no answer when the run gave up
    /// waiting (the drain time after the last send).
    pub unanswered: u64,
    /// Time-average of the requests in flight (sent, not yet answered) over
    /// the window, counted by the generator: the L of Little's law.
    pub mean_in_flight: f64,
    /// Whether the run was stopped before its end.
    pub stopped: bool,
}

/// The gRPC name of a status code, as the protocol spells it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        MALFORMED => "MALFORMED",
        _ => "UNKNOWN",
    }
}

/// Which part of the run is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Connecting,
    Warmup,
    Measuring,
    /// Every request is sent; waiting for the last answers.
    Draining,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Warmup => "warm-up",
            Self::Measuring => "measuring",
            Self::Draining => "draining",
            Self::Done => "done",
        }
    }
}

/// A look at a run in progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgressSnapshot {
    pub phase: Phase,
    /// Seconds since the load started (warm-up included).
    pub elapsed: f64,
    /// Requests sent and answered so far (warm-up included).
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    /// Answers per second over the last second or two.
    pub recent_rate: f64,
    /// P99 latency of the answers of the last second or two, in milliseconds
    /// (NaN before any).
    pub recent_p99_ms: f64,
}

/// Live counters the driver updates and a reader polls from another thread.
#[derive(Debug)]
pub struct Progress {
    inner: Mutex<Live>,
}

#[derive(Debug)]
struct Live {
    phase: Phase,
    started: Option<Instant>,
    sent: u64,
    answered: u64,
    errors: u64,
    /// Latencies (µs) of the answers since `current_start`, and of the
    /// interval before it; rotated every [`INTERVAL`].
    current: Histogram<u64>,
    previous: Histogram<u64>,
    current_start: Instant,
    previous_start: Instant,
}

/// How much recent history the live figures cover (one to two of these).
const INTERVAL: Duration = Duration::from_secs(1);

impl Default for Progress {
    fn default() -> Self {
        // Fixed bounds (1 µs to 10 min), so merging two can never fail.
        let histogram =
            || Histogram::new_with_bounds(1, 600_000_000, 3).expect("the bounds are valid");
        let now = Instant::now();
        Self {
            inner: Mutex::new(Live {
                phase: Phase::Connecting,
                started: None,
                sent: 0,
                answered: 0,
                errors: 0,
                current: histogram(),
                previous: histogram(),
                current_start: now,
                previous_start: now,
            }),
        }
    }
}

impl Progress {
    pub(super) fn set_phase(&self, phase: Phase) {
        let mut live = self.inner.lock();
        if phase == Phase::Warmup || (phase == Phase::Measuring && live.started.is_none()) {
            let now = Instant::now();
            live.started = Some(now);
            live.current_start = now;
            live.previous_start = now;
        }
        live.phase = phase;
    }

    pub(super) fn sent(&self) {
        self.inner.lock().sent += 1;
    }

    pub(super) fn answered(&self, latency: Duration, ok: bool) {
        let now = Instant::now();
        let mut live = self.inner.lock();
        live.answered += 1;
        if !ok {
            live.errors += 1;
        }
        if now.duration_since(live.current_start) >= INTERVAL {
            let live = &mut *live;
            std::mem::swap(&mut live.current, &mut live.previous);
            live.current.reset();
            live.previous_start = live.current_start;
            live.current_start = now;
        }
        if ok {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            live.current.saturating_record(micros.max(1));
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let live = self.inner.lock();
        let now = Instant::now();
        let mut recent = live.previous.clone();
        // Same bounds and precision: adding cannot fail.
        let _ = recent.add(&live.current);
        let span = now.duration_since(live.previous_start).as_secs_f64();
        ProgressSnapshot {
            phase: live.phase,
            elapsed: live
                .started
                .map_or(0.0, |s| now.duration_since(s).as_secs_f64()),
            sent: live.sent,
            answered: live.answered,
            errors: live.errors,
            recent_rate: if span > 0.0 {
                recent.len() as f64 / span
            } else {
                0.0
            },
            recent_p99_ms: if recent.is_empty() {
                f64::NAN
            } else {
                recent.value_at_quantile(0.99) as f64 / 1e3
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_the_protocol() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(tonic::Code::Unavailable as i32), "UNAVAILABLE");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted as i32),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(code_name(MALFORMED), "MALFORMED");
    }

    #[test]
    fn progress_reports_recent_p99() {
        let progress = Progress::default();
        progress.set_phase(Phase::Measuring);
        for i in 1..=1000u64 {
            progress.sent();
            progress.answered(Duration::from_micros(i * 10), true);
        }
        progress.answered(Duration::from_millis(1), false);
        let s = progress.snapshot();
        assert_eq!((s.sent, s.answered, s.errors), (1000, 1001, 1));
        // 99% of the latencies are at most 9.9 ms; hdrhistogram keeps 3 digits.
        assert!((s.recent_p99_ms - 9.9).abs() < 0.02, "{}", s.recent_p99_ms);
        assert!(s.recent_rate > 0.0);
    }
}
