//! Batch policies: given what waits in a queue, dispatch now (and how many
//! rows), or wait; and, at submit, whether a request can still be served in
//! time. docs/scheduling.md explains the adaptive policy's reasoning.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cost::{CostModel, Line};
use crate::feedback::SERVER_SHARE;
use crate::model::{BatchingConfig, ModelSpec, PolicyKind};

/// What a policy sees of the queue and the instances when one is free.
#[derive(Debug, Clone, Copy)]
pub struct QueueView {
    pub now: Instant,
    /// Rows waiting, all priorities together (at least one request waits).
    pub queued_rows: usize,
    /// Arrival of the longest-waiting request at the front of a lane.
    pub oldest_arrival: Instant,
    /// The earliest deadline in the queue, if any request has one.
    pub earliest_deadline: Option<Instant>,
    /// Instances of the model, this one included.
    pub instances: usize,
    /// When the next busy instance is predicted to be free (None: all others idle).
    pub next_free: Option<Instant>,
    /// Rows admitted per second, recently.
    pub arrival_rate: f64,
}

/// What a policy sees of a request at submit.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionView {
    pub now: Instant,
    pub rows: usize,
    pub deadline: Option<Instant>,
    /// Rows queued that will be served before this request (same or higher priority).
    pub rows_ahead: usize,
    pub instances: usize,
    /// When each instance is predicted to be free, earliest first.
    pub earliest_free: Instant,
    /// Whether an instance is running no batch (not merely past its
    /// predicted end: a batch that overruns is still running).
    pub idle_instance: bool,
    /// Rows admitted per second lately, all priorities (0 before anything
    /// was measured).
    pub arrival_rate: f64,
    /// The part of `arrival_rate` at priorities higher than this request's:
    /// rows that will overtake it while it waits.
    pub overtaking_rate: f64,
    /// Extra share of the time to the deadline to keep back, learnt from
    /// admitted requests that turned out late (see `feedback`).
    pub reserve: f64,
}

/// A policy's answer when an instance is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Form a batch of at most `max_rows` rows now. Requests whose deadline
    /// falls before `expire_before` cannot finish in time and are dropped;
    /// requests whose deadline falls before `urgent_before` cannot wait for
    /// another batch and go first, whatever their priority.
    Dispatch {
        max_rows: usize,
        expire_before: Instant,
        urgent_before: Option<Instant>,
    },
    /// Form nothing before `until` unless new requests arrive first.
    Wait { until: Instant },
}

/// Decides when a free instance takes a batch, and how large; and whether a
/// request is admitted at all.
pub trait Policy: Send + Sync + Debug {
    /// Called when an instance is free and the queue is not empty.
    fn decide(&self, view: &QueueView) -> Decision;

    /// Whether a request can be admitted; `false` refuses it as overloaded.
    fn admit(&self, _view: &AdmissionView) -> bool {
        true
    }
}

/// Builds the policy a model's configuration names.
pub fn for_model(spec: &ModelSpec, cost: Arc<CostModel>) -> Box<dyn Policy> {
    match spec.batching.policy {
        PolicyKind::Static => Box::new(StaticPolicy::new(spec.batch_limit(), &spec.batching)),
        PolicyKind::Adaptive => Box::new(
            AdaptivePolicy::new(spec.batch_limit(), spec.batching.slo, cost)
                .reading_between_batches(spec.reads_between_batches),
        ),
    }
}

/// Triton's dynamic batcher: dispatch the largest batch when `max_batch_size`
/// rows wait, else the largest preferred size that can be formed, else
/// whatever waits once the oldest request has waited `max_queue_delay`.
/// Strict priority; only requests already past their deadline are dropped.
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

    fn dispatch(&self, rows: usize, now: Instant) -> Decision {
        Decision::Dispatch {
            max_rows: rows,
            expire_before: now,
            urgent_before: None,
        }
    }
}

impl Policy for StaticPolicy {
    fn decide(&self, view: &QueueView) -> Decision {
        if view.queued_rows >= self.max_batch_size {
            return self.dispatch(self.max_batch_size, view.now);
        }
        if let Some(&size) = self
            .preferred
            .iter()
            .rev()
            .find(|&&p| p <= view.queued_rows)
        {
            return self.dispatch(size, view.now);
        }
        let due = view.oldest_arrival + self.max_queue_delay;
        // Waiting past a deadline in the queue would only turn it into a drop.
        let due = view.earliest_deadline.map_or(due, |d| due.min(d));
        if view.now >= due {
            self.dispatch(self.max_batch_size, view.now)
        } else {
            Decision::Wait { until: due }
        }
    }
}

