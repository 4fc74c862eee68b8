//! A model's bounded request queue: a lock-free inbox for submitters and
//! priority lanes ordered by deadline for the consumers.
//!
//! # Submission
//! [`Queue::push`] never takes a lock: it reserves a slot in an atomic count
//! of admitted requests, refusing the request (and handing it back) when the
//! queue is at capacity or closed, then sends it through an unbounded
//! crossbeam channel. The capacity bound is the count, not the channel.
//!
//! # Consumption
//! Consumers hold the [`Lanes`] lock while they form a batch: they move what
//! the inbox holds into one binary heap per priority level, earliest deadline
//! first within a level (requests without a deadline after those with one,
//! in arrival order), and take from the highest level first.
//!
//! # Shutdown
//! After [`Queue::close`] no request is admitted, and consumers keep taking
//! until every admitted request has left the queue; the [`Gate`] guarantees
//! that a push racing with close is either refused or seen by the consumers.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, MutexGuard};

use crate::gate::{Gate, Shut};

/// What the queue needs to know about a queued item.
pub trait Job: Send {
    /// Rows the item adds to a batch.
    fn rows(&self) -> usize;
    /// Priority level, 1 (first) and up.
    fn priority(&self) -> u32;
    /// When the item stops being worth computing.
    fn deadline(&self) -> Option<Instant>;
    /// When the item was admitted.
    fn arrival(&self) -> Instant;
    /// Whether its submitter has gone away.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// Whether it may share a batch with `other`.
    fn batches_with(&self, _other: &Self) -> bool {
        true
    }
}

/// Why a push was refused; the item comes back to the caller.
#[derive(Debug)]
pub enum Refused<T> {
    /// `capacity` items are already admitted.
    Full { item: T, capacity: usize },
    /// The queue no longer admits items.
    Closed(T),
}

/// Why an admitted item left the queue without being dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Expired,
    Cancelled,
}

enum Message<T> {
    Item(T),
    /// Wakes a consumer blocked on the inbox (on close).
    Wake,
}

/// A bounded multi-producer, multi-consumer priority queue.
pub struct Queue<T> {
    inbox_tx: Sender<Message<T>>,
    inbox_rx: Receiver<Message<T>>,
    /// Counts items admitted and not yet taken or dropped.
    gate: Gate,
    /// Rows admitted and waiting, per priority level (for admission, which
    /// must not take the consumers' lock).
    lane_rows: Vec<AtomicUsize>,
    /// Rows ever admitted, per priority level (for the arrival rates).
    admitted_rows: Vec<AtomicU64>,
    lanes: Mutex<Lanes<T>>,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<T: Job> Queue<T> {
    /// A queue admitting at most `capacity` items over `levels` priority levels.
    pub fn new(capacity: usize, levels: u32) -> Self {
        let (inbox_tx, inbox_rx) = crossbeam_channel::unbounded();
        let levels = levels.max(1) as usize;
        Self {
            inbox_tx,
            inbox_rx,
            gate: Gate::new(capacity),
            lane_rows: (0..levels).map(|_| AtomicUsize::new(0)).collect(),
            admitted_rows: (0..levels).map(|_| AtomicU64::new(0)).collect(),
            lanes: Mutex::new(Lanes::new(levels)),
        }
    }

    /// Admits `item`, or hands it back when the queue is full or closed.
    pub fn push(&self, item: T) -> Result<(), Refused<T>> {
        match self.gate.enter() {
            Ok(()) => {}
            Err(Shut::Closed) => return Err(Refused::Closed(item)),
            Err(Shut::Full) => {
                return Err(Refused::Full {
                    item,
                    capacity: self.gate.capacity(),
                })
            }
        }
        let rows = item.rows();
        let lane = self.lane(item.priority());
        self.lane_rows[lane].fetch_add(rows, Ordering::Relaxed);
        self.admitted_rows[lane].fetch_add(rows as u64, Ordering::Relaxed);
        // The receiver lives in `self`, so an unbounded send cannot fail.
        let _ = self.inbox_tx.send(Message::Item(item));
        Ok(())
    }

    /// Rows waiting at priority `priority` or higher: served before a new
    /// request of that priority (approximately: deadlines reorder a level).
    pub fn rows_ahead(&self, priority: u32) -> usize {
        self.lane_rows[..=self.lane(priority)]
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }

    /// Rows admitted since the queue was made, per priority level (highest first).
    pub fn admitted_rows(&self) -> Vec<u64> {
        self.admitted_rows
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    /// Priority levels, i.e. lanes.
    pub fn levels(&self) -> usize {
        self.lane_rows.len()
    }

    /// The lane (0-based, highest priority first) that serves `priority`;
    /// priorities beyond the last level share the last lane.
    pub fn lane(&self, priority: u32) -> usize {
        lane_of(priority, self.lane_rows.len())
    }

    /// Items admitted and still waiting.
    pub fn len(&self) -> usize {
        self.gate.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops admitting; wakes `consumers` blocked consumers so they drain and stop.
    pub fn close(&self, consumers: usize) {
        self.gate.close();
        for _ in 0..consumers {
            let _ = self.inbox_tx.send(Message::Wake);
        }
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }

    /// Whether the queue is closed and every admitted item has left it.
    pub fn is_finished(&self) -> bool {
        self.gate.is_finished()
    }

    /// Exclusive access for one consumer forming a batch.
    pub fn consumer(&self) -> Consumer<'_, T> {
        Consumer {
            queue: self,
            lanes: self.lanes.lock(),
        }
    }

    /// An item left the queue (taken or dropped).
    fn departed(&self, item: &T) {
        self.lane_rows[self.lane(item.priority())].fetch_sub(item.rows(), Ordering::Relaxed);
        self.gate.leave(1);
    }
}

/// The lane (0-based) of priority level `priority` among `lanes`.
fn lane_of(priority: u32, lanes: usize) -> usize {
    (priority.max(1) as usize - 1).min(lanes - 1)
}

/// One consumer's hold on the lanes; see the module docs.
pub struct Consumer<'a, T> {
    queue: &'a Queue<T>,
    lanes: MutexGuard<'a, Lanes<T>>,
}

impl<T> std::fmt::Debug for Consumer<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("rows", &self.lanes.rows)
            .finish_non_exhaustive()
    }
}

