//! Event-time order from input that is only roughly in order, in bounded memory.
//!
//! CloudTrail delivers an account's and region's events in files every few minutes, so events arrive
//! out of event-time order by up to ~15 minutes. Stages that need time order (windows, sequences,
//! first-time anomalies) get it from this buffer: an item is held until the watermark — the highest
//! event time seen minus the out-of-orderness bound — passes it, then released, oldest first.
//!
//! A runner that knows more about what is still to come may cap the watermark with a *limit*: the file
//! runner sets it to the delivery time of the oldest CloudTrail file not yet read, since an event in a
//! later file happened, within the bound, after it. That holds back events of files that span hours
//! (daily exports) until every file that could hold earlier events is read.
//!
//! Memory is bounded by count, not by time: when the buffer holds `capacity` items, the oldest is
//! released at once, ahead of the watermark. Overflow therefore shows up as items released out of
//! order ("late" to the stage, which still processes them), never as memory. An item older than the
//! watermark on arrival is released at once, late. Ties release in arrival order, so the output is a
//! function of the input sequence alone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An item released from the buffer.
#[derive(Debug)]
pub struct Released<T> {
    pub time_ms: i64,
    pub item: T,
    /// The item came out after a later one (it arrived behind the watermark, or overflow pushed it).
    pub late: bool,
}

struct Entry<T> {
    time_ms: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.time_ms, self.seq) == (other.time_ms, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time_ms, self.seq).cmp(&(other.time_ms, other.seq))
    }
}

/// A bounded event-time reorder buffer.
pub struct ReorderBuffer<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    bound_ms: i64,
    capacity: usize,
    seq: u64,
    max_seen: Option<i64>,
    /// The time of the last item released: anything older released later is late.
    released_up_to: Option<i64>,
    /// A cap on the watermark set by the runner (see the module docs).
    limit: Option<i64>,
}

impl<T> ReorderBuffer<T> {
    /// `bound_ms`: the out-of-orderness accepted; `capacity`: items held at most (at least 1).
    pub fn new(bound_ms: i64, capacity: usize) -> Self {
        ReorderBuffer {
            heap: BinaryHeap::new(),
            bound_ms: bound_ms.max(0),
            capacity: capacity.max(1),
            seq: 0,
            max_seen: None,
            released_up_to: None,
            limit: None,
        }
    }

    /// The watermark: the highest event time seen (capped by the limit) minus the bound.
    pub fn watermark(&self) -> Option<i64> {
        let top = match (self.max_seen, self.limit) {
            (Some(m), Some(l)) => m.min(l),
            (m, _) => m?,
        };
        Some(top.saturating_sub(self.bound_ms))
    }

    /// Caps the watermark at `limit` (`None`: no cap) and releases what is now due.
    pub fn set_limit(&mut self, limit: Option<i64>, release: &mut dyn FnMut(Released<T>)) {
        self.limit = limit;
        self.release_due(release);
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Adds an item; calls `release` for every item now due, oldest first.
    pub fn push(&mut self, time_ms: i64, item: T, release: &mut dyn FnMut(Released<T>)) {
        self.max_seen = Some(self.max_seen.map_or(time_ms, |m| m.max(time_ms)));
        self.heap.push(Reverse(Entry { time_ms, seq: self.seq, item }));
        self.seq += 1;
        self.release_due(release);
    }

    fn release_due(&mut self, release: &mut dyn FnMut(Released<T>)) {
        let watermark = self.watermark().unwrap_or(i64::MIN);
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.time_ms > watermark && self.heap.len() <= self.capacity {
                break;
            }
            if let Some(Reverse(e)) = self.heap.pop() {
                self.emit(e, release);
            }
        }
    }

    /// Releases everything held, oldest first (end of input).
    pub fn drain(&mut self, release: &mut dyn FnMut(Released<T>)) {
        while let Some(Reverse(e)) = self.heap.pop() {
            self.emit(e, release);
        }
    }

