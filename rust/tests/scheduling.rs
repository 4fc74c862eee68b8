//! Properties of the queue and the policies under arbitrary workloads, and
//! the queue under concurrent submitters and consumers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use _core::cost::CostModel;
use _core::model::BatchingConfig;
use _core::policy::{AdaptivePolicy, Policy, StaticPolicy};
use _core::queue::{DropReason, Job, Queue};
use _core::scheduler::{Rejected, Scheduler};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Item {
    id: usize,
    rows: usize,
    priority: u32,
    deadline: Option<Instant>,
    arrival: Instant,
}

impl Job for Item {
    fn rows(&self) -> usize {
        self.rows
    }
    fn priority(&self) -> u32 {
        self.priority
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn arrival(&self) -> Instant {
        self.arrival
    }
}

/// A generated request: rows, priority, and a deadline that is either long
/// past, far ahead (seconds), or absent, so that whether it must be served
/// does not depend on how fast the test runs.
fn item_strategy() -> impl Strategy<Value = (usize, u32, Option<bool>)> {
    (
        1usize..=8,
        1u32..=3,
        prop_oneof![Just(None), any::<bool>().prop_map(Some)],
    )
}

const MAX_ROWS: usize = 16;

fn cost() -> Arc<CostModel> {
    let cost = CostModel::new(MAX_ROWS);
    for rows in [1, 4, 16] {
        cost.observe(rows, Duration::from_micros(100 + 10 * rows as u64));
    }
    cost.refit();
    Arc::new(cost)
}

fn policies() -> Vec<(&'static str, Box<dyn Policy>)> {
    vec![
        (
            "static",
            Box::new(StaticPolicy::new(MAX_ROWS, &BatchingConfig::default())),
        ),
        (
            "adaptive",
            Box::new(AdaptivePolicy::new(
                MAX_ROWS,
                Duration::from_secs(60),
                cost(),
            )),
        ),
    ]
}

/// Submits everything, closes the queue, drains it; returns the batches in
/// dispatch order and the dropped items. Requests refused at submit (only
/// those already past their deadline may be) count as dropped.
fn drain(policy: Box<dyn Policy>, items: &[Item]) -> (Vec<Vec<Item>>, Vec<(Item, DropReason)>) {
    let s = Scheduler::new(Queue::new(10_000, 3), policy, cost(), MAX_ROWS, 1);
    let mut dropped = Vec::new();
    for item in items {
        match s.submit(item.clone()) {
            Ok(()) => {}
            Err(Rejected::Late(item)) => {
                assert!(
                    item.deadline.is_some_and(|d| d <= Instant::now()),
                    "refused in time: {item:?}"
                );
                dropped.push((item, DropReason::Expired));
            }
            Err(other) => panic!("refused: {other:?}"),
        }
    }
    s.close(1);
    let mut batches = Vec::new();
    while let Some(batch) = s.next_batch(0, &mut |item, reason| dropped.push((item, reason))) {
        batches.push(batch);
    }
    (batches, dropped)
}

fn make_items(spec: &[(usize, u32, Option<bool>)]) -> Vec<Item> {
    let now = Instant::now();
    spec.iter()
        .enumerate()
        .map(|(id, &(rows, priority, future))| Item {
            id,
            rows,
            priority,
            deadline: future.map(|f| {
                if f {
                    now + Duration::from_secs(3600)
                } else {
                    now - Duration::from_millis(1)
                }
            }),
            arrival: now,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_request_is_answered_exactly_once(spec in prop::collection::vec(item_strategy(), 0..200)) {
        let items = make_items(&spec);
        for (_, policy) in policies() {
            let (batches, dropped) = drain(policy, &items);
            let mut seen = HashSet::new();
            for item in batches.iter().flatten().chain(dropped.iter().map(|(i, _)| i)) {
                prop_assert!(seen.insert(item.id), "request {} answered twice", item.id);
            }
            prop_assert_eq!(seen.len(), items.len());
        }
    }

    #[test]
    fn no_batch_is_larger_than_the_maximum(spec in prop::collection::vec(item_strategy(), 0..200)) {
        let items = make_items(&spec);
        for (_, policy) in policies() {
            let (batches, _) = drain(policy, &items);
            for batch in &batches {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.iter().map(|i| i.rows).sum::<usize>() <= MAX_ROWS);
            }
        }
    }

    #[test]
    fn no_request_is_executed_after_its_deadline(spec in prop::collection::vec(item_strategy(), 0..200)) {
        let items = make_items(&spec);
        for (_, policy) in policies() {
            let (batches, dropped) = drain(policy, &items);
            let now = Instant::now();
            for item in batches.iter().flatten() {
                prop_assert!(item.deadline.is_none_or(|d| d > now), "request {} dispatched late", item.id);
            }
            for (item, reason) in &dropped {
                prop_assert_eq!(*reason, DropReason::Expired);
                prop_assert!(item.deadline.is_some_and(|d| d <= now));
            }
        }
    }

    #[test]
    fn priority_order_across_lanes_and_edf_within(spec in prop::collection::vec(item_strategy(), 0..200)) {
        let items = make_items(&spec);
        // The static policy never promotes urgent requests: strict priority.
        let (_, policy) = policies().swap_remove(0);
        let (batches, _) = drain(policy, &items);
        let order: Vec<&Item> = batches.iter().flatten().collect();
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            prop_assert!(a.priority <= b.priority, "priority {} after {}", a.priority, b.priority);
            if a.priority == b.priority {
                // Earliest deadline first; no deadline last; arrival order breaks ties.
                let key = |i: &Item| (i.deadline.is_none(), i.deadline, i.id);
                prop_assert!(key(a) <= key(b), "{} before {} breaks EDF", a.id, b.id);
            }
        }
    }
}

#[test]
fn urgent_requests_keep_priority_order_among_themselves() {
    // Urgent requests of both levels: the online ones go first, then the batch ones.
    let cost = Arc::new(CostModel::new(MAX_ROWS));
    cost.observe(MAX_ROWS, Duration::from_millis(100));
    let policy = AdaptivePolicy::new(MAX_ROWS, Duration::from_secs(60), Arc::clone(&cost));
    let s = Scheduler::new(Queue::new(1000, 2), Box::new(policy), cost, MAX_ROWS, 1);
    let now = Instant::now();
    let soon = Some(now + Duration::from_millis(150));
    for id in 0..14 {
        s.submit(Item {
            id,
            rows: 1,
            priority: 2,
            deadline: soon,
            arrival: now,
        })
        .unwrap();
    }
    for id in 20..24 {
        s.submit(Item {
            id,
            rows: 1,
            priority: 1,
            deadline: soon,
            arrival: now,
        })
        .unwrap();
    }
    let first = s
        .next_batch(0, &mut |_, r| panic!("dropped: {r:?}"))
        .unwrap();
    let ids: Vec<usize> = first.iter().map(|i| i.id).collect();
    assert_eq!(&ids[..4], &[20, 21, 22, 23]);
    assert_eq!(ids.len(), MAX_ROWS);
}

#[test]
fn urgent_low_priority_requests_are_not_starved() {
    // A flood of priority-1 requests with slack, and one priority-2 request
    // whose deadline cannot wait for another batch (each takes 100 ms): it
    // goes in the first batch.
    let cost = Arc::new(CostModel::new(MAX_ROWS));
    cost.observe(MAX_ROWS, Duration::from_millis(100));
    let policy = AdaptivePolicy::new(MAX_ROWS, Duration::from_secs(60), Arc::clone(&cost));
    let s = Scheduler::new(Queue::new(1000, 2), Box::new(policy), cost, MAX_ROWS, 1);
    let now = Instant::now();
    // Admitted while the queue was empty; the flood arrives after it.
    let urgent = Some(now + Duration::from_millis(150));
    s.submit(Item {
        id: 100,
        rows: 1,
        priority: 2,
        deadline: urgent,
        arrival: now,
    })
    .unwrap();
    for id in 0..100 {
        let deadline = Some(now + Duration::from_secs(30));
        s.submit(Item {
            id,
            rows: 1,
            priority: 1,
            deadline,
            arrival: now,
        })
        .unwrap();
    }
    let first = s
        .next_batch(0, &mut |_, r| panic!("dropped: {r:?}"))
        .unwrap();
    assert_eq!(first[0].id, 100, "the urgent request leads the batch");
    assert!(first[1..].iter().all(|i| i.priority == 1));
}

#[test]
fn predicted_misses_are_dropped_before_compute() {
    // Each batch is predicted to take 260 µs: a request due in 100 µs cannot make it.
    let cost = cost();
    let policy = AdaptivePolicy::new(MAX_ROWS, Duration::from_secs(60), Arc::clone(&cost));
    let s = Scheduler::new(Queue::new(1000, 2), Box::new(policy), cost, MAX_ROWS, 1);
    let now = Instant::now();
    s.submit(Item {
        id: 0,
        rows: 1,
        priority: 1,
        deadline: Some(now + Duration::from_secs(5)),
        arrival: now,
    })
    .unwrap();
    let doomed = Item {
        id: 1,
        rows: 1,
        priority: 1,
        deadline: Some(now + Duration::from_micros(100)),
        arrival: now,
    };
    // Admission already refuses it...
    assert!(s.submit(doomed.clone()).is_err());
    let batch = s
        .next_batch(0, &mut |_, r| panic!("dropped: {r:?}"))
        .unwrap();
    assert_eq!(batch.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0]);
    // One admitted while it still looked feasible, that the model then
    // became too slow for (the cost model learnt a 10 s batch), is dropped
    // at dispatch without running.
    let slow = Arc::new(CostModel::new(MAX_ROWS));
    let policy = AdaptivePolicy::new(MAX_ROWS, Duration::from_secs(60), Arc::clone(&slow));
    let s = Scheduler::new(
        Queue::new(1000, 2),
        Box::new(policy),
        Arc::clone(&slow),
        MAX_ROWS,
        1,
    );
    let soon = Some(Instant::now() + Duration::from_secs(5));
    s.submit(Item {
        id: 2,
        rows: 1,
        priority: 1,
        deadline: soon,
        arrival: now,
    })
    .unwrap();
    slow.observe(1, Duration::from_secs(10));
    s.close(1);
    let mut dropped = Vec::new();
    assert!(s
        .next_batch(0, &mut |item: Item, r| dropped.push((item.id, r)))
        .is_none());
    assert_eq!(dropped, vec![(2, DropReason::Expired)]);
}

