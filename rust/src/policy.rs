//! Batch policies: given what waits in a queue, dispatch now (and how many
//! rows), or wait.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::model::{BatchingConfig, ModelSpec, PolicyKind};

/// What a policy sees of the queue when an instance is free.
#[derive(Debug, Clone, Copy)]
pub struct QueueView {
    pub now: Instant,
    /// Rows waiting, all priorities together (at least one request waits).
    pub queued_rows: usize,
    /// Arrival of the longest-waiting request at the front of a lane.
    pub oldest_arrival: Instant,
    /// The earliest deadline in the queue, if any request has one.
    pub earliest_deadline: Option<Instant>,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Form a batch of at most `max_rows` rows now.
    Dispatch { max_rows: usize },
    /// Form nothing before `until` unless new requests arrive first.
    Wait { until: Instant },
}

/// Decides when a free instance takes a batch, and how large.
pub trait Policy: Send + Sync + Debug {
    /// Called when an instance is free and the queue is not empty.
    fn decide(&self, view: &QueueView) -> Decision;

    /// Feedback: a batch of `rows` took `compute` to execute.
    fn observe(&self, _rows: usize, _compute: Duration) {}
}

/// Builds the policy a model's configuration names.
pub fn for_model(spec: &ModelSpec) -> Box<dyn Policy> {
    match spec.batching.policy {
        PolicyKind::Static => Box::new(StaticPolicy::new(spec.batch_limit(), &spec.batching)),
        // Until the cost model drives it, the adaptive policy dispatches what
        // is queued as soon as an instance is free: work-conserving, so the
        // batch size follows the load, and it never waits past a deadline.
        PolicyKind::Adaptive => Box::new(StaticPolicy::new(
            spec.batch_limit(),
            &BatchingConfig {
                max_queue_delay: Duration::ZERO,
                preferred_batch_sizes: Vec::new(),
                ..spec.batching.clone()
            },
        )),
    }
}

/// Triton's dynamic batcher: dispatch the largest batch when `max_batch_size`
/// rows wait, else the largest preferred size that can be formed, else
/// whatever waits once the oldest request has waited `max_queue_delay`.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    max_batch_size: usize,
    max_queue_delay: Duration,
    /// Ascending.
    preferred: Vec<usize>,
}

impl StaticPolicy {
    /// A static policy for batches of at most `max_batch_size` rows.
    pub fn new(max_batch_size: usize, config: &BatchingConfig) -> Self {
        let mut preferred = config.preferred_batch_sizes.clone();
        preferred.sort_unstable();
        Self {
            max_batch_size: max_batch_size.max(1),
            max_queue_delay: config.max_queue_delay,
            preferred,
        }
    }
}

impl Policy for StaticPolicy {
    fn decide(&self, view: &QueueView) -> Decision {
        if view.queued_rows >= self.max_batch_size {
            return Decision::Dispatch {
                max_rows: self.max_batch_size,
            };
        }
        if let Some(&size) = self
            .preferred
            .iter()
            .rev()
            .find(|&&p| p <= view.queued_rows)
        {
            return Decision::Dispatch { max_rows: size };
        }
        let due = view.oldest_arrival + self.max_queue_delay;
        // Waiting past a deadline in the queue would only turn it into a drop.
        let due = view.earliest_deadline.map_or(due, |d| due.min(d));
        if view.now >= due {
            Decision::Dispatch {
                max_rows: self.max_batch_size,
            }
        } else {
            Decision::Wait { until: due }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(delay_us: u64, preferred: &[usize]) -> StaticPolicy {
        StaticPolicy::new(
            8,
            &BatchingConfig {
                max_queue_delay: Duration::from_micros(delay_us),
                preferred_batch_sizes: preferred.to_vec(),
                ..BatchingConfig::default()
            },
        )
    }

    fn view(rows: usize, waited_us: u64) -> QueueView {
        let now = Instant::now() + Duration::from_secs(1);
        QueueView {
            now,
            queued_rows: rows,
            oldest_arrival: now - Duration::from_micros(waited_us),
            earliest_deadline: None,
        }
    }

    #[test]
    fn zero_delay_dispatches_whatever_waits() {
        assert_eq!(
            policy(0, &[]).decide(&view(1, 0)),
            Decision::Dispatch { max_rows: 8 }
        );
    }

    #[test]
    fn full_batch_dispatches_at_once() {
        let p = policy(10_000, &[]);
        assert_eq!(p.decide(&view(8, 0)), Decision::Dispatch { max_rows: 8 });
        assert_eq!(p.decide(&view(20, 0)), Decision::Dispatch { max_rows: 8 });
    }

    #[test]
    fn waits_for_the_delay_then_dispatches() {
        let p = policy(1_000, &[]);
        let v = view(3, 400);
        assert_eq!(
            p.decide(&v),
            Decision::Wait {
                until: v.oldest_arrival + Duration::from_micros(1_000)
            }
        );
        assert_eq!(
            p.decide(&view(3, 1_000)),
            Decision::Dispatch { max_rows: 8 }
        );
    }

    #[test]
    fn largest_preferred_size_dispatches_without_waiting() {
        let p = policy(1_000_000, &[2, 4]);
        assert_eq!(p.decide(&view(5, 0)), Decision::Dispatch { max_rows: 4 });
        assert_eq!(p.decide(&view(3, 0)), Decision::Dispatch { max_rows: 2 });
        assert!(matches!(p.decide(&view(1, 0)), Decision::Wait { .. }));
    }

    #[test]
    fn never_waits_past_a_deadline() {
        let p = policy(1_000_000, &[]);
        let mut v = view(1, 0);
        v.earliest_deadline = Some(v.now + Duration::from_millis(2));
        assert_eq!(
            p.decide(&v),
            Decision::Wait {
                until: v.now + Duration::from_millis(2)
            }
        );
    }
}