impl<T: Job> Consumer<'_, T> {
    /// Moves everything in the inbox into the lanes without blocking.
    pub fn drain_inbox(&mut self) {
        while let Ok(message) = self.queue.inbox_rx.try_recv() {
            self.accept(message);
        }
    }

    /// Blocks until an item arrives, a wake-up, or `until`; returns whether
    /// anything arrived (the item is moved into the lanes).
    pub fn wait_until(&mut self, until: Instant) -> bool {
        match self.queue.inbox_rx.recv_deadline(until) {
            Ok(message) => {
                self.accept(message);
                true
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
        }
    }

    fn accept(&mut self, message: Message<T>) {
        if let Message::Item(item) = message {
            self.lanes.insert(item);
        }
    }

    /// Rows waiting in the lanes (including any not yet found stale).
    pub fn rows(&self) -> usize {
        self.lanes.rows
    }

    /// Whether the lanes hold nothing.
    pub fn is_empty(&self) -> bool {
        self.lanes.lanes.iter().all(BinaryHeap::is_empty)
    }

    /// Removes stale items (deadline at or before `expire_before`, or
    /// cancelled) from the front of every lane, handing each to `dropped`.
    pub fn drop_stale_heads(
        &mut self,
        expire_before: Instant,
        dropped: &mut impl FnMut(T, DropReason),
    ) {
        let mut removed = 0;
        for lane in &mut self.lanes.lanes {
            while let Some(reason) = lane.peek().and_then(|e| stale(&e.item, expire_before)) {
                let item = lane.pop().expect("peeked").item;
                removed += item.rows();
                self.queue.departed(&item);
                dropped(item, reason);
            }
        }
        self.lanes.rows -= removed;
    }

    /// The front items of each lane, highest priority first.
    pub fn heads(&self) -> impl Iterator<Item = &T> {
        self.lanes
            .lanes
            .iter()
            .filter_map(|l| l.peek().map(|e| &e.item))
    }

    /// Takes up to `max_rows` rows for a batch. First the urgent (deadline
    /// before `urgent_before`: they cannot wait for another batch), by
    /// priority level and earliest deadline first within a level; then the
    /// others the same way. So a lower level is served in the slack that the
    /// higher levels' deadlines leave, and never displaces a higher-level
    /// request that could not wait. The first item is taken even if it alone
    /// exceeds `max_rows` (the model's own limit was checked at submit). Stops
    /// at the first item that does not fit or cannot share the batch. Stale
    /// items met on the way (deadline at or before `expire_before`, or
    /// cancelled) go to `dropped`.
    pub fn take(
        &mut self,
        max_rows: usize,
        expire_before: Instant,
        urgent_before: Option<Instant>,
        dropped: &mut impl FnMut(T, DropReason),
    ) -> Vec<T> {
        let mut batch = Batch {
            items: Vec::new(),
            rows: 0,
            max_rows,
            removed: 0,
        };
        if let Some(urgent_before) = urgent_before {
            for lane in 0..self.lanes.lanes.len() {
                self.drop_stale_heads(expire_before, dropped);
                while self.lanes.lanes[lane]
                    .peek()
                    .and_then(|e| e.deadline)
                    .is_some_and(|d| d < urgent_before)
                {
                    if !self.take_head(lane, &mut batch) {
                        return self.finish(batch);
                    }
                }
            }
        }
        for lane in 0..self.lanes.lanes.len() {
            while let Some(reason) = self.lanes.lanes[lane]
                .peek()
                .map(|e| stale(&e.item, expire_before))
            {
                if let Some(reason) = reason {
                    let item = self.lanes.lanes[lane].pop().expect("peeked").item;
                    batch.removed += item.rows();
                    self.queue.departed(&item);
                    dropped(item, reason);
                    continue;
                }
                if !self.take_head(lane, &mut batch) {
                    return self.finish(batch);
                }
            }
        }
        self.finish(batch)
    }

    /// Moves the head of `lane` into `batch` if it fits; `false` if it does not.
    fn take_head(&mut self, lane: usize, batch: &mut Batch<T>) -> bool {
        let heap = &mut self.lanes.lanes[lane];
        let Some(entry) = heap.peek() else {
            return true;
        };
        // The first request always goes: a policy's smaller cap limits how
        // many join it, never whether a request larger than the cap is served.
        let fits = batch.items.is_empty() || batch.rows + entry.item.rows() <= batch.max_rows;
        let compatible = batch
            .items
            .first()
            .is_none_or(|first| entry.item.batches_with(first));
        if !fits || !compatible {
            return false;
        }
        let item = heap.pop().expect("peeked").item;
        batch.rows += item.rows();
        self.queue.departed(&item);
        batch.items.push(item);
        true
    }

    fn finish(&mut self, batch: Batch<T>) -> Vec<T> {
        self.lanes.rows -= batch.rows + batch.removed;
        batch.items
    }
}

