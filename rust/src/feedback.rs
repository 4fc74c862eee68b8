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
//!
//! A request is judged when its submitter lets go of its answer (for a gRPC
//! call, once the answer is encoded), not when its batch ends: where the
//! network thread shares the core with the batches, an answer can wait for
//! it longer than the batch took, and a server that judged at the batch's end
//! would count such a request punctual while its client saw it late, and go
//! on admitting as much as before. A batch's [`Settlement`] collects its
//! requests' verdicts and records them when the last one is in.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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

/// One batch's outcomes per lane, recorded into its lanes' [`Lateness`]
/// when the last handle to it goes: the worker's, once it has judged what it
/// could, and every answer's [`Verdict`].
#[derive(Debug)]
pub struct Settlement {
    lateness: Arc<[Lateness]>,
    /// Per lane: (punctual, late).
    counts: Vec<(AtomicUsize, AtomicUsize)>,
}

impl Settlement {
    /// A settlement for `lateness`'s lanes, with `outcomes` (per lane,
    /// punctual and late) already in.
    pub fn new(lateness: Arc<[Lateness]>, outcomes: &[(usize, usize)]) -> Arc<Self> {
        let counts = (0..lateness.len())
            .map(|lane| {
                let (punctual, late) = outcomes.get(lane).copied().unwrap_or_default();
                (AtomicUsize::new(punctual), AtomicUsize::new(late))
            })
            .collect();
        Arc::new(Self { lateness, counts })
    }

    /// Counts a request of `lane` that arrived at `arrival`, due at
    /// `deadline`, and was done with at `done`.
    pub fn judge(&self, lane: usize, arrival: Instant, deadline: Instant, done: Instant) {
        let (in_time, late) = &self.counts[lane];
        let count = if punctual(arrival, deadline, done) {
            in_time
        } else {
            late
        };
        count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        for (lateness, (punctual, late)) in self.lateness.iter().zip(&self.counts) {
            lateness.record(
                punctual.load(Ordering::Relaxed),
                late.load(Ordering::Relaxed),
            );
        }
    }
}

/// An answer's part in its batch's [`Settlement`], judged when its submitter
/// is done with the answer (see `handover`); the batch is settled once every
/// verdict is in.
#[derive(Debug)]
pub struct Verdict {
    settlement: Arc<Settlement>,
    lane: usize,
    deadline: Instant,
}

impl Verdict {
    /// The verdict on a request of `lane` due at `deadline`, to be counted
    /// in `settlement`.
    pub fn new(settlement: Arc<Settlement>, lane: usize, deadline: Instant) -> Self {
        Self {
            settlement,
            lane,
            deadline,
        }
    }

    /// Counts the request, which arrived at `arrival` and was done with at
    /// `done`.
    pub fn give(self, arrival: Instant, done: Instant) {
        self.settlement
            .judge(self.lane, arrival, self.deadline, done);
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

    #[test]
    fn a_batch_is_settled_when_its_last_answer_is_let_go() {
        let lateness: Arc<[Lateness]> = (0..2).map(|_| Lateness::default()).collect();
        let arrival = Instant::now();
        let deadline = arrival + std::time::Duration::from_secs(3600);
        // Two expired in lane 1 before the batch.
        let settlement = Settlement::new(Arc::clone(&lateness), &[(0, 0), (0, 2)]);
        let late = Verdict::new(Arc::clone(&settlement), 0, arrival);
        let punctual = Verdict::new(Arc::clone(&settlement), 0, deadline);
        drop(settlement);
        late.give(arrival, Instant::now());
        assert_eq!(
            lateness[0].reserve(),
            0.0,
            "settled before every answer was in"
        );
        punctual.give(arrival, Instant::now());
        let half = STEP * (0.5 - TARGET_LATE);
        assert!(
            (lateness[0].reserve() - half).abs() < 1e-12,
            "{}",
            lateness[0].reserve()
        );
        let all = STEP * (1.0 - TARGET_LATE);
        assert!(
            (lateness[1].reserve() - all).abs() < 1e-12,
            "{}",
            lateness[1].reserve()
        );
    }

    #[test]
    fn a_verdict_given_past_the_servers_share_is_late() {
        let lateness: Arc<[Lateness]> = vec![Lateness::default()].into();
        let arrival = Instant::now();
        // Punctual while the server's share of 20 ms (17 ms) lasts.
        let deadline = arrival + std::time::Duration::from_millis(20);
        let verdict = Verdict::new(Settlement::new(Arc::clone(&lateness), &[]), 0, deadline);
        verdict.give(arrival, arrival + std::time::Duration::from_millis(25));
        assert!(
            lateness[0].reserve() > 0.0,
            "held past its share, it was counted punctual"
        );
    }
}