/// Fraction of the objective that the batches a tail request waits through
/// may take (see [`AdaptivePolicy::reading_between_batches`]). The rest is
/// left for the network, encoding and noise.
const TAIL_BUDGET: f64 = 0.8;
/// Throughput a batch cap may give up for shorter batches: the cap is the
/// smallest batch within this fraction of the rows per second of the largest
/// batch the objective allows.
const EFFICIENCY_SLACK: f64 = 0.05;
/// Utilisation per instance above which waiting for a larger batch pays.
const BUSY_UTILISATION: f64 = 0.8;

/// Decides from the measured cost of batches, the arrival rate and the
/// deadlines in the queue; see docs/scheduling.md.
#[derive(Debug)]
pub struct AdaptivePolicy {
    max_batch_size: usize,
    slo: Duration,
    cost: Arc<CostModel>,
    /// Batches, its own included, that the tail request waits through.
    tail_batches: f64,
}

impl AdaptivePolicy {
    /// An adaptive policy for batches of at most `max_batch_size` rows under objective `slo`.
    pub fn new(max_batch_size: usize, slo: Duration, cost: Arc<CostModel>) -> Self {
        Self {
            max_batch_size: max_batch_size.max(1),
            slo,
            cost,
            tail_batches: 2.0,
        }
    }

    /// The same policy where a request that arrives during a batch is read
    /// only once the batch ends (`yes`: network threads that share the
    /// workers' cores and do not preempt a batch).
    ///
    /// Where requests are read as they arrive, the tail request is the one
    /// that arrives just after a batch started: it waits for that batch,
    /// then runs in the next, and two batches running long must fit the
    /// objective. Where they are read between batches, the tail waits
    /// through three: the batch it arrived during, unread; then one that
    /// started before it was queued, since the network threads read what
    /// arrived during a batch in their turn and the next batch can start
    /// before they have read it all (or they read it at a scheduler tick
    /// in the middle of that batch); then its own. The server's own queue
    /// time of online requests under a flood shows the middle one: its
    /// 99th percentile is a whole batch, although every online request fits
    /// in the next batch (docs/scheduling.md).
    #[must_use]
    pub fn reading_between_batches(mut self, yes: bool) -> Self {
        self.tail_batches = if yes { 3.0 } else { 2.0 };
        self
    }

    /// The most rows a batch takes: the smallest batch that is within
    /// [`EFFICIENCY_SLACK`] of the most rows per second the objective
    /// allows, so that a long queue is served in short batches when longer
    /// ones would not be faster (at least 1). `line` is the cost model's
    /// line, read once per decision.
    pub fn batch_cap(&self, line: &Line) -> usize {
        let fits = self.latency_cap(line);
        let (a, c) = (line.fixed_ns, line.per_row_ns);
        if a <= 0.0 {
            // No fixed cost: one row is as efficient as any batch.
            return 1;
        }
        // Rows per ns at the latency cap, and the batch size b reaching a
        // fraction of it: b / (a + c·b) >= target  <=>  b >= target·a / (1 - target·c).
        let target = (1.0 - EFFICIENCY_SLACK) * fits as f64 / (a + c * fits as f64);
        let knee = (target * a / (1.0 - target * c)).ceil();
        if knee.is_finite() && knee >= 1.0 {
            (knee as usize).min(fits)
        } else {
            fits
        }
    }

    /// The largest batch whose time when it runs long, once for each batch
    /// the tail request waits through, fits the objective's tail budget (at
    /// least 1: a model slower than its objective still runs).
    fn latency_cap(&self, line: &Line) -> usize {
        let budget_ns =
            self.slo.as_nanos() as f64 * TAIL_BUDGET / self.tail_batches / line.tail_factor;
        if line.per_row_ns <= 0.0 {
            return if line.fixed_ns <= budget_ns {
                self.max_batch_size
            } else {
                1
            };
        }
        let fits = ((budget_ns - line.fixed_ns) / line.per_row_ns).floor();
        if fits < 1.0 {
            1
        } else {
            (fits as usize).min(self.max_batch_size)
        }
    }

