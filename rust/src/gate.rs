//! The admission gate of a queue: a bounded count of admitted items and a
//! closed flag, the one piece of custom synchronisation in the core.
//!
//! # Protocol
//! A store-buffering pattern made safe with sequentially consistent fences:
//! `enter` reserves a slot (fetch_add), then a fence, then reads `closed`;
//! `close` sets `closed`, then a fence; `is_finished` reads `closed`, then a
//! fence, then reads the count. Whichever fence comes first in their single
//! total order, either the consumer's count sees the reservation (it waits
//! for the item) or the entering thread sees `closed` (the item is refused):
//! no item is admitted after the last consumer has left. The fences, not
//! sequentially consistent accesses, carry the argument because loom models
//! fences exactly; `tests::loom` checks every interleaving (`make loom`).

#[cfg(tidal_loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(tidal_loom))]
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

/// Why `enter` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shut {
    /// `capacity` items are admitted.
    Full,
    /// The gate is closed.
    Closed,
}

/// A bounded admission count with a closed flag.
#[derive(Debug)]
pub struct Gate {
    /// Items admitted and not yet left; above `capacity` only transiently,
    /// while a refused `enter` backs out.
    admitted: AtomicUsize,
    capacity: usize,
    closed: AtomicBool,
}

impl Gate {
    /// A gate admitting at most `capacity` items at a time.
    pub fn new(capacity: usize) -> Self {
        Self {
            admitted: AtomicUsize::new(0),
            capacity,
            closed: AtomicBool::new(false),
        }
    }

    /// Reserves a slot for one item.
    pub fn enter(&self) -> Result<(), Shut> {
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave(1);
            return Err(Shut::Closed);
        }
        if before >= self.capacity {
            self.leave(1);
            return Err(Shut::Full);
        }
        Ok(())
    }

    /// `n` admitted items have left.
    pub fn leave(&self, n: usize) {
        self.admitted.fetch_sub(n, Ordering::SeqCst);
    }

    /// Refuses every later `enter`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closed, and every admitted item has left.
    pub fn is_finished(&self) -> bool {
        if !self.is_closed() {
            return false;
        }
        fence(Ordering::SeqCst);
        self.admitted.load(Ordering::SeqCst) == 0
    }

    /// Items admitted now (a transient over-count is clamped).
    pub fn len(&self) -> usize {
        self.admitted.load(Ordering::SeqCst).min(self.capacity)
    }

    /// Whether no item is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(all(test, not(tidal_loom)))]
mod tests {
    use super::*;

    #[test]
    fn capacity() {
        let gate = Gate::new(2);
        assert_eq!(gate.enter(), Ok(()));
        assert_eq!(gate.enter(), Ok(()));
        assert_eq!(gate.enter(), Err(Shut::Full));
        assert_eq!(gate.len(), 2);
        gate.leave(1);
        assert_eq!(gate.enter(), Ok(()));
    }

    #[test]
    fn closed_refuses_and_finishes_when_empty() {
        let gate = Gate::new(2);
        gate.enter().unwrap();
        gate.close();
        assert_eq!(gate.enter(), Err(Shut::Closed));
        assert!(!gate.is_finished());
        gate.leave(1);
        assert!(gate.is_finished());
    }
}

#[cfg(all(test, tidal_loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// An item admitted concurrently with `close` is never stranded: if the
    /// consumer saw the gate finished, the item was refused.
    #[test]
    fn loom_no_admission_after_finish() {
        loom::model(|| {
            let gate = Arc::new(Gate::new(1));
            let producer = {
                let gate = Arc::clone(&gate);
                thread::spawn(move || gate.enter().is_ok())
            };
            gate.close();
            let finished = gate.is_finished();
            let admitted = producer.join().unwrap();
            assert!(
                !(finished && admitted),
                "an item was admitted after the consumer left"
            );
        });
    }

    /// Two producers racing for the last slot: exactly one wins.
    #[test]
    fn loom_capacity_holds_under_races() {
        loom::model(|| {
            let gate = Arc::new(Gate::new(1));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let gate = Arc::clone(&gate);
                    thread::spawn(move || gate.enter().is_ok())
                })
                .collect();
            let wins = racers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&w| w)
                .count();
            assert_eq!(wins, 1);
            assert_eq!(gate.len(), 1);
        });
    }
}
