//! An answer handed back: what the server records once the submitter lets
//! go of it, for a gRPC call once the answer is encoded for the wire.
//!
//! A batch ends before its answers leave. Where the network thread shares a
//! core with the batches, an answer waits for that thread to run, at times
//! longer than the batch took; counted at the batch's end, that wait would
//! be missing from the end-to-end time the statistics show and from what
//! admission learns about lateness, and the server would look punctual to
//! itself while its clients saw it late. So each answer carries a
//! [`Handover`], and the request's end-to-end time and its verdict are taken
//! when the answer is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feedback::Verdict;
use crate::stats::ModelStats;

/// What is recorded of a request answered with a result once its answer is
/// let go (dropped): its success and end-to-end time in the model's
/// statistics, and its verdict where it had a deadline.
#[derive(Debug)]
pub struct Handover {
    stats: Arc<ModelStats>,
    priority: u32,
    arrival: Instant,
    compute: Duration,
    verdict: Option<Verdict>,
}

impl Handover {
    /// The handover of an answer to a request of `priority` that arrived at
    /// `arrival` and took `compute` in its batch.
    pub fn new(
        stats: Arc<ModelStats>,
        priority: u32,
        arrival: Instant,
        compute: Duration,
        verdict: Option<Verdict>,
    ) -> Self {
        Self {
            stats,
            priority,
            arrival,
            compute,
            verdict,
        }
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        let now = Instant::now();
        self.stats
            .succeeded(self.priority, self.compute, now - self.arrival);
        if let Some(verdict) = self.verdict.take() {
            verdict.give(self.arrival, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::{Lateness, Settlement};

    #[test]
    fn the_end_to_end_time_runs_until_the_answer_is_let_go() {
        let stats = Arc::new(ModelStats::new(1));
        let lateness: Arc<[Lateness]> = vec![Lateness::default()].into();
        let arrival = Instant::now();
        let deadline = arrival + Duration::from_millis(20);
        let verdict = Verdict::new(Settlement::new(Arc::clone(&lateness), &[]), 0, deadline);
        let handover = Handover::new(
            Arc::clone(&stats),
            1,
            arrival,
            Duration::from_millis(1),
            Some(verdict),
        );
        assert_eq!(
            stats.snapshot().lanes[0].completed,
            0,
            "recorded before it was let go"
        );
        std::thread::sleep(Duration::from_millis(30));
        drop(handover);
        let lane = &stats.snapshot().lanes[0];
        assert_eq!(lane.completed, 1);
        assert!(lane.end_to_end.max_us >= 30_000, "{:?}", lane.end_to_end);
        assert!(
            lateness[0].reserve() > 0.0,
            "30 ms against a 20 ms deadline was not late"
        );
    }
}