/// A batch being formed by [`Consumer::take`].
struct Batch<T> {
    items: Vec<T>,
    rows: usize,
    max_rows: usize,
    /// Rows of stale items dropped while forming it.
    removed: usize,
}

fn stale<T: Job>(item: &T, expire_before: Instant) -> Option<DropReason> {
    if item.deadline().is_some_and(|d| d <= expire_before) {
        Some(DropReason::Expired)
    } else if item.is_cancelled() {
        Some(DropReason::Cancelled)
    } else {
        None
    }
}

/// The consumer side: one heap per priority level.
struct Lanes<T> {
    lanes: Vec<BinaryHeap<Entry<T>>>,
    /// Rows held in all lanes.
    rows: usize,
    /// Arrival order, to break deadline ties first-come first-served.
    next_seq: u64,
}

impl<T: Job> Lanes<T> {
    fn new(levels: usize) -> Self {
        Self {
            lanes: (0..levels).map(|_| BinaryHeap::new()).collect(),
            rows: 0,
            next_seq: 0,
        }
    }

    fn insert(&mut self, item: T) {
        let lane = lane_of(item.priority(), self.lanes.len());
        self.rows += item.rows();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.lanes[lane].push(Entry {
            deadline: item.deadline(),
            seq,
            item,
        });
    }
}

