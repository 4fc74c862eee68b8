//! Joins a model's queue to its batch policy and its instances: submitters
//! call [`Scheduler::submit`] (lock-free, with admission control); the
//! model's worker threads call [`Scheduler::next_batch`] to block until the
//! policy says a batch is due, then take it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cost::CostModel;
use crate::feedback::{Lateness, Settlement};
use crate::policy::{AdmissionView, Decision, Policy, QueueView};
use crate::queue::{DropReason, Job, Queue, Refused};

/// How long an idle consumer sleeps on the inbox before looking at the queue
/// again; wake-ups on arrival and on close do not depend on it.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// Window over which the arrival rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// Why a submit was refused; the item comes back.
#[derive(Debug)]
pub enum Rejected<T> {
    /// The queue is at capacity.
    Full { item: T, capacity: usize },
    /// The policy predicts the item would finish after its deadline.
    Late(T),
    /// The queue is closed.
    Closed(T),
}

/// A model's queue, the policy that drains it, and what it knows of its instances.
#[derive(Debug)]
pub struct Scheduler<T> {
    queue: Queue<T>,
    policy: Box<dyn Policy>,
    cost: Arc<CostModel>,
    max_rows: usize,
    /// Per instance: when its running batch is predicted to end, in
    /// nanoseconds after `epoch` (0 when idle).
    busy_until: Vec<AtomicU64>,
    epoch: Instant,
    rate: Mutex<RateMeter>,
    /// Per priority level, the rate last measured by a consumer (f64 bits),
    /// for admission to read without taking `rate`'s lock.
    last_rate: Vec<AtomicU64>,
    /// Per priority level: each level learns its own reserve, so that a
    /// flood of low-priority work turning out late does not make admission
    /// refuse the online traffic that overtook it.
    lateness: Arc<[Lateness]>,
}

impl<T: Job> Scheduler<T> {
    /// A scheduler over `queue` for `instances` instances that forms batches
    /// of at most `max_rows` rows; `cost` is the model's batch cost model,
    /// fed by [`Scheduler::finished`].
    pub fn new(
        queue: Queue<T>,
        policy: Box<dyn Policy>,
        cost: Arc<CostModel>,
        max_rows: usize,
        instances: usize,
    ) -> Self {
        let levels = queue.levels();
        Self {
            queue,
            policy,
            cost,
            max_rows: max_rows.max(1),
            busy_until: (0..instances.max(1)).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            rate: Mutex::new(RateMeter::default()),
            last_rate: (0..levels)
                .map(|_| AtomicU64::new(0f64.to_bits()))
                .collect(),
            lateness: (0..levels).map(|_| Lateness::default()).collect(),
        }
    }

    /// Admits `item` (lock-free), or hands it back: the queue is full, or the
    /// policy predicts it cannot finish before its deadline.
    pub fn submit(&self, item: T) -> Result<(), Rejected<T>> {
        let now = Instant::now();
        let lane = self.queue.lane(item.priority());
        let rates = self
            .last_rate
            .iter()
            .map(|r| f64::from_bits(r.load(Ordering::Relaxed)));
        let (overtaking_rate, arrival_rate) = rates
            .enumerate()
            .fold((0.0, 0.0), |(higher, all), (l, rate)| {
                (if l < lane { higher + rate } else { higher }, all + rate)
            });
        let (earliest_free, idle_instance) = self.availability(now);
        let view = AdmissionView {
            now,
            rows: item.rows(),
            deadline: item.deadline(),
            rows_ahead: self.queue.rows_ahead(item.priority()),
            instances: self.busy_until.len(),
            earliest_free,
            idle_instance,
            arrival_rate,
            overtaking_rate,
            reserve: self.lateness[lane].reserve(),
        };
        if !self.policy.admit(&view) {
            return Err(Rejected::Late(item));
        }
        self.queue.push(item).map_err(|refused| match refused {
            Refused::Full { item, capacity } => Rejected::Full { item, capacity },
            Refused::Closed(item) => Rejected::Closed(item),
        })
    }

    /// Requests admitted and waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The model's batch cost model.
    pub fn cost(&self) -> &Arc<CostModel> {
        &self.cost
    }

    /// Stops admitting; `consumers` blocked consumers wake to drain the rest.
    pub fn close(&self, consumers: usize) {
        self.queue.close(consumers);
    }

    /// Instance `instance` starts a batch of `rows` rows now.
    pub fn started(&self, instance: usize, rows: usize) {
        let end = Instant::now() + self.cost.predict(rows);
        self.busy_until[instance].store(self.nanos(end).max(1), Ordering::Relaxed);
    }

    /// Instance `instance` finished a batch of `rows` that took `compute`.
    pub fn finished(&self, instance: usize, rows: usize, compute: Duration) {
        self.busy_until[instance].store(0, Ordering::Relaxed);
        self.cost.observe(rows, compute);
    }