    /// The batch size at which `instances` instances, each busy for t(b) per
    /// b rows, keep up with `rate` rows/s at [`BUSY_UTILISATION`]; `None`
    /// when no batch size does (the fixed cost is not what limits them).
    fn size_for_rate(line: &Line, rate: f64, instances: usize) -> Option<f64> {
        let (a, c) = (line.fixed_ns / 1e9, line.per_row_ns / 1e9);
        let capacity = instances as f64 * BUSY_UTILISATION - rate * c;
        (a > 0.0 && capacity > 0.0).then(|| rate * a / capacity)
    }
}

impl Policy for AdaptivePolicy {
    fn decide(&self, view: &QueueView) -> Decision {
        let line = self.cost.line();
        let cap = self.batch_cap(&line);
        let rows = view.queued_rows.min(cap);
        let this_batch = line.predict(rows);
        let dispatch = Decision::Dispatch {
            max_rows: cap,
            expire_before: view.now + this_batch,
            urgent_before: Some(view.now + this_batch + line.predict(cap)),
        };
        // One instance: dispatching at once is work-conserving and the batch
        // size follows the load by itself; idling only adds latency.
        if view.queued_rows >= cap || view.instances <= 1 || view.arrival_rate <= 0.0 {
            return dispatch;
        }
        // Several instances: a free one that takes a small batch may leave no
        // instance free when a larger batch has formed. Wait only while the
        // instances could not keep up with batches this small, for no longer
        // than the next instance frees, one fixed cost, and the deadlines allow.
        let rate = view.arrival_rate;
        let per_instance_load =
            rate * this_batch.as_secs_f64() / (view.instances as f64 * rows as f64);
        if per_instance_load <= BUSY_UTILISATION {
            return dispatch;
        }
        let Some(target) = Self::size_for_rate(&line, rate, view.instances) else {
            return dispatch;
        };
        let target = (target.ceil() as usize).min(cap);
        if target <= rows {
            return dispatch;
        }
        let fill = Duration::from_secs_f64((target - rows) as f64 / rate);
        let mut until = (view.now + fill).min(view.oldest_arrival + line.predict(1));
        if let Some(free) = view.next_free {
            until = until.min(free);
        }
        if let Some(deadline) = view.earliest_deadline {
            until = until.min(
                deadline
                    .checked_sub(line.predict(target))
                    .unwrap_or(view.now),
            );
        }
        if until <= view.now {
            dispatch
        } else {
            Decision::Wait { until }
        }
    }