/// A heap entry ordered so that the heap's top is the earliest deadline,
/// then the earliest arrival.
struct Entry<T> {
    deadline: Option<Instant>,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn urgency(&self) -> (bool, Option<Instant>, u64) {
        (self.deadline.is_none(), self.deadline, self.seq)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // BinaryHeap is a max-heap: the most urgent entry must compare greatest.
        other.urgency().cmp(&self.urgency())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A queue item for tests of the queue and the policies.
    #[derive(Debug, Clone)]
    pub(crate) struct TestJob {
        pub(crate) id: u64,
        pub(crate) rows: usize,
        pub(crate) priority: u32,
        pub(crate) deadline: Option<Instant>,
        pub(crate) arrival: Instant,
        pub(crate) shape: u8,
    }

    impl TestJob {
        pub(crate) fn new(id: u64) -> Self {
            Self {
                id,
                rows: 1,
                priority: 1,
                deadline: None,
                arrival: Instant::now(),
                shape: 0,
            }
        }
    }

    impl Job for TestJob {
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
        fn batches_with(&self, other: &Self) -> bool {
            self.shape == other.shape
        }
    }

    fn ids(jobs: &[TestJob]) -> Vec<u64> {
        jobs.iter().map(|j| j.id).collect()
    }

    fn no_drops(_: TestJob, reason: DropReason) {
        panic!("unexpected drop: {reason:?}");
    }

    #[test]
    fn capacity_is_enforced_and_items_come_back() {
        let q = Queue::new(2, 1);
        q.push(TestJob::new(1)).unwrap();
        q.push(TestJob::new(2)).unwrap();
        match q.push(TestJob::new(3)) {
            Err(Refused::Full { item, capacity }) => assert_eq!((item.id, capacity), (3, 2)),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(q.len(), 2);
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(
            ids(&c.take(8, Instant::now(), None, &mut no_drops)),
            vec![1, 2]
        );
        drop(c);
        assert!(q.is_empty());
        q.push(TestJob::new(4)).unwrap();
    }

    #[test]
    fn closed_queue_refuses_and_finishes_when_drained() {
        let q = Queue::new(4, 1);
        q.push(TestJob::new(1)).unwrap();
        q.close(1);
        assert!(matches!(q.push(TestJob::new(2)), Err(Refused::Closed(_))));
        assert!(!q.is_finished());
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(c.take(8, Instant::now(), None, &mut no_drops).len(), 1);
        drop(c);
        assert!(q.is_finished());
    }

    #[test]
    fn earliest_deadline_first_within_a_lane_fifo_without_deadlines() {
        let q = Queue::new(16, 1);
        let now = Instant::now();
        let at = |ms| Some(now + Duration::from_millis(ms));
        for (id, deadline) in [(1, None), (2, at(30)), (3, at(10)), (4, None), (5, at(20))] {
            q.push(TestJob {
                deadline,
                ..TestJob::new(id)
            })
            .unwrap();
        }
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(
            ids(&c.take(16, now, None, &mut no_drops)),
            vec![3, 5, 2, 1, 4]
        );
    }

    #[test]
    fn higher_priority_lane_first() {
        let q = Queue::new(16, 2);
        for (id, priority) in [(1, 2), (2, 1), (3, 2), (4, 1)] {
            q.push(TestJob {
                priority,
                ..TestJob::new(id)
            })
            .unwrap();
        }
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(
            ids(&c.take(3, Instant::now(), None, &mut no_drops)),
            vec![2, 4, 1]
        );
    }

    #[test]
    fn take_respects_rows_and_shape_compatibility() {
        let q = Queue::new(16, 1);
        q.push(TestJob {
            rows: 3,
            ..TestJob::new(1)
        })
        .unwrap();
        q.push(TestJob {
            rows: 3,
            ..TestJob::new(2)
        })
        .unwrap();
        q.push(TestJob {
            rows: 1,
            shape: 1,
            ..TestJob::new(3)
        })
        .unwrap();
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(c.rows(), 7);
        assert_eq!(
            ids(&c.take(5, Instant::now(), None, &mut no_drops)),
            vec![1]
        );
        assert_eq!(
            ids(&c.take(8, Instant::now(), None, &mut no_drops)),
            vec![2]
        );
        assert_eq!(
            ids(&c.take(8, Instant::now(), None, &mut no_drops)),
            vec![3]
        );
        assert_eq!(c.rows(), 0);
    }

    #[test]
    fn a_request_larger_than_the_cap_is_taken_alone() {
        let q = Queue::new(16, 1);
        for id in [1, 2] {
            q.push(TestJob {
                rows: 3,
                ..TestJob::new(id)
            })
            .unwrap();
        }
        let mut c = q.consumer();
        c.drain_inbox();
        assert_eq!(
            ids(&c.take(2, Instant::now(), None, &mut no_drops)),
            vec![1]
        );
        assert_eq!(
            ids(&c.take(2, Instant::now(), None, &mut no_drops)),
            vec![2]
        );
    }

    #[test]
    fn expired_items_are_dropped_not_taken() {
        let q = Queue::new(16, 1);
        let now = Instant::now();
        q.push(TestJob {
            deadline: Some(now),
            ..TestJob::new(1)
        })
        .unwrap();
        q.push(TestJob::new(2)).unwrap();
        let mut c = q.consumer();
        c.drain_inbox();
        let mut dropped = Vec::new();
        let batch = c.take(8, now, None, &mut |j: TestJob, r| dropped.push((j.id, r)));
        assert_eq!(ids(&batch), vec![2]);
        assert_eq!(dropped, vec![(1, DropReason::Expired)]);
        drop(c);
        assert!(q.is_empty());
    }
}