    /// Priority levels (lanes) of the queue.
    pub fn levels(&self) -> usize {
        self.queue.levels()
    }

    /// The lane (0-based, highest priority first) that serves `priority`.
    pub fn lane(&self, priority: u32) -> usize {
        self.queue.lane(priority)
    }

    /// Where one batch's outcomes go, with `outcomes` already in (per lane,
    /// `(punctual, late)` admitted requests: those that expired in the queue
    /// count as late); admission learns from it once it is settled.
    pub fn settlement(&self, outcomes: &[(usize, usize)]) -> Arc<Settlement> {
        Settlement::new(Arc::clone(&self.lateness), outcomes)
    }

    /// The share of a request's time to its deadline that admission keeps
    /// back now at priority `priority`, beyond the network's.
    pub fn admission_reserve(&self, priority: u32) -> f64 {
        self.lateness[self.queue.lane(priority)].reserve()
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn busy_ends(&self, now: Instant) -> impl Iterator<Item = Instant> + '_ {
        let now_ns = self.nanos(now);
        self.busy_until.iter().map(move |b| {
            let end = b.load(Ordering::Relaxed);
            // Idle, or overrunning its prediction: free as far as we know.
            self.epoch + Duration::from_nanos(if end == 0 { now_ns } else { end.max(now_ns) })
        })
    }

    /// When the first instance is predicted to be free, and whether one is
    /// running no batch, from one reading of each instance's state.
    fn availability(&self, now: Instant) -> (Instant, bool) {
        let now_ns = self.nanos(now);
        let (mut earliest, mut idle) = (u64::MAX, false);
        for b in &self.busy_until {
            let end = b.load(Ordering::Relaxed);
            idle |= end == 0;
            // An idle instance (0) or one overrunning its prediction is free now.
            earliest = earliest.min(end.max(now_ns));
        }
        if earliest == u64::MAX {
            // No instance at all (`new` keeps at least one): free now.
            earliest = now_ns;
        }
        (self.epoch + Duration::from_nanos(earliest), idle)
    }

