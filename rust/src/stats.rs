//! Per-model statistics: counters and cumulative durations in the terms of
//! the protocol's ModelStatistics, figures per batch size, and per priority
//! level the fate of every request (admitted, refused, expired, cancelled,
//! completed, failed) with HDR histograms of queue, compute and end-to-end
//! time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Count and cumulative time of one kind of event.
#[derive(Debug, Default)]
struct Timed {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Timed {
    fn add(&self, count: u64, each: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.ns.fetch_add(count * nanos(each), Ordering::Relaxed);
    }

    fn read(&self) -> Duration2 {
        Duration2 {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A count with its cumulative nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration2 {
    pub count: u64,
    pub ns: u64,
}

/// Figures for the batches of one size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchFigures {
    pub count: u64,
    pub compute_input_ns: u64,
    pub compute_infer_ns: u64,
    pub compute_output_ns: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What happened to the requests of one priority level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneSnapshot {
    /// Entered the queue.
    pub admitted: u64,
    /// Refused at submit (queue full, predicted late, closed).
    pub refused: u64,
    /// Dropped in the queue: deadline passed, or could not finish before it.
    pub expired: u64,
    /// Dropped in the queue: the client went away.
    pub cancelled: u64,
    /// Answered with a result.
    pub completed: u64,
    /// Failed in execution.
    pub failed: u64,
    pub queue: Percentiles,
    pub compute: Percentiles,
    pub end_to_end: Percentiles,
}

/// A copy of a model's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Samples (rows) inferred.
    pub inference_count: u64,
    /// Batches executed.
    pub execution_count: u64,
    /// Requests answered with a result, and their end-to-end time.
    pub success: Duration2,
    /// Admitted requests that failed (execution error, expiry, cancellation),
    /// and their time in the server.
    pub fail: Duration2,
    /// Requests that left the queue for a batch, and their time in it.
    pub queue: Duration2,
    /// Requests computed, with their batch's input, infer and output time each.
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
    /// Milliseconds since the epoch of the last executed batch.
    pub last_inference_ms: u64,
    /// Requests refused as malformed before admission (`INVALID_ARGUMENT`:
    /// tensors that do not match the signature, bad parameters).
    pub invalid: u64,
    /// By batch size (rows).
    pub batches: BTreeMap<usize, BatchFigures>,
    /// By priority level, level 1 first.
    pub lanes: Vec<LaneSnapshot>,
}

impl StatsSnapshot {
    /// A lane figure summed over every level.
    pub fn total(&self, figure: impl Fn(&LaneSnapshot) -> u64) -> u64 {
        self.lanes.iter().map(figure).sum()
    }
}

#[derive(Debug)]
struct Histograms {
    queue: Histogram<u64>,
    compute: Histogram<u64>,
    end_to_end: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant digits; values outside are clamped.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

#[derive(Debug)]
struct Lane {
    admitted: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    histograms: Mutex<Histograms>,
}

impl Lane {
    fn new() -> Self {
        Self {
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            histograms: Mutex::new(Histograms {
                queue: histogram(),
                compute: histogram(),
                end_to_end: histogram(),
            }),
        }
    }

    fn snapshot(&self) -> LaneSnapshot {
        let h = self.histograms.lock();
        LaneSnapshot {
            admitted: self.admitted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queue: percentiles(&h.queue),
            compute: percentiles(&h.compute),
            end_to_end: percentiles(&h.end_to_end),
        }
    }
}

/// Live statistics of one model, updated by submitters and workers.
#[derive(Debug)]
pub struct ModelStats {
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    success: Timed,
    fail: Timed,
    queue: Timed,
    compute_input: Timed,
    compute_infer: Timed,
    compute_output: Timed,
    last_inference_ms: AtomicU64,
    invalid: AtomicU64,
    batches: Mutex<BTreeMap<usize, BatchFigures>>,
    lanes: Vec<Lane>,
}

/// Times of one executed batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    pub rows: usize,
    pub requests: usize,
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

impl BatchTiming {
    /// Input, infer and output together.
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

impl ModelStats {
    /// Statistics for a model with `levels` priority levels.
    pub fn new(levels: u32) -> Self {
        Self {
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            success: Timed::default(),
            fail: Timed::default(),
            queue: Timed::default(),
            compute_input: Timed::default(),
            compute_infer: Timed::default(),
            compute_output: Timed::default(),
            last_inference_ms: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            batches: Mutex::new(BTreeMap::new()),
            lanes: (0..levels.max(1)).map(|_| Lane::new()).collect(),
        }
    }

    fn lane(&self, priority: u32) -> &Lane {
        &self.lanes[(priority.max(1) as usize - 1).min(self.lanes.len() - 1)]
    }

    /// A request entered the queue.
    pub fn admitted(&self, priority: u32) {
        self.lane(priority).admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused as malformed, before admission: it has no
    /// priority level yet (its parameters may be what was wrong).
    pub fn invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused at submit.
    pub fn refused(&self, priority: u32) {
        self.lane(priority).refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A request left the queue for a batch after waiting `waited`.
    pub fn dequeued(&self, priority: u32, waited: Duration) {
        self.queue.add(1, waited);
        record(&mut self.lane(priority).histograms.lock().queue, waited);
    }

    /// A batch ran (successfully or not).
    pub fn batch(&self, t: BatchTiming) {
        let requests = t.requests as u64;
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(t.rows as u64, Ordering::Relaxed);
        self.compute_input.add(requests, t.input);
        self.compute_infer.add(requests, t.infer);
        self.compute_output.add(requests, t.output);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
        let mut batches = self.batches.lock();
        let f = batches.entry(t.rows).or_default();
        f.count += 1;
        f.compute_input_ns += nanos(t.input);
        f.compute_infer_ns += nanos(t.infer);
        f.compute_output_ns += nanos(t.output);
    }

    /// A request was answered with a result: `compute` in its batch, `total` in the server.
    pub fn succeeded(&self, priority: u32, compute: Duration, total: Duration) {
        self.success.add(1, total);
        let lane = self.lane(priority);
        lane.completed.fetch_add(1, Ordering::Relaxed);
        let mut h = lane.histograms.lock();
        record(&mut h.compute, compute);
        record(&mut h.end_to_end, total);
    }

    /// An admitted request failed in execution after `total` in the server.
    pub fn failed(&self, priority: u32, total: Duration) {
        self.fail.add(1, total);
        self.lane(priority).failed.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was dropped from the queue because of its deadline.
    pub fn expired(&self, priority: u32, total: Duration) {
        self.fail.add(1, total);
        self.lane(priority).expired.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was dropped from the queue because its client went away.
    pub fn cancelled(&self, priority: u32, total: Duration) {
        self.fail.add(1, total);
        self.lane(priority)
            .cancelled
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every figure.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.read(),
            fail: self.fail.read(),
            queue: self.queue.read(),
            compute_input: self.compute_input.read(),
            compute_infer: self.compute_infer.read(),
            compute_output: self.compute_output.read(),
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            batches: self.batches.lock().clone(),
            lanes: self.lanes.iter().map(Lane::snapshot).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let s = ModelStats::new(2);
        s.admitted(1);
        s.admitted(2);
        s.admitted(2);
        s.refused(2);
        s.invalid();
        s.dequeued(1, Duration::from_micros(100));
        s.dequeued(2, Duration::from_micros(300));
        s.batch(BatchTiming {
            rows: 5,
            requests: 2,
            input: Duration::from_micros(10),
            infer: Duration::from_micros(1000),
            output: Duration::from_micros(5),
        });
        s.succeeded(1, Duration::from_micros(1015), Duration::from_micros(1500));
        s.succeeded(2, Duration::from_micros(1015), Duration::from_micros(1700));
        s.expired(2, Duration::from_micros(2000));
        let snap = s.snapshot();
        assert_eq!((snap.inference_count, snap.execution_count), (5, 1));
        assert_eq!(
            snap.queue,
            Duration2 {
                count: 2,
                ns: 400_000
            }
        );
        assert_eq!(
            snap.compute_infer,
            Duration2 {
                count: 2,
                ns: 2_000_000
            }
        );
        assert_eq!(snap.success.count, 2);
        // Neither the refusal nor the malformed request is a failure of an admitted one.
        assert_eq!(snap.fail.count, 1);
        assert_eq!(snap.invalid, 1);
        assert_eq!(snap.batches[&5].count, 1);
        let (online, batch) = (&snap.lanes[0], &snap.lanes[1]);
        assert_eq!((online.admitted, online.completed), (1, 1));
        assert_eq!(
            (
                batch.admitted,
                batch.refused,
                batch.expired,
                batch.completed
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(snap.total(|l| l.admitted), 3);
        assert!(batch.end_to_end.max_us >= 1700 && online.queue.max_us < 300);
        assert!(snap.last_inference_ms > 0);
    }

    #[test]
    fn out_of_range_priorities_land_in_the_last_lane() {
        let s = ModelStats::new(2);
        s.admitted(9);
        assert_eq!(s.snapshot().lanes[1].admitted, 1);
    }
}
