//! The part of a statement's `Condition` block that a request model can judge: `aws:CurrentTime`
//! under the date operators, when the request's time is known ([`RequestContext`]). It is how a
//! time-locked grant (`"DateLessThan": {"aws:CurrentTime": "<expiry>"}`, as permissions on demand
//! installs) is allowed before its expiry and denied after it, whether or not it was removed.
//!
//! Every other condition stays unknown, as it always was: the statement applies conditionally. The
//! elements of a block are ANDed (as in IAM), so one element judged false makes the whole block
//! false, and the block holds only when every element is judged true.

use grantwatch_types::EventTime;
use serde_json::Value;

/// What is known about a request besides who, what and on what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// `aws:CurrentTime`: when the request is made. `None`: unknown, and no condition is judged.
    pub current_time: Option<EventTime>,
}

impl RequestContext {
    /// Nothing known: every condition is unknown (the model's behavior without a context).
    pub const UNKNOWN: RequestContext = RequestContext { current_time: None };

    /// A request made at `time`.
    pub fn at(time: EventTime) -> RequestContext {
        RequestContext { current_time: Some(time) }
    }

    /// Judges a `Condition` block (compact JSON, as [`crate::iam::Statement::condition`] keeps it).
    /// Without a known time this is [`Judgement::Unknown`] at once, without parsing.
    pub fn judge(&self, condition: &str) -> Judgement {
        let Some(now) = self.current_time else { return Judgement::Unknown };
        let Ok(Value::Object(block)) = serde_json::from_str::<Value>(condition) else { return Judgement::Unknown };
        let mut all = Judgement::Holds;
        for (operator, keys) in &block {
            let Value::Object(keys) = keys else { return Judgement::Unknown };
            for (key, values) in keys {
                match judge_element(operator, key, values, now) {
                    Judgement::Fails => return Judgement::Fails,
                    Judgement::Unknown => all = Judgement::Unknown,
                    Judgement::Holds => {}
                }
            }
        }
        all
    }
}

/// What a condition says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// It holds: the statement applies as if unconditional.
    Holds,
    /// It does not hold: the statement does not apply.
    Fails,
    /// Not known: the statement applies conditionally.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateOp {
    Equals,
    NotEquals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// The date operators, by IAM's names. `…IfExists` is the same for `aws:CurrentTime`, which every
/// request carries.
fn date_op(operator: &str) -> Option<DateOp> {
    let op = operator.strip_suffix("IfExists").unwrap_or(operator);
    Some(match op {
        "DateEquals" => DateOp::Equals,
        "DateNotEquals" => DateOp::NotEquals,
        "DateLessThan" => DateOp::LessThan,
        "DateLessThanEquals" => DateOp::LessThanEquals,
        "DateGreaterThan" => DateOp::GreaterThan,
        "DateGreaterThanEquals" => DateOp::GreaterThanEquals,
        _ => return None,
    })
}

/// A condition value as a time: RFC 3339, or epoch seconds (a number or a string of digits).
fn date_value(v: &Value) -> Option<EventTime> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok()?.checked_mul(1000).map(EventTime)
        }
        Value::String(s) => EventTime::parse_rfc3339(s),
        Value::Number(n) => n.as_i64()?.checked_mul(1000).map(EventTime),
        _ => None,
    }
}

