//! Event times that cannot be true, refused before they reach any stage.
//!
//! Event time drives everything: the as-of time of `analyze` (default: the latest event), every window,
//! every watermark. One record dated 9999 would make every identity look inactive, persist in the state,
//! and stall a service's watermark for good. So every record's time is checked against the moment its
//! carrier says it was delivered — the delivery time in a CloudTrail S3 object's name, the file's
//! modification time, the LookupEvents poll, the Kafka record's timestamp — and refused when it is:
//!
//! - **after its delivery** by more than [`TimeBounds::max_ahead_ms`] (nothing is logged before it
//!   happens; the allowance covers clock skew between the caller, CloudTrail and the carrier);
//! - **before its delivery** by more than [`TimeBounds::max_behind_ms`], when the carrier's time is a
//!   real delivery time (CloudTrail delivers within minutes, late services within hours; a file's
//!   modification time is no delivery time, as copies and archives keep old events in new files);
//! - **before [`TimeBounds::floor_ms`]**, whatever the carrier (2006-01-01: before any AWS API existed).
//!
//! Refused records are quarantined with the reason; the rest of the input is unaffected.

use grantwatch_types::EventTime;

/// 2006-01-01T00:00:00Z.
pub const DEFAULT_FLOOR_MS: i64 = 1_136_073_600_000;
/// One day of allowance for clock skew and odd carriers.
pub const DEFAULT_MAX_AHEAD_MS: i64 = 24 * 3_600_000;
/// Thirty days: far longer than any CloudTrail delivery delay.
pub const DEFAULT_MAX_BEHIND_MS: i64 = 30 * 24 * 3_600_000;

/// How far an event time may stray from its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub max_ahead_ms: i64,
    pub max_behind_ms: i64,
    pub floor_ms: i64,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds {
            max_ahead_ms: DEFAULT_MAX_AHEAD_MS,
            max_behind_ms: DEFAULT_MAX_BEHIND_MS,
            floor_ms: DEFAULT_FLOOR_MS,
        }
    }
}

/// What the carrier of a record says about when it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A true delivery time: an S3 object's name or timestamp, a LookupEvents poll, a Kafka timestamp.
    At(EventTime),
    /// Only an upper bound: a local file's modification time.
    NotAfter(EventTime),
    /// Nothing known (stdin).
    Unknown,
}

/// Why an event time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeRejected {
    #[error("event time {event} is after its delivery at {delivered} (allowed skew {allowed_ms} ms)")]
    AfterDelivery { event: TimeFmt, delivered: TimeFmt, allowed_ms: i64 },
    #[error("event time {event} is more than {allowed_ms} ms before its delivery at {delivered}")]
    LongBeforeDelivery { event: TimeFmt, delivered: TimeFmt, allowed_ms: i64 },
    #[error("event time {event} is before {floor}, when no AWS API existed")]
    BeforeFloor { event: TimeFmt, floor: TimeFmt },
}

/// An [`EventTime`] shown as RFC 3339 in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeFmt(pub EventTime);

impl std::fmt::Display for TimeFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339())
    }
}

impl TimeBounds {
    /// Checks one event time against its delivery.
    pub fn check(&self, event: EventTime, delivery: Delivery) -> Result<(), TimeRejected> {
        let t = event.millis();
        if t < self.floor_ms {
            return Err(TimeRejected::BeforeFloor { event: TimeFmt(event), floor: TimeFmt(EventTime(self.floor_ms)) });
        }
        let (delivered, is_delivery) = match delivery {
            Delivery::At(d) => (d, true),
            Delivery::NotAfter(d) => (d, false),
            Delivery::Unknown => return Ok(()),
        };
        let d = delivered.millis();
        if t > d.saturating_add(self.max_ahead_ms) {
            return Err(TimeRejected::AfterDelivery {
                event: TimeFmt(event),
                delivered: TimeFmt(delivered),
                allowed_ms: self.max_ahead_ms,
            });
        }
        if is_delivery && t < d.saturating_sub(self.max_behind_ms) {
            return Err(TimeRejected::LongBeforeDelivery {
                event: TimeFmt(event),
                delivered: TimeFmt(delivered),
                allowed_ms: self.max_behind_ms,
            });
        }
        Ok(())
    }
}

/// The delivery time CloudTrail writes into an S3 object's name (`..._20240305T1210Z_...`): minutes, UTC.
pub fn parse_delivery_stamp(stamp: &str) -> Option<EventTime> {
    let b = stamp.as_bytes();
    if b.len() != 14 || b.get(8) != Some(&b'T') || b.get(13) != Some(&b'Z') {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:00Z",
        stamp.get(0..4)?,
        stamp.get(4..6)?,
        stamp.get(6..8)?,
        stamp.get(9..11)?,
        stamp.get(11..13)?
    );
    EventTime::parse_rfc3339(&iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> EventTime {
        EventTime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_record_from_the_future_is_refused_whatever_the_carrier_says() {
        let b = TimeBounds::default();
        let delivered = t("2024-03-05T12:10:00Z");
        assert!(b.check(t("2024-03-05T12:04:00Z"), Delivery::At(delivered)).is_ok());
        assert!(b.check(t("2024-03-06T11:00:00Z"), Delivery::At(delivered)).is_ok(), "within the skew allowance");
        let e = b.check(t("9999-12-31T00:00:00Z"), Delivery::At(delivered)).unwrap_err();
        assert!(matches!(e, TimeRejected::AfterDelivery { .. }));
        assert!(e.to_string().contains("9999-12-31T00:00:00Z"), "{e}");
        assert!(b.check(t("9999-12-31T00:00:00Z"), Delivery::NotAfter(delivered)).is_err());
        assert!(b.check(t("9999-12-31T00:00:00Z"), Delivery::Unknown).is_ok(), "no carrier time: nothing to say");
    }

    #[test]
    fn old_events_are_refused_only_against_a_true_delivery_time() {
        let b = TimeBounds::default();
        let delivered = t("2024-03-05T12:10:00Z");
        assert!(b.check(t("2024-02-20T00:00:00Z"), Delivery::At(delivered)).is_ok());
        assert!(matches!(
            b.check(t("2023-01-01T00:00:00Z"), Delivery::At(delivered)),
            Err(TimeRejected::LongBeforeDelivery { .. })
        ));
        assert!(b.check(t("2023-01-01T00:00:00Z"), Delivery::NotAfter(delivered)).is_ok(), "an archive copied today");
        assert!(matches!(b.check(t("1970-01-01T00:00:00Z"), Delivery::Unknown), Err(TimeRejected::BeforeFloor { .. })));
    }

    #[test]
    fn delivery_stamps_parse() {
        assert_eq!(parse_delivery_stamp("20240305T1210Z"), Some(t("2024-03-05T12:10:00Z")));
        assert_eq!(parse_delivery_stamp("20241305T1210Z"), None);
        assert_eq!(parse_delivery_stamp("2024030T51210Z"), None);
        assert_eq!(parse_delivery_stamp("é0240305T121Z"), None);
    }
}