    /// Blocks until a batch is due and returns it; `None` once the queue is
    /// closed and empty. Requests that expire, cannot finish in time, or are
    /// cancelled while queued go to `dropped` and are never dispatched.
    pub fn next_batch(
        &self,
        instance: usize,
        dropped: &mut impl FnMut(T, DropReason),
    ) -> Option<Vec<T>> {
        let mut consumer = self.queue.consumer();
        loop {
            consumer.drain_inbox();
            let now = Instant::now();
            consumer.drop_stale_heads(now, dropped);
            // Measured idle too, so that admission does not keep seeing the
            // rate of a burst that has ended until the next batch forms.
            let arrival_rate = self.measure_rates(now);
            if consumer.is_empty() {
                if self.queue.is_finished() {
                    return None;
                }
                consumer.wait_until(now + IDLE_TICK);
                continue;
            }
            let others_free = self
                .busy_ends(now)
                .enumerate()
                .filter(|&(i, end)| i != instance && end > now)
                .map(|(_, end)| end)
                .min();
            let view = QueueView {
                now,
                queued_rows: consumer.rows(),
                oldest_arrival: consumer.heads().map(Job::arrival).min().unwrap_or(now),
                earliest_deadline: consumer.heads().filter_map(Job::deadline).min(),
                instances: self.busy_until.len(),
                next_free: others_free,
                arrival_rate,
            };
            let decision = match self.policy.decide(&view) {
                // Draining: nothing more will arrive to fill a batch.
                Decision::Wait { .. } if self.queue.is_closed() => Decision::Dispatch {
                    max_rows: self.max_rows,
                    expire_before: now,
                    urgent_before: None,
                },
                decision => decision,
            };
            match decision {
                Decision::Dispatch {
                    max_rows,
                    expire_before,
                    urgent_before,
                } => {
                    let rows = max_rows.clamp(1, self.max_rows);
                    let batch = consumer.take(rows, expire_before, urgent_before, dropped);
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

    /// Measures each level's arrival rate and publishes it to admission;
    /// returns all levels' together.
    fn measure_rates(&self, now: Instant) -> f64 {
        let rates = self.rate.lock().rates(now, self.queue.admitted_rows());
        for (last, rate) in self.last_rate.iter().zip(&rates) {
            last.store(rate.to_bits(), Ordering::Relaxed);
        }
        rates.iter().sum()
    }
}

/// Arrival rates from counters of admitted rows (one per priority level),
/// over a sliding window.
#[derive(Debug, Default)]
struct RateMeter {
    /// (when, rows admitted by then per level); oldest first, spanning about one window.
    marks: std::collections::VecDeque<(Instant, Vec<u64>)>,
}

impl RateMeter {
    /// Rows per second at each level over the last window, given each
    /// level's count of rows admitted by `now`.
    fn rates(&mut self, now: Instant, totals: Vec<u64>) -> Vec<f64> {
        if self
            .marks
            .back()
            .is_none_or(|&(at, _)| now.duration_since(at) >= RATE_WINDOW / 8)
        {
            self.marks.push_back((now, totals.clone()));
        }
        while self.marks.len() > 2 && now.duration_since(self.marks[1].0) >= RATE_WINDOW {
            self.marks.pop_front();
        }
        let (since, then) = self.marks.front().expect("a mark was just pushed");
        let elapsed = now.duration_since(*since).as_secs_f64();
        if elapsed <= 0.0 {
            return vec![0.0; totals.len()];
        }
        totals
            .iter()
            .zip(then)
            .map(|(total, then)| (total - then) as f64 / elapsed)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BatchingConfig;
    use crate::policy::StaticPolicy;
    use crate::queue::tests::TestJob;

    fn scheduler(max_rows: usize, delay: Duration) -> Scheduler<TestJob> {
        let config = BatchingConfig {
            max_queue_delay: delay,
            ..BatchingConfig::default()
        };
        Scheduler::new(
            Queue::new(1024, 2),
            Box::new(StaticPolicy::new(max_rows, &config)),
            Arc::new(CostModel::new(max_rows)),
            max_rows,
            1,
        )
    }

    fn no_drops(_: TestJob, r: DropReason) {
        panic!("drop {r:?}");
    }

    #[test]
    fn dispatches_queued_requests_up_to_the_limit() {
        let s = scheduler(4, Duration::ZERO);
        for id in 0..6 {
            s.submit(TestJob::new(id)).unwrap();
        }
        assert_eq!(s.next_batch(0, &mut no_drops).unwrap().len(), 4);
        assert_eq!(s.next_batch(0, &mut no_drops).unwrap().len(), 2);
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
        let batch = s.next_batch(0, &mut |_, _| {}).unwrap();
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
        assert_eq!(s.next_batch(0, &mut |_, _| {}).unwrap().len(), 1);
        assert!(s.next_batch(0, &mut |_, _| {}).is_none());
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
            .next_batch(0, &mut |j: TestJob, r| dropped.push((j.id, r)))
            .unwrap();
        assert_eq!(batch.iter().map(|j| j.id).collect::<Vec<_>>(), vec![8]);
        assert_eq!(dropped, vec![(7, DropReason::Expired)]);
    }

    #[test]
    fn each_priority_learns_its_own_reserve() {
        let s = scheduler(8, Duration::ZERO);
        // Priority 2 all late, priority 1 punctual: only priority 2's
        // admission keeps more back.
        drop(s.settlement(&[(10, 0), (0, 10)]));
        assert_eq!(s.admission_reserve(1), 0.0);
        assert!(s.admission_reserve(2) > 0.0);
        // Priorities beyond the last level share its lane.
        assert_eq!(s.admission_reserve(7), s.admission_reserve(2));
    }

    #[test]
    fn admission_stops_seeing_a_burst_once_the_queue_is_idle() {
        let s = Arc::new(scheduler(64, Duration::ZERO));
        let published =
            |s: &Scheduler<TestJob>| f64::from_bits(s.last_rate[0].load(Ordering::Relaxed));
        s.measure_rates(Instant::now());
        for id in 0..50 {
            s.submit(TestJob::new(id)).unwrap();
        }
        assert_eq!(s.next_batch(0, &mut no_drops).unwrap().len(), 50);
        assert!(published(&s) > 0.0, "the burst is measured");
        // The consumer now waits on an empty queue for longer than the
        // rate's window; what admission reads must fall with it.
        let consumer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.next_batch(0, &mut no_drops).map(|b| b.len()))
        };
        // Two idle ticks past the window suffice; a slow machine gets longer.
        let give_up = Instant::now() + Duration::from_secs(5);
        let idle_rate = loop {
            std::thread::sleep(IDLE_TICK);
            let rate = published(&s);
            if rate == 0.0 || Instant::now() > give_up {
                break rate;
            }
        };
        s.submit(TestJob::new(50)).unwrap();
        assert_eq!(consumer.join().unwrap(), Some(1));
        assert_eq!(idle_rate, 0.0, "admission still sees the burst");
    }

    #[test]
    fn rate_meter_measures_rows_per_second_per_level() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        assert_eq!(m.rates(t0, vec![0, 0]), vec![0.0, 0.0]);
        let r = m.rates(t0 + Duration::from_millis(100), vec![1000, 100]);
        assert!((r[0] - 10_000.0).abs() < 1.0, "{r:?}");
        assert!((r[1] - 1_000.0).abs() < 1.0, "{r:?}");
    }
}