    fn admit(&self, view: &AdmissionView) -> bool {
        let Some(deadline) = view.deadline else {
            return true;
        };
        if !self.cost.is_calibrated() {
            return true;
        }
        let line = self.cost.line();
        if view.rows_ahead == 0 && view.idle_instance {
            // An idle instance runs this request now, so there is no queue for
            // the reserve and the tail factor to insure against: it needs only
            // its typical time. Held to them, an overload that left both at
            // their bounds would refuse everything after it, and with no
            // batch run neither could ever learn that the overload had passed.
            let budget = deadline.saturating_duration_since(view.now);
            return line.predict(view.rows) <= budget.mul_f64(SERVER_SHARE);
        }
        // The queue ahead drains in full batches at the cap, spread over the
        // instances; then this request's own batch runs, with the rows left
        // over and those that arrive before it starts (they join it: its
        // batch is larger than what is queued now). Then the allowance for
        // batches that run long (below).
        let cap = self.batch_cap(&line);
        let instances = view.instances.max(1) as f64;
        let full_batch = line.predict(cap);
        let free_at = view.earliest_free.max(view.now);
        let free_in = (free_at - view.now).as_secs_f64();
        // Higher priorities keep arriving while this request waits and are
        // served first: they take their share of the instances' time (over
        // many batches, a typical batch's, not a slow one's) and the wait
        // stretches by the share left. Without this a low-priority request
        // is admitted for a wait that the traffic overtaking it makes
        // longer; near its deadline it turns urgent and then delays the
        // higher priority it was admitted behind.
        let share = view.overtaking_rate * line.predict(cap).as_secs_f64() / cap as f64 / instances;
        let spare = 1.0 - share;
        let ahead =
            free_in + view.rows_ahead as f64 * full_batch.as_secs_f64() / cap as f64 / instances;
        let wait = if ahead <= 0.0 {
            0.0
        } else if spare > 0.0 {
            ahead / spare
        } else {
            // The higher priorities alone keep the instances busy.
            return false;
        };
        let rows_ahead = view.rows_ahead + (view.overtaking_rate * wait).round() as usize;
        // Full batches each instance runs before this request's own.
        let in_turn = (rows_ahead / cap) as f64 / instances;
        let drain = full_batch.mul_f64(in_turn);
        let start = free_at + drain;
        // Arrivals at this priority or below fill its batch where there is room.
        let joining =
            (view.arrival_rate - view.overtaking_rate).max(0.0) * (start - view.now).as_secs_f64();
        let own_rows = (rows_ahead % cap + view.rows) as f64 + joining;
        let own = line.predict((own_rows.ceil() as usize).min(cap));
        // Any batch may run long, by the tail factor, but a run of them
        // seldom all do: n batches in turn exceed n typical ones by about
        // sqrt(n) times one batch's excess (the spread of a sum of
        // independent times), not n times. Taken n times, a queue of
        // transformer_large rows (one row a batch) looked half again as long
        // as it drains, and requests it would have served in time were
        // refused. A slow minute, which makes every batch long at once, is
        // not independent: that is what the reserve learns.
        let excess = (line.tail_factor - 1.0).max(0.0);
        let (full, last) = (full_batch.as_secs_f64(), own.as_secs_f64());
        let long = Duration::from_secs_f64(excess * (in_turn * full * full + last * last).sqrt());
        // Only the server's share of the time left is the server's to use;
        // the reserve keeps back more while admitted requests turn out late.
        let usable = (SERVER_SHARE - view.reserve).max(0.0);
        start + own + long
            <= view.now + deadline.saturating_duration_since(view.now).mul_f64(usable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_policy(delay_us: u64, preferred: &[usize]) -> StaticPolicy {
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
            instances: 1,
            next_free: None,
            arrival_rate: 0.0,
        }
    }

    fn max_rows(d: Decision) -> usize {
        match d {
            Decision::Dispatch { max_rows, .. } => max_rows,
            Decision::Wait { .. } => panic!("expected a dispatch, got {d:?}"),
        }
    }

    #[test]
    fn static_zero_delay_dispatches_whatever_waits() {
        assert_eq!(max_rows(static_policy(0, &[]).decide(&view(1, 0))), 8);
    }

    #[test]
    fn static_full_batch_dispatches_at_once() {
        let p = static_policy(10_000, &[]);
        assert_eq!(max_rows(p.decide(&view(8, 0))), 8);
        assert_eq!(max_rows(p.decide(&view(20, 0))), 8);
    }

    #[test]
    fn static_waits_for_the_delay_then_dispatches() {
        let p = static_policy(1_000, &[]);
        let v = view(3, 400);
        assert_eq!(
            p.decide(&v),
            Decision::Wait {
                until: v.oldest_arrival + Duration::from_micros(1_000)
            }
        );
        assert_eq!(max_rows(p.decide(&view(3, 1_000))), 8);
    }

    #[test]
    fn static_largest_preferred_size_dispatches_without_waiting() {
        let p = static_policy(1_000_000, &[2, 4]);
        assert_eq!(max_rows(p.decide(&view(5, 0))), 4);
        assert_eq!(max_rows(p.decide(&view(3, 0))), 2);
        assert!(matches!(p.decide(&view(1, 0)), Decision::Wait { .. }));
    }

    #[test]
    fn static_never_waits_past_a_deadline() {
        let p = static_policy(1_000_000, &[]);
        let mut v = view(1, 0);
        v.earliest_deadline = Some(v.now + Duration::from_millis(2));
        assert_eq!(
            p.decide(&v),
            Decision::Wait {
                until: v.now + Duration::from_millis(2)
            }
        );
    }

    /// t(b) = fixed + per_row·b, in microseconds.
    fn cost(fixed_us: f64, per_row_us: f64, max: usize) -> Arc<CostModel> {
        cost_with_tail(fixed_us, per_row_us, max, 1.0)
    }

    /// As [`cost`], with one batch in four of every size running
    /// `factor` times long: the tail factor is `factor`.
    fn cost_with_tail(fixed_us: f64, per_row_us: f64, max: usize, factor: f64) -> Arc<CostModel> {
        let model = CostModel::new(max);
        for b in [1, max / 2, max] {
            let typical = (fixed_us + per_row_us * b as f64) * 1e3;
            for i in 0..16 {
                let ns = if i % 4 == 0 {
                    typical * factor
                } else {
                    typical
                };
                model.observe(b.max(1), Duration::from_nanos(ns as u64));
            }
        }
        model.refit();
        Arc::new(model)
    }

    fn cap(p: &AdaptivePolicy) -> usize {
        p.batch_cap(&p.cost.line())
    }

    /// One row arriving at `now` with `rows_ahead` queued before it, one
    /// idle instance, no reserve.
    fn admission(
        now: Instant,
        rows_ahead: usize,
        deadline_ms: u64,
        arrival_rate: f64,
    ) -> AdmissionView {
        AdmissionView {
            now,
            rows: 1,
            deadline: Some(now + Duration::from_millis(deadline_ms)),
            rows_ahead,
            instances: 1,
            earliest_free: now,
            idle_instance: true,
            arrival_rate,
            overtaking_rate: 0.0,
            reserve: 0.0,
        }
    }

    fn adaptive(fixed_us: f64, per_row_us: f64, slo_ms: u64) -> AdaptivePolicy {
        AdaptivePolicy::new(
            64,
            Duration::from_millis(slo_ms),
            cost(fixed_us, per_row_us, 64),
        )
    }

    #[test]
    fn adaptive_caps_batches_so_two_fit_the_objective() {
        let latency_cap = |p: &AdaptivePolicy| p.latency_cap(&p.cost.line());
        // mlp-like: 2.1 ms at 64 fits twice in 10 ms.
        assert_eq!(latency_cap(&adaptive(400.0, 27.0, 10)), 64);
        // 1 ms per row: 2·(0.2 + b) ms <= 0.8·20 ms gives b = 7.
        assert_eq!(latency_cap(&adaptive(200.0, 1000.0, 20)), 7);
        // Slower than the objective even alone: still one row at a time.
        assert_eq!(cap(&adaptive(50_000.0, 1000.0, 20)), 1);
    }

    #[test]
    fn adaptive_caps_batches_so_three_fit_where_requests_are_read_between_batches() {
        let latency_cap = |p: &AdaptivePolicy| p.latency_cap(&p.cost.line());
        let between = |p: AdaptivePolicy| p.reading_between_batches(true);
        // 3·(0.2 + b) ms <= 0.8·20 ms gives b = 5 (two batches: 7, above).
        assert_eq!(latency_cap(&between(adaptive(200.0, 1000.0, 20))), 5);
        // mlp-like, 10 ms: 3·(0.4 + 0.027·b) <= 8 gives b = 83, so 64 still;
        // with a slower row (60 µs), 37 rather than 60.
        assert_eq!(latency_cap(&between(adaptive(400.0, 27.0, 10))), 64);
        assert_eq!(latency_cap(&between(adaptive(400.0, 60.0, 10))), 37);
        assert_eq!(latency_cap(&adaptive(400.0, 60.0, 10)), 60);
        // And back: read as they arrive, two batches again.
        let back = between(adaptive(200.0, 1000.0, 20)).reading_between_batches(false);
        assert_eq!(latency_cap(&back), 7);
    }

    #[test]
    fn adaptive_cap_is_the_smallest_batch_near_the_best_throughput() {
        // 64 rows give 30.1 rows/ms; 51 rows are the first to give 95% of it.
        assert_eq!(cap(&adaptive(400.0, 27.0, 10)), 51);
        // 7 rows give 0.97 rows/ms; 3 give 0.94 (95% is 0.92), 2 only 0.91.
        assert_eq!(cap(&adaptive(200.0, 1000.0, 20)), 3);
        // No fixed cost: batching gains nothing, so a queue is served row by row.
        assert_eq!(cap(&adaptive(0.0, 7000.0, 200)), 1);
    }

    #[test]
    fn adaptive_single_instance_never_waits() {
        let p = adaptive(400.0, 27.0, 10);
        let mut v = view(1, 0);
        v.arrival_rate = 20_000.0;
        assert_eq!(max_rows(p.decide(&v)), cap(&p));
    }

    #[test]
    fn adaptive_dispatch_drops_what_cannot_finish_and_promotes_the_urgent() {
        let p = adaptive(1000.0, 0.0, 100);
        let v = view(4, 0);
        match p.decide(&v) {
            Decision::Dispatch {
                expire_before,
                urgent_before,
                ..
            } => {
                assert_eq!(expire_before, v.now + Duration::from_millis(1));
                assert_eq!(urgent_before, Some(v.now + Duration::from_millis(2)));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn adaptive_several_instances_wait_only_under_load_with_a_fixed_cost() {
        let p = adaptive(1000.0, 10.0, 100);
        let mut v = view(1, 0);
        v.instances = 2;
        // Light load: no reason to wait.
        v.arrival_rate = 100.0;
        assert!(matches!(p.decide(&v), Decision::Dispatch { .. }));
        // Heavy load: batches of one would swamp both instances; wait a little.
        v.arrival_rate = 20_000.0;
        match p.decide(&v) {
            Decision::Wait { until } => assert!(until <= v.now + Duration::from_millis(1)),
            d => panic!("{d:?}"),
        }
        // ...but never past a deadline that the larger batch would then miss.
        v.earliest_deadline = Some(v.now + Duration::from_micros(500));
        assert!(matches!(p.decide(&v), Decision::Dispatch { .. }));
    }

    #[test]
    fn adaptive_never_waits_when_batching_brings_no_gain() {
        let p = adaptive(0.0, 7000.0, 200);
        let mut v = view(1, 0);
        v.instances = 4;
        v.arrival_rate = 500.0;
        assert!(matches!(p.decide(&v), Decision::Dispatch { .. }));
    }

    #[test]
    fn adaptive_admits_only_what_can_finish_in_time() {
        let p = adaptive(1000.0, 100.0, 100);
        let now = Instant::now();
        let admission = |rows_ahead, deadline_ms| admission(now, rows_ahead, deadline_ms, 0.0);
        // Nothing ahead: its own batch, 1.1 ms, within 85% of the time to the deadline.
        assert!(p.admit(&admission(0, 2)));
        assert!(!p.admit(&admission(0, 1)));
        // The cap is 47 rows (5.7 ms). 350 rows ahead: seven full batches
        // (39.9 ms), then 21 rows and its own (3.2 ms): 43.1 ms, which needs
        // a deadline of 50.7 ms.
        assert_eq!(cap(&p), 47);
        assert!(p.admit(&admission(350, 51)));
        assert!(!p.admit(&admission(350, 50)));
        // A reserve learnt from late requests keeps back more: 43.1 ms is
        // then 65% of at least 66.3 ms.
        let reserved = |deadline_ms| AdmissionView {
            reserve: 0.2,
            ..admission(350, deadline_ms)
        };
        assert!(!p.admit(&reserved(66)));
        assert!(p.admit(&reserved(67)));
        // No deadline: admitted.
        let mut open = admission(10_000, 1);
        open.deadline = None;
        assert!(p.admit(&open));
    }

    #[test]
    fn a_queue_is_not_taken_as_every_batch_in_it_running_long() {
        // transformer_large-like: 2 ms a row, no fixed cost (one row a
        // batch), and one batch in four 1.5 times as long.
        let p = AdaptivePolicy::new(
            32,
            Duration::from_millis(100),
            cost_with_tail(0.0, 2000.0, 32, 1.5),
        );
        assert_eq!(p.cost.line().tail_factor, 1.5);
        assert_eq!(cap(&p), 1);
        let now = Instant::now();
        // 30 rows ahead: 60 ms of typical batches and its own 2 ms, and the
        // allowance for long ones, 0.5 x sqrt(30 x 2² + 2²) = 5.6 ms: 67.6
        // ms, 85% of 79.5 ms. Every batch taken as long (3 ms each, 93 ms)
        // would need a deadline of 109.4 ms.
        assert!(p.admit(&admission(now, 30, 80, 0.0)));
        assert!(!p.admit(&admission(now, 30, 79, 0.0)));
        // Nothing ahead but a batch running: its own batch still runs long.
        let busy = AdmissionView {
            idle_instance: false,
            ..admission(now, 0, 4, 0.0)
        };
        // 3 ms is 85% of 3.5 ms.
        assert!(p.admit(&busy));
        assert!(!p.admit(&AdmissionView {
            deadline: Some(now + Duration::from_micros(3400)),
            ..busy
        }));
    }

    #[test]
    fn an_idle_instance_admits_what_it_can_run_in_time_whatever_the_reserve() {
        let p = adaptive(1000.0, 100.0, 100);
        let now = Instant::now();
        let after_an_overload = |rows_ahead, deadline_ms| AdmissionView {
            reserve: crate::feedback::MAX_RESERVE,
            ..admission(now, rows_ahead, deadline_ms, 0.0)
        };
        // Its own batch, 1.1 ms, is within 85% of 3 ms, though not within the
        // 35% the reserve leaves (1.05 ms).
        assert!(p.admit(&after_an_overload(0, 3)));
        assert!(!p.admit(&after_an_overload(0, 1)));
        // With a row ahead, or the instance busy, the reserve holds.
        assert!(!p.admit(&after_an_overload(1, 3)));
        let busy = AdmissionView {
            earliest_free: now + Duration::from_micros(100),
            idle_instance: false,
            ..after_an_overload(0, 3)
        };
        assert!(!p.admit(&busy));
        // A batch past its predicted end is still running.
        let overrunning = AdmissionView {
            idle_instance: false,
            ..after_an_overload(0, 3)
        };
        assert!(!p.admit(&overrunning));
    }

    #[test]
    fn adaptive_admission_counts_the_rows_that_will_join_its_batch() {
        let p = adaptive(1000.0, 100.0, 100);
        let now = Instant::now();
        let behind_a_full_batch =
            |arrival_rate, deadline_ms| admission(now, 64, deadline_ms, arrival_rate);
        // The cap is 47 rows (5.7 ms). Nothing arriving: a full batch ahead,
        // then its own with the 17 rows left and itself (2.8 ms): 8.5 ms,
        // 85% of 10 ms.
        assert!(p.admit(&behind_a_full_batch(0.0, 11)));
        assert!(!p.admit(&behind_a_full_batch(0.0, 9)));
        // 10,000 rows/s: 57 rows arrive while the batch ahead runs and fill
        // its own batch to the cap: 5.7 + 5.7 = 11.4 ms, 85% of 13.4 ms.
        assert!(!p.admit(&behind_a_full_batch(10_000.0, 11)));
        assert!(!p.admit(&behind_a_full_batch(10_000.0, 13)));
        assert!(p.admit(&behind_a_full_batch(10_000.0, 14)));
    }

    #[test]
    fn adaptive_admission_counts_the_higher_priorities_that_will_overtake_it() {
        let p = adaptive(1000.0, 100.0, 100);
        let now = Instant::now();
        // 4,000 rows/s arrive; `overtaking` of them at a higher priority.
        let behind_350 = |overtaking, deadline_ms| AdmissionView {
            overtaking_rate: overtaking,
            ..admission(now, 350, deadline_ms, 4_000.0)
        };
        // None overtakes: seven full batches (39.9 ms), and the arrivals
        // fill its own to the cap (5.7 ms): 45.6 ms, 85% of 53.6 ms.
        assert!(!p.admit(&behind_350(0.0, 53)));
        assert!(p.admit(&behind_350(0.0, 54)));
        // All of them overtake: they take 49% of the instance (0.12 ms a row
        // at the cap), so the 42.4 ms ahead stretches to 82.4 ms, in which
        // 330 rows cut in: fourteen full batches (79.8 ms), then 22 rows and
        // its own (3.3 ms): 83.1 ms, 85% of 97.8 ms.
        assert!(!p.admit(&behind_350(4_000.0, 97)));
        assert!(p.admit(&behind_350(4_000.0, 98)));
        // Higher priorities that alone keep the instance busy starve it:
        // refused whatever its deadline, unless nothing is ahead of it.
        assert!(!p.admit(&behind_350(9_000.0, 10_000)));
        assert!(p.admit(&AdmissionView {
            overtaking_rate: 9_000.0,
            ..admission(now, 0, 10, 9_000.0)
        }));
    }
}