fn judge_element(operator: &str, key: &str, values: &Value, now: EventTime) -> Judgement {
    if !key.eq_ignore_ascii_case("aws:CurrentTime") {
        return Judgement::Unknown;
    }
    let Some(op) = date_op(operator) else { return Judgement::Unknown };
    let values: &[Value] = match values {
        Value::Array(a) => a,
        v => std::slice::from_ref(v),
    };
    let mut times = Vec::with_capacity(values.len());
    for v in values {
        let Some(t) = date_value(v) else { return Judgement::Unknown };
        times.push(t);
    }
    let matches = |t: &EventTime| match op {
        DateOp::Equals | DateOp::NotEquals => now == *t,
        DateOp::LessThan => now < *t,
        DateOp::LessThanEquals => now <= *t,
        DateOp::GreaterThan => now > *t,
        DateOp::GreaterThanEquals => now >= *t,
    };
    // Several values: any one may match; a negated operator holds when none does.
    let any = times.iter().any(matches);
    let holds = if op == DateOp::NotEquals { !any } else { any };
    if times.is_empty() {
        Judgement::Unknown
    } else if holds {
        Judgement::Holds
    } else {
        Judgement::Fails
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> RequestContext {
        RequestContext::at(EventTime::parse_rfc3339(s).unwrap())
    }

    const LOCK: &str = r#"{"DateLessThan":{"aws:CurrentTime":"2025-01-02T03:04:05Z"}}"#;

    #[test]
    fn a_time_lock_holds_before_and_fails_at_and_after_its_expiry() {
        assert_eq!(at("2025-01-02T03:04:04.999Z").judge(LOCK), Judgement::Holds);
        assert_eq!(at("2025-01-02T03:04:05Z").judge(LOCK), Judgement::Fails);
        assert_eq!(at("2026-01-01T00:00:00Z").judge(LOCK), Judgement::Fails);
        assert_eq!(RequestContext::UNKNOWN.judge(LOCK), Judgement::Unknown, "no time, no judgement");
    }

    #[test]
    fn every_date_operator_compares_as_iam_does() {
        let t = "2025-06-01T00:00:00Z";
        let c = |op: &str| format!(r#"{{"{op}":{{"aws:CurrentTime":"{t}"}}}}"#);
        let (before, same, after) = (at("2025-05-31T23:59:59Z"), at(t), at("2025-06-01T00:00:01Z"));
        let cases = [
            ("DateEquals", [Judgement::Fails, Judgement::Holds, Judgement::Fails]),
            ("DateNotEquals", [Judgement::Holds, Judgement::Fails, Judgement::Holds]),
            ("DateLessThan", [Judgement::Holds, Judgement::Fails, Judgement::Fails]),
            ("DateLessThanEquals", [Judgement::Holds, Judgement::Holds, Judgement::Fails]),
            ("DateGreaterThan", [Judgement::Fails, Judgement::Fails, Judgement::Holds]),
            ("DateGreaterThanEquals", [Judgement::Fails, Judgement::Holds, Judgement::Holds]),
            ("DateLessThanIfExists", [Judgement::Holds, Judgement::Fails, Judgement::Fails]),
        ];
        for (op, want) in cases {
            let got = [before.judge(&c(op)), same.judge(&c(op)), after.judge(&c(op))];
            assert_eq!(got, want, "{op}");
        }
    }

    #[test]
    fn values_may_be_lists_epoch_seconds_and_keys_any_case() {
        let now = at("2025-06-01T00:00:00Z");
        // 1748736000 is 2025-06-01T00:00:00Z.
        assert_eq!(now.judge(r#"{"DateLessThan":{"aws:currenttime":1748736001}}"#), Judgement::Holds);
        assert_eq!(now.judge(r#"{"DateLessThan":{"aws:CurrentTime":"1748736000"}}"#), Judgement::Fails);
        // Several values: any one may match; DateNotEquals holds only when none does.
        let list = r#"["2020-01-01T00:00:00Z","2030-01-01T00:00:00Z"]"#;
        assert_eq!(now.judge(&format!(r#"{{"DateLessThan":{{"aws:CurrentTime":{list}}}}}"#)), Judgement::Holds);
        let ne = r#"{"DateNotEquals":{"aws:CurrentTime":["2025-06-01T00:00:00Z","2030-01-01T00:00:00Z"]}}"#;
        assert_eq!(now.judge(ne), Judgement::Fails);
        assert_eq!(now.judge(r#"{"DateLessThan":{"aws:CurrentTime":"2025-06-01T02:00:00+02:00"}}"#), Judgement::Fails);
    }

    #[test]
    fn what_cannot_be_judged_stays_unknown_and_elements_are_anded() {
        let now = at("2025-06-01T00:00:00Z");
        let unknown = [
            r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            r#"{"DateLessThan":{"aws:TokenIssueTime":"2030-01-01T00:00:00Z"}}"#,
            r#"{"StringEquals":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#,
            r#"{"ForAnyValue:DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#,
            r#"{"DateLessThan":{"aws:CurrentTime":"next tuesday"}}"#,
            r#"{"DateLessThan":{"aws:CurrentTime":[]}}"#,
            r#"{"DateLessThan":"2030"}"#,
            "not json",
        ];
        for c in unknown {
            assert_eq!(now.judge(c), Judgement::Unknown, "{c}");
        }
        // A false element makes the block false whatever else it holds; true and unknown is unknown.
        let expired =
            r#"{"DateLessThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        assert_eq!(now.judge(expired), Judgement::Fails);
        let live =
            r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#;
        assert_eq!(now.judge(live), Judgement::Unknown);
        let window = r#"{"DateGreaterThan":{"aws:CurrentTime":"2025-01-01T00:00:00Z"},"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#;
        assert_eq!(now.judge(window), Judgement::Holds);
    }
}
