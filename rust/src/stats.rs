//! Per-model statistics: counters and cumulative durations in the terms of
//! the protocol's ModelStatistics, per-batch-size figures, and HDR
//! histograms of queue, compute and end-to-end latency.

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
    pub max_us: u64,
}

/// A consistent-enough copy of a model's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Samples (rows) inferred.
    pub inference_count: u64,
    /// Batches executed.
    pub execution_count: u64,
    /// Requests answered with a result, and their end-to-end time.
    pub success: Duration2,
    /// Requests that failed after admission (execution error, expiry,
    /// cancellation), and their time in the server.
    pub fail: Duration2,
    /// Requests that left the queue for a batch, and their time in it.
    pub queue: Duration2,
    /// Requests computed, with their batch's input, infer and output time each.
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
    /// Requests refused at admission (queue full, closed).
    pub refused: u64,
    /// Requests dropped because their deadline passed in the queue.
    pub expired: u64,
    /// Requests dropped because their client went away.
    pub cancelled: u64,
    /// Milliseconds since the epoch of the last executed batch.
    pub last_inference_ms: u64,
    /// By batch size (rows).
    pub batches: BTreeMap<usize, BatchFigures>,
    pub queue_latency: Percentiles,
    pub compute_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
}

/// Live statistics of one model, updated by its workers.
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
    refused: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<usize, BatchFigures>>,
    histograms: Mutex<Histograms>,
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
        max_us: h.max(),
    }
}

impl Default for ModelStats {
    fn default() -> Self {
        Self {
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            success: Timed::default(),
            fail: Timed::default(),
            queue: Timed::default(),
            compute_input: Timed::default(),
            compute_infer: Timed::default(),
            compute_output: Timed::default(),
            refused: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            batches: Mutex::new(BTreeMap::new()),
            histograms: Mutex::new(Histograms {
                queue: histogram(),
                compute: histogram(),
                end_to_end: histogram(),
            }),
        }
    }
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

impl ModelStats {
    /// A request left the queue for a batch after waiting `waited`.
    pub fn dequeued(&self, waited: Duration) {
        self.queue.add(1, waited);
        record(&mut self.histograms.lock().queue, waited);
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
        {
            let mut batches = self.batches.lock();
            let f = batches.entry(t.rows).or_default();
            f.count += 1;
            f.compute_input_ns += nanos(t.input);
            f.compute_infer_ns += nanos(t.infer);
            f.compute_output_ns += nanos(t.output);
        }
        record(
            &mut self.histograms.lock().compute,
            t.input + t.infer + t.output,
        );
    }

    /// A request was answered with a result after `total` in the server.
    pub fn succeeded(&self, total: Duration) {
        self.success.add(1, total);
        record(&mut self.histograms.lock().end_to_end, total);
    }

    /// An admitted request failed after `total` in the server.
    pub fn failed(&self, total: Duration) {
        self.fail.add(1, total);
    }

    /// A request was refused at admission.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's deadline passed while it was queued.
    pub fn expired(&self, total: Duration) {
        self.expired.fetch_add(1, Ordering::Relaxed);
        self.failed(total);
    }

    /// A request's client went away while it was queued.
    pub fn cancelled(&self, total: Duration) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        self.failed(total);
    }

    /// A copy of every figure.
    pub fn snapshot(&self) -> StatsSnapshot {
        let h = self.histograms.lock();
        StatsSnapshot {
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            success: self.success.read(),
            fail: self.fail.read(),
            queue: self.queue.read(),
            compute_input: self.compute_input.read(),
            compute_infer: self.compute_infer.read(),
            compute_output: self.compute_output.read(),
            refused: self.refused.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            last_inference_ms: self.last_inference_ms.load(Ordering::Relaxed),
            batches: self.batches.lock().clone(),
            queue_latency: percentiles(&h.queue),
            compute_latency: percentiles(&h.compute),
            end_to_end_latency: percentiles(&h.end_to_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let s = ModelStats::default();
        s.dequeued(Duration::from_micros(100));
        s.dequeued(Duration::from_micros(300));
        s.batch(BatchTiming {
            rows: 5,
            requests: 2,
            input: Duration::from_micros(10),
            infer: Duration::from_micros(1000),
            output: Duration::from_micros(5),
        });
        s.succeeded(Duration::from_micros(1500));
        s.expired(Duration::from_micros(2000));
        s.refused();
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
        assert_eq!(snap.success.count, 1);
        assert_eq!(snap.fail.count, 1);
        assert_eq!((snap.expired, snap.refused), (1, 1));
        assert_eq!(snap.batches[&5].count, 1);
        assert_eq!(snap.queue_latency.count, 2);
        assert!(snap.queue_latency.max_us >= 300);
        assert!(snap.last_inference_ms > 0);
    }
}