#[test]
fn concurrent_submitters_and_consumers_lose_nothing() {
    // 8 submitting threads x 200,000 requests, 2 consuming workers.
    const SUBMITTERS: usize = 8;
    const PER_SUBMITTER: usize = 200_000;
    let total = SUBMITTERS * PER_SUBMITTER;
    let s = Arc::new(Scheduler::new(
        Queue::new(4096, 2),
        Box::new(StaticPolicy::new(64, &BatchingConfig::default())) as Box<dyn Policy>,
        Arc::new(CostModel::new(64)),
        64,
        2,
    ));
    let refused = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|instance| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(batch) = s.next_batch(instance, &mut |_: Item, r: DropReason| {
                    panic!("dropped: {r:?}")
                }) {
                    assert!(batch.len() <= 64);
                    seen.extend(batch.into_iter().map(|i| i.id));
                }
                seen
            })
        })
        .collect();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let s = Arc::clone(&s);
            let refused = Arc::clone(&refused);
            thread::spawn(move || {
                let now = Instant::now();
                for k in 0..PER_SUBMITTER {
                    let mut item = Item {
                        id: t * PER_SUBMITTER + k,
                        rows: 1,
                        priority: 1 + (k % 2) as u32,
                        deadline: None,
                        arrival: now,
                    };
                    // A full queue hands the item back: retry until admitted.
                    loop {
                        match s.submit(item) {
                            Ok(()) => break,
                            Err(Rejected::Full { item: back, .. }) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                item = back;
                                thread::yield_now();
                            }
                            Err(other) => panic!("unexpected refusal: {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in submitters {
        t.join().unwrap();
    }
    s.close(2);
    let mut seen = vec![false; total];
    let mut count = 0;
    for c in consumers {
        for id in c.join().unwrap() {
            assert!(!seen[id], "request {id} dispatched twice");
            seen[id] = true;
            count += 1;
        }
    }
    assert_eq!(count, total, "requests lost");
    assert_eq!(s.queued(), 0);
}