    fn emit(&mut self, e: Entry<T>, release: &mut dyn FnMut(Released<T>)) {
        let late = self.released_up_to.is_some_and(|r| e.time_ms < r);
        self.released_up_to = Some(self.released_up_to.map_or(e.time_ms, |r| r.max(e.time_ms)));
        release(Released { time_ms: e.time_ms, item: e.item, late });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(bound: i64, cap: usize, times: &[i64]) -> Vec<(i64, usize, bool)> {
        let mut b = ReorderBuffer::new(bound, cap);
        let mut out = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            b.push(t, i, &mut |r| out.push((r.time_ms, r.item, r.late)));
        }
        b.drain(&mut |r| out.push((r.time_ms, r.item, r.late)));
        out
    }

    #[test]
    fn events_within_the_bound_come_out_in_time_order() {
        let out = run(10, 100, &[5, 3, 12, 8, 30, 25, 41]);
        let times: Vec<i64> = out.iter().map(|o| o.0).collect();
        assert_eq!(times, [3, 5, 8, 12, 25, 30, 41]);
        assert!(out.iter().all(|o| !o.2));
    }

    #[test]
    fn an_event_behind_the_watermark_is_released_at_once_and_late() {
        let out = run(10, 100, &[100, 50, 101]);
        assert_eq!(out[0], (50, 1, false), "nothing older was released yet, so it is not out of order");
        let out = run(10, 100, &[100, 120, 105, 60]);
        assert_eq!(out.iter().find(|o| o.0 == 60).map(|o| o.2), Some(true));
    }

    #[test]
    fn a_limit_holds_events_back_until_it_moves() {
        let mut b = ReorderBuffer::new(10, 100);
        let mut out = Vec::new();
        b.set_limit(Some(50), &mut |r| out.push(r.time_ms));
        for t in [100, 30, 200, 45, 60] {
            b.push(t, (), &mut |r| out.push(r.time_ms));
        }
        assert_eq!(out, [30], "only what is 10 before the limit is out");
        b.push(35, (), &mut |r| out.push(r.time_ms));
        assert_eq!(out, [30, 35]);
        b.set_limit(Some(1_000), &mut |r| out.push(r.time_ms));
        assert_eq!(out, [30, 35, 45, 60, 100], "the highest time seen bounds the watermark again");
        b.set_limit(None, &mut |r| out.push(r.time_ms));
        b.drain(&mut |r| out.push(r.time_ms));
        assert_eq!(out, [30, 35, 45, 60, 100, 200]);
    }

    #[test]
    fn overflow_releases_the_oldest_early_instead_of_growing() {
        let mut b = ReorderBuffer::new(1_000_000, 3);
        let mut out = Vec::new();
        for t in [10, 20, 30, 40, 5] {
            b.push(t, (), &mut |r| out.push((r.time_ms, r.late)));
            assert!(b.len() <= 3);
        }
        assert_eq!(out, [(10, false), (5, true)]);
    }

    proptest! {
        /// Whatever the input: everything comes out once, memory stays bounded, and items released
        /// in order (not late) form a non-decreasing sequence.
        #[test]
        fn complete_bounded_and_ordered(times in proptest::collection::vec(0i64..1_000, 0..200), cap in 1usize..20, bound in 0i64..300) {
            let mut b = ReorderBuffer::new(bound, cap);
            let mut out = Vec::new();
            for (i, &t) in times.iter().enumerate() {
                b.push(t, i, &mut |r| out.push(r));
                prop_assert!(b.len() <= cap);
            }
            b.drain(&mut |r| out.push(r));
            let mut ids: Vec<usize> = out.iter().map(|r| r.item).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..times.len()).collect::<Vec<_>>());
            let mut last = i64::MIN;
            for r in &out {
                if !r.late {
                    prop_assert!(r.time_ms >= last);
                    last = r.time_ms;
                }
            }
        }
    }
}
