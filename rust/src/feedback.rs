//! Admission's feedback from what became of the requests it admitted.
//!
//! Admission predicts from the cost model; what the model cannot see (the
//! network thread taking the core in the middle of a batch, batches smaller
//! than the cap, a neighbour on a shared machine) shows up afterwards as
//! requests that finish late or expire in the queue. [`Lateness`] turns those
//! outcomes into a *reserve*: an extra share of each request's time to its
//! deadline that admission keeps back. After each batch it moves by a step
//! times the batch's late fraction less [`TARGET_LATE`], so it settles where
//! about that fraction of the admitted requests are late: a batch all late
//! raises it by one step, a punctual batch lowers it by a hundredth of one.
//! Lateness comes in bursts (one slow batch makes the whole queue behind it
//! late), which is why it moves per batch and not per request: counted per
//! request, one burst would throw the reserve to its bound and refuse most of
//! the load until it decayed.
//!
//! "Late" is measured against the server's share of the deadline,
//! [`SERVER_SHARE`] of the time from arrival to deadline: the rest belongs to
//! the network and the encoding on either side, which the server's clock does
//! not see.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Share of a request's time from arrival to deadline that the server may
/// use; the rest is left to the network on either side of it.
pub const SERVER_SHARE: f64 = 0.85;
/// Fraction of admitted requests allowed to be late at equilibrium.
pub const TARGET_LATE: f64 = 0.01;
/// The reserve's rise after a batch that is all late.
const STEP: f64 = 0.05;
/// The reserve's bound: beyond half the time to the deadline, a larger
/// reserve only refuses what the queue could still serve.
pub const MAX_RESERVE: f64 = 0.5;

/// Whether a request that arrived at `arrival` with `deadline` and finished
/// at `finished` was punctual by the server's share of its time.
pub fn punctual(arrival: Instant, deadline: Instant, finished: Instant) -> bool {
    let budget = deadline.saturating_duration_since(arrival);
    finished <= arrival + budget.mul_f64(SERVER_SHARE)
}

/// The admission reserve, adapted from outcomes (lock-free).
#[derive(Debug)]
pub struct Lateness {
    reserve: AtomicU64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            reserve: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl Lateness {
    /// The share of the time to its deadline that admission keeps back now.
    pub fn reserve(&self) -> f64 {
        f64::from_bits(self.reserve.load(Ordering::Relaxed))
    }

    /// Records one batch's outcomes: `punctual` and `late` admitted requests
    /// (those that expired in the queue since the last batch count as late).
    pub fn record(&self, punctual: usize, late: usize) {
        let n = punctual + late;
        if n == 0 {
            return;
        }
        let delta = STEP * (late as f64 / n as f64 - TARGET_LATE);
        // Workers of one model race here rarely (once per batch each); a lost
        // update only delays the reserve by one batch, so one try suffices.
        let current = self.reserve.load(Ordering::Relaxed);
        let next = (f64::from_bits(current) + delta).clamp(0.0, MAX_RESERVE);
        let _ = self.reserve.compare_exchange(
            current,
            next.to_bits(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn punctual_means_within_the_servers_share() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(100);
        assert!(punctual(t0, deadline, t0 + Duration::from_millis(85)));
        assert!(!punctual(t0, deadline, t0 + Duration::from_millis(86)));
    }

    #[test]
    fn reserve_rises_with_lateness_and_settles_near_the_target() {
        let l = Lateness::default();
        assert_eq!(l.reserve(), 0.0);
        // A batch all late: one step, however many requests it held.
        l.record(0, 40);
        let one = STEP * (1.0 - TARGET_LATE);
        assert!((l.reserve() - one).abs() < 1e-12);
        // At the target rate of lateness it holds still: one late per 99 punctual.
        for _ in 0..10 {
            l.record(99, 1);
        }
        assert!((l.reserve() - one).abs() < 1e-9, "{}", l.reserve());
        // Half late: half a step up.
        l.record(5, 5);
        assert!((l.reserve() - one - STEP * (0.5 - TARGET_LATE)).abs() < 1e-9);
        // Bounded however late things get.
        for _ in 0..100 {
            l.record(0, 10);
        }
        assert_eq!(l.reserve(), MAX_RESERVE);
        // Punctual batches give it back, a hundredth of a step each.
        for _ in 0..999 {
            l.record(10, 0);
        }
        assert!(l.reserve() > 0.0);
        l.record(10, 0);
        assert!(l.reserve() < 1e-9, "{}", l.reserve());
    }
}
