//! The batch cost model: how long a batch of `b` rows takes to execute,
//! t(b) = a + c·b, fitted from measured batches and refitted online.
//!
//! # Robustness
//! Timings on a shared machine wander (±15% here) and have outliers (a
//! preempted batch can take ten times its usual time). Each batch size keeps
//! its most recent [`SAMPLES_PER_SIZE`] timings, and the fit uses each size's
//! median; the line through those medians is a Theil–Sen fit (the median of
//! the pairwise slopes), which a minority of wild points cannot drag. Old
//! samples are forgotten as new ones arrive, so the model follows drift.
//!
//! # Spread
//! The line predicts a typical batch. Decisions that bound the tail (the
//! batch cap, admission) need a batch that runs long, so the model also keeps
//! a tail factor: across the sizes with enough timings, the median ratio of a
//! size's 90th-percentile timing to its median. On a quiet core it is close
//! to 1; where the batch shares its core with the network threads or with
//! other tenants, it grows, and the tail decisions become more careful.
//!
//! # Concurrency
//! Workers record timings under a short lock; readers (the scheduler, and the
//! admission check on every submit) read the fitted line from two atomics
//! without locking. The two coefficients are published separately; a reader
//! racing with a refit may see a new `a` with an old `c`, which is harmless
//! for an estimate that is refreshed every few batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Timings kept per batch size.
pub const SAMPLES_PER_SIZE: usize = 16;
/// Refit after this many new timings (and after the first).
const REFIT_EVERY: u64 = 8;
/// Timings a size needs before its spread counts towards the tail factor.
const SPREAD_MIN_SAMPLES: usize = 8;
/// The quantile of a size's timings that the tail factor relates to its median.
const TAIL_QUANTILE: f64 = 0.9;
/// Bound on the tail factor: one wild size cannot make every estimate absurd.
const MAX_TAIL_FACTOR: f64 = 3.0;

/// A fitted line t(b) = a + c·b, in nanoseconds, and the spread around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub fixed_ns: f64,
    pub per_row_ns: f64,
    /// A long batch's time over the typical one (at least 1).
    pub tail_factor: f64,
}

impl Line {
    /// Predicted time of a batch of `rows`.
    pub fn predict(&self, rows: usize) -> Duration {
        let ns = self.fixed_ns + self.per_row_ns * rows as f64;
        Duration::from_nanos(ns.max(0.0) as u64)
    }
}

/// Online, robust estimate of batch execution time by batch size.
#[derive(Debug)]
pub struct CostModel {
    samples: Mutex<Vec<VecDeque<u64>>>,
    observed: AtomicU64,
    fixed_ns: AtomicU64,
    per_row_ns: AtomicU64,
    tail_factor: AtomicU64,
}

impl CostModel {
    /// An empty model for batches of 1 to `max_rows` rows.
    pub fn new(max_rows: usize) -> Self {
        Self {
            samples: Mutex::new(vec![VecDeque::new(); max_rows.max(1)]),
            observed: AtomicU64::new(0),
            fixed_ns: AtomicU64::new(0f64.to_bits()),
            per_row_ns: AtomicU64::new(0f64.to_bits()),
            tail_factor: AtomicU64::new(1f64.to_bits()),
        }
    }

    /// Records that a batch of `rows` took `took`.
    pub fn observe(&self, rows: usize, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let refit = {
            let mut samples = self.samples.lock();
            let index = rows.clamp(1, samples.len()) - 1;
            let ring = &mut samples[index];
            if ring.len() == SAMPLES_PER_SIZE {
                ring.pop_front();
            }
            ring.push_back(ns);
            let n = self.observed.fetch_add(1, Ordering::Relaxed) + 1;
            (n == 1 || n % REFIT_EVERY == 0).then(|| fit(&samples))
        };
        if let Some(Some(line)) = refit {
            self.publish(line);
        }
    }

    /// Refits now from every kept timing (after a warm-up profile, say).
    pub fn refit(&self) {
        if let Some(line) = fit(&self.samples.lock()) {
            self.publish(line);
        }
    }

    fn publish(&self, line: Line) {
        self.fixed_ns
            .store(line.fixed_ns.to_bits(), Ordering::Relaxed);
        self.per_row_ns
            .store(line.per_row_ns.to_bits(), Ordering::Relaxed);
        self.tail_factor
            .store(line.tail_factor.to_bits(), Ordering::Relaxed);
    }

    /// Whether any timing has been recorded.
    pub fn is_calibrated(&self) -> bool {
        self.observed.load(Ordering::Relaxed) > 0
    }

    /// The current line (lock-free).
    pub fn line(&self) -> Line {
        Line {
            fixed_ns: f64::from_bits(self.fixed_ns.load(Ordering::Relaxed)),
            per_row_ns: f64::from_bits(self.per_row_ns.load(Ordering::Relaxed)),
            tail_factor: f64::from_bits(self.tail_factor.load(Ordering::Relaxed)),
        }
    }

