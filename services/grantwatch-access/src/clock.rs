//! The clock: the one place in grantwatch that reads the wall clock.
//!
//! Everything else takes its time from the data (event time). The access service is different by
//! nature: a grant expires at a time of day, whether or not any event arrives. So the service reads
//! "now" through [`Clock`], which the tests replace with a [`ManualClock`] they move by hand, and
//! the logic below it (`grantwatch-access`, the ledger) still never reads a clock: it is passed the
//! time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use grantwatch_types::EventTime;
use tokio::sync::Notify;

/// Where the service gets "now".
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> EventTime;
    /// Woken when a manual clock moves, so a scheduler asleep until a deadline looks again. The
    /// system clock never notifies: a sleeper wakes by its own timer.
    fn moved(&self) -> Option<&Notify> {
        None
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The only read of the wall clock in grantwatch (ARCHITECTURE.md, "Invariants").
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> EventTime {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        EventTime(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock the tests set and advance.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
    moved: Notify,
}

impl ManualClock {
    pub fn new(start: EventTime) -> Arc<ManualClock> {
        Arc::new(ManualClock { now_ms: AtomicI64::new(start.0), moved: Notify::new() })
    }

    pub fn set(&self, t: EventTime) {
        self.now_ms.store(t.0, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    pub fn advance_secs(&self, secs: i64) {
        self.now_ms.fetch_add(secs * 1000, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EventTime {
        EventTime(self.now_ms.load(Ordering::SeqCst))
    }

    fn moved(&self) -> Option<&Notify> {
        Some(&self.moved)
    }
}
