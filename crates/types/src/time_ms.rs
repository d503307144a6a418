use std::fmt;

/// An event time: milliseconds since the Unix epoch, UTC. Serialized as an RFC 3339 string.
///
/// grantwatch's logic never reads the wall clock: every "now" is an `EventTime` taken from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = DateTime))]
pub struct EventTime(pub i64);

pub const MS_PER_DAY: i64 = 86_400_000;

impl EventTime {
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Days since the epoch (floor).
    pub fn day(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }

    pub fn minus_days(self, days: u32) -> EventTime {
        EventTime(self.0.saturating_sub(i64::from(days) * MS_PER_DAY))
    }

    /// Parses RFC 3339 (`2022-11-10T16:24:34Z`, with optional fraction and offset).
    pub fn parse_rfc3339(s: &str) -> Option<EventTime> {
        if let Some(fast) = parse_fast(s.as_bytes()) {
            return Some(fast);
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok().map(EventTime)
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let fmt = if self.0 % 1000 == 0 {
                    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")
                } else {
                    time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                    )
                };
                t.format(&fmt).unwrap_or_else(|_| self.0.to_string())
            }
            Err(_) => self.0.to_string(),
        }
    }

    /// `YYYY-MM-DD` of this time's UTC day.
    pub fn date_string(self) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(self.0.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        t.format(&fmt).unwrap_or_default()
    }
}

/// The CloudTrail shape `YYYY-MM-DDTHH:MM:SSZ`, parsed without allocation (it is on the hot path).
fn parse_fast(b: &[u8]) -> Option<EventTime> {
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(EventTime(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000))
}

/// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventTime::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_full_parser() {
        for s in ["2022-11-10T16:24:34Z", "1970-01-01T00:00:00Z", "2024-02-29T23:59:59Z", "2000-03-01T00:00:00Z"] {
            let full = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
            assert_eq!(parse_fast(s.as_bytes()).unwrap().0, full.unix_timestamp() * 1000, "{s}");
            assert_eq!(EventTime::parse_rfc3339(s).unwrap().to_rfc3339(), s);
        }
    }

    #[test]
    fn offsets_and_fractions_parse() {
        let t = EventTime::parse_rfc3339("2022-11-10T18:24:34.250+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2022-11-10T16:24:34.250Z");
        assert!(EventTime::parse_rfc3339("yesterday").is_none());
        assert!(EventTime::parse_rfc3339("2022-13-10T16:24:34Z").is_none());
    }
}