    /// Predicted time of a batch of `rows` (lock-free).
    pub fn predict(&self, rows: usize) -> Duration {
        self.line().predict(rows)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Theil–Sen line through the per-size medians, with the tail factor of
/// the sizes with enough timings; `None` without data.
fn fit(samples: &[VecDeque<u64>]) -> Option<Line> {
    // One sort per size serves both its median (a point of the line) and
    // its spread.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut ratios: Vec<f64> = Vec::new();
    for (i, ring) in samples.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        let mut values: Vec<f64> = ring.iter().map(|&ns| ns as f64).collect();
        let mid = median(&mut values);
        points.push(((i + 1) as f64, mid));
        if values.len() >= SPREAD_MIN_SAMPLES {
            let high = values[((values.len() - 1) as f64 * TAIL_QUANTILE).round() as usize];
            ratios.push(if mid > 0.0 { high / mid } else { 1.0 });
        }
    }
    let tail_factor = if ratios.is_empty() {
        1.0
    } else {
        median(&mut ratios).clamp(1.0, MAX_TAIL_FACTOR)
    };
    match points.as_slice() {
        [] => None,
        // One size seen: all of its time is taken as fixed cost, the
        // estimate that never under-predicts a smaller batch.
        [(_, t)] => Some(Line {
            fixed_ns: *t,
            per_row_ns: 0.0,
            tail_factor,
        }),
        _ => {
            let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
            for (i, &(b1, t1)) in points.iter().enumerate() {
                for &(b2, t2) in &points[i + 1..] {
                    slopes.push((t2 - t1) / (b2 - b1));
                }
            }
            let per_row = median(&mut slopes).max(0.0);
            let mut intercepts: Vec<f64> = points.iter().map(|&(b, t)| t - per_row * b).collect();
            let mut fixed = median(&mut intercepts).max(0.0);
            // A batch of one row is the best measured size (light load runs
            // little else), and its time beyond one row's share is what
            // every batch pays. The median intercept can fall below it when
            // the large sizes' timings are older and cheaper (the warm-up
            // profile runs on an idle core and times the model alone);
            // underestimating the fixed part would make batching look
            // useless and batches too small to keep up.
            if let Some(&(b, t)) = points.first().filter(|&&(b, _)| b == 1.0) {
                fixed = fixed.max(t - per_row * b);
            }
            Some(Line {
                fixed_ns: fixed,
                per_row_ns: per_row,
                tail_factor,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: f64) -> Duration {
        Duration::from_nanos((n * 1e3) as u64)
    }

    #[test]
    fn fits_an_affine_cost() {
        let model = CostModel::new(64);
        for b in [1, 2, 4, 8, 16, 32, 64] {
            for _ in 0..3 {
                model.observe(b, us(400.0 + 27.0 * b as f64));
            }
        }
        model.refit();
        let line = model.line();
        assert!((line.fixed_ns - 400e3).abs() < 1e3, "{line:?}");
        assert!((line.per_row_ns - 27e3).abs() < 100.0, "{line:?}");
        assert!((model.predict(64).as_secs_f64() * 1e6 - 2128.0).abs() < 2.0);
    }

    #[test]
    fn outliers_do_not_drag_the_fit() {
        let model = CostModel::new(32);
        for b in 1..=32 {
            for i in 0..8 {
                // One timing in eight is a tenfold stall.
                let t = 1000.0 + 100.0 * b as f64;
                model.observe(b, us(if i == 3 { 10.0 * t } else { t }));
            }
        }
        model.refit();
        let line = model.line();
        assert!((line.fixed_ns - 1000e3).abs() < 20e3, "{line:?}");
        assert!((line.per_row_ns - 100e3).abs() < 2e3, "{line:?}");
    }

    #[test]
    fn follows_drift() {
        let model = CostModel::new(4);
        for _ in 0..SAMPLES_PER_SIZE {
            model.observe(1, us(100.0));
            model.observe(4, us(400.0));
        }
        for _ in 0..SAMPLES_PER_SIZE {
            model.observe(1, us(200.0));
            model.observe(4, us(800.0));
        }
        model.refit();
        assert_eq!(model.predict(4), us(800.0));
    }

    #[test]
    fn linear_cost_has_no_fixed_part() {
        let model = CostModel::new(16);
        for b in 1..=16 {
            model.observe(b, us(7000.0 * b as f64));
        }
        model.refit();
        let line = model.line();
        assert!(line.fixed_ns < 1e3, "{line:?}");
        assert!((line.per_row_ns - 7e6).abs() < 1e3, "{line:?}");
    }

    #[test]
    fn the_fixed_part_is_at_least_what_one_row_costs_beyond_its_share() {
        let model = CostModel::new(64);
        // Cheap large batches (timed alone on an idle core) and a dearer
        // single row (timed in service, with its answering and the
        // network's share): the line passes through the single row.
        for b in [2, 4, 8, 16, 32, 64] {
            model.observe(b, us(60.0 * b as f64));
        }
        model.observe(1, us(300.0));
        model.refit();
        let line = model.line();
        assert!((line.per_row_ns - 60e3).abs() < 1.0, "{line:?}");
        assert!((line.fixed_ns - 240e3).abs() < 1.0, "{line:?}");
    }

    #[test]
    fn tail_factor_is_the_spread_of_the_slow_timings() {
        let model = CostModel::new(8);
        // Too few timings for a spread: none assumed.
        for _ in 0..SPREAD_MIN_SAMPLES - 1 {
            model.observe(4, us(100.0));
        }
        model.refit();
        assert_eq!(model.line().tail_factor, 1.0);
        // One batch in four runs 1.5x long: the 90th percentile is 1.5x the median.
        for i in 0..SAMPLES_PER_SIZE {
            model.observe(4, us(if i % 4 == 0 { 150.0 } else { 100.0 }));
        }
        model.refit();
        assert_eq!(model.line().tail_factor, 1.5);
        assert_eq!(model.predict(4), us(100.0));
        // A batch of 4 that runs long takes 150 µs.
        assert_eq!(
            model.predict(4).mul_f64(model.line().tail_factor),
            us(150.0)
        );
    }

    #[test]
    fn one_size_is_all_fixed_cost() {
        let model = CostModel::new(8);
        assert!(!model.is_calibrated());
        model.observe(3, us(900.0));
        assert!(model.is_calibrated());
        assert_eq!(model.predict(1), us(900.0));
        assert_eq!(model.predict(8), us(900.0));
    }
}
