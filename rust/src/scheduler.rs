//! Joins a model's queue to its batch policy: consumers (the model's worker
//! threads) call [`Scheduler::next_batch`] to block until the policy says a
//! batch is due, then take it.

use std::time::{Duration, Instant};

use crate::policy::{Decision, Policy, QueueView};
use crate::queue::{DropReason, Job, Queue, Refused};

/// How long an idle consumer sleeps on the inbox before looking at the queue
/// again; wake-ups on arrival and on close do not depend on it.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// A model's queue and the policy that drains it.
#[derive(Debug)]
pub struct Scheduler<T> {
    queue: Queue<T>,
    policy: Box<dyn Policy>,
    max_rows: usize,
}

impl<T: Job> Scheduler<T> {
    /// A scheduler over `queue` that forms batches of at most `max_rows` rows.
    pub fn new(queue: Queue<T>, policy: Box<dyn Policy>, max_rows: usize) -> Self {
        Self {
            queue,
            policy,
            max_rows: max_rows.max(1),
        }
    }

    /// Admits `item` (lock-free), or hands it back.
    pub fn submit(&self, item: T) -> Result<(), Refused<T>> {
        self.queue.push(item)
    }

    /// Requests admitted and waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Stops admitting; `consumers` blocked consumers wake to drain the rest.
    pub fn close(&self, consumers: usize) {
        self.queue.close(consumers);
    }

    /// Feeds a batch's measured compute time to the policy.
    pub fn observe(&self, rows: usize, compute: Duration) {
        self.policy.observe(rows, compute);
    }

    /// Blocks until a batch is due and returns it; `None` once the queue is
    /// closed and empty. Requests that expire or are cancelled while queued
    /// go to `dropped` and are never dispatched.
    pub fn next_batch(&self, dropped: &mut impl FnMut(T, DropReason)) -> Option<Vec<T>> {
        let mut consumer = self.queue.consumer();
        loop {
            consumer.drain_inbox();
            let now = Instant::now();
            consumer.drop_stale_heads(now, dropped);
            if consumer.is_empty() {
                if self.queue.is_finished() {
                    return None;
                }
                consumer.wait_until(now + IDLE_TICK);
                continue;
            }
            let view = QueueView {
                now,
                queued_rows: consumer.rows(),
                oldest_arrival: consumer.heads().map(Job::arrival).min().unwrap_or(now),
                earliest_deadline: consumer.heads().filter_map(Job::deadline).min(),
            };
            let decision = if self.queue.is_closed() {
                // Draining: nothing more will arrive to fill a batch.
                Decision::Dispatch {
                    max_rows: self.max_rows,
                }
            } else {
                self.policy.decide(&view)
            };
            match decision {
                Decision::Dispatch { max_rows } => {
                    let batch = consumer.take(max_rows.clamp(1, self.max_rows), now, dropped);
                    if !batch.is_empty() {
                        return Some(batch);
                    }
                }
                Decision::Wait { until } => {
                    consumer.wait_until(until);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BatchingConfig;
    use crate::policy::StaticPolicy;
    use crate::queue::tests::TestJob;
    use std::sync::Arc;

    fn scheduler(max_rows: usize, delay: Duration) -> Scheduler<TestJob> {
        let config = BatchingConfig {
            max_queue_delay: delay,
            ..BatchingConfig::default()
        };
        Scheduler::new(
            Queue::new(1024, 2),
            Box::new(StaticPolicy::new(max_rows, &config)),
            max_rows,
        )
    }

    #[test]
    fn dispatches_queued_requests_up_to_the_limit() {
        let s = scheduler(4, Duration::ZERO);
        for id in 0..6 {
            s.submit(TestJob::new(id)).unwrap();
        }
        let mut drops = |_: TestJob, r: DropReason| panic!("drop {r:?}");
        assert_eq!(s.next_batch(&mut drops).unwrap().len(), 4);
        assert_eq!(s.next_batch(&mut drops).unwrap().len(), 2);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn waits_for_the_queue_delay_to_fill_a_batch() {
        let s = Arc::new(scheduler(8, Duration::from_millis(30)));
        s.submit(TestJob::new(0)).unwrap();
        let feeder = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                s.submit(TestJob::new(1)).unwrap();
            })
        };
        let batch = s.next_batch(&mut |_, _| {}).unwrap();
        feeder.join().unwrap();
        assert_eq!(
            batch.len(),
            2,
            "the delay should have let the second request join"
        );
    }

    #[test]
    fn close_drains_then_ends() {
        let s = scheduler(8, Duration::from_secs(10));
        s.submit(TestJob::new(0)).unwrap();
        s.close(1);
        assert_eq!(s.next_batch(&mut |_, _| {}).unwrap().len(), 1);
        assert!(s.next_batch(&mut |_, _| {}).is_none());
    }

    #[test]
    fn expired_requests_are_dropped_before_dispatch() {
        let s = scheduler(8, Duration::ZERO);
        s.submit(TestJob {
            deadline: Some(Instant::now()),
            ..TestJob::new(7)
        })
        .unwrap();
        s.submit(TestJob::new(8)).unwrap();
        let mut dropped = Vec::new();
        let batch = s
            .next_batch(&mut |j: TestJob, r| dropped.push((j.id, r)))
            .unwrap();
        assert_eq!(batch.iter().map(|j| j.id).collect::<Vec<_>>(), vec![8]);
        assert_eq!(dropped, vec![(7, DropReason::Expired)]);
    }
}
