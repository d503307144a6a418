//! Identity providers: directory exports and activity logs of Okta, Google Workspace (Cloud Identity)
//! and AWS IAM Identity Center, as data (bytes in, data out, no IO).
//!
//! * [`okta`]: users, groups and their members, app assignments (the AWS app's roles), users' MFA
//!   factors; System Log events → [`grantwatch_types::Event`] (cloud `Okta`).
//! * [`workspace`]: Directory API users, groups and members; Admin SDK Reports activities →
//!   `Event` (cloud `GoogleWorkspace`), one per (activity, event).
//! * [`identity_center`]: Identity Store users, groups and memberships; permission sets and account
//!   assignments; which human holds which permission set in which account, and the
//!   `AWSReservedSSO_*` role each assignment materializes as.
//!
//! Every export is recognized by its content, not its file name: a file may be an API response
//! saved as is (`curl .../api/v1/users > users.json`), a JSON array, or JSON Lines. A record that
//! cannot be read is skipped and reported with its index ([`RecordError`]); a document that is not
//! one of the shapes is an error naming what was seen. `docs/identity-providers.md` lists every
//! accepted shape.
//!
//! The people these directories know are joined into humans by [`crate::humans`].

pub mod identity_center;
pub mod okta;
pub mod workspace;

use grantwatch_types::{EventTime, RAW_DETAIL_MAX, RawJson};
use serde_json::{Map, Value};

/// The region of identity-provider events: their logs have no cloud region.
pub const GLOBAL_REGION: &str = "global";

/// A record of an export that was skipped, with its 0-based index in its document (array position or
/// JSON Lines line among the non-blank lines) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub index: u64,
    pub reason: String,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record {}: {}", self.index, self.reason)
    }
}

/// Why a whole export could not be read. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("not JSON or JSON Lines: {0}")]
    Json(String),
    #[error("empty document")]
    Empty,
    /// Valid JSON of no shape this source accepts; names the keys (or kind) that were seen.
    #[error("not a recognized {provider} export: {seen}")]
    Unrecognized { provider: &'static str, seen: String },
}

/// Why one activity record could not become an event. The caller adds the file name and index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("{field} not RFC 3339: {value:?}")]
    BadTime { field: &'static str, value: String },
}

/// A JSON document as the exports come: one value, or JSON Lines (one value per non-blank line).
#[derive(Debug)]
pub(crate) enum Document {
    One(Value),
    /// Lines parsed, with the 0-based index of each among the non-blank lines; lines that do not
    /// parse are in the errors.
    Lines(Vec<(u64, Value)>, Vec<RecordError>),
}

/// Reads `bytes` as one JSON value, else as JSON Lines. A document that is neither (no line parses,
/// or a single line that does not) is [`ExportError::Json`] with serde's line and column.
pub(crate) fn read_document(bytes: &[u8]) -> Result<Document, ExportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ExportError::Empty);
    }
    let whole_err = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => return Ok(Document::One(v)),
        Err(e) => e,
    };
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    for (i, line) in lines.enumerate() {
        let index = i as u64;
        match serde_json::from_slice::<Value>(line) {
            Ok(v) => values.push((index, v)),
            Err(e) => errors.push(RecordError { index, reason: format!("not JSON: {e}") }),
        }
    }
    // JSON Lines hold objects. Without one, this is a broken document (a truncated pretty-printed
    // array has lines that parse alone, such as a string), and serde's error says where it broke.
    if !values.iter().any(|(_, v)| v.is_object()) {
        return Err(ExportError::Json(whole_err.to_string()));
    }
    Ok(Document::Lines(values, errors))
}

/// A short description of a value's shape for error messages: its first keys, or its type. Never
/// its values (they may be personal data).
pub(crate) fn shape_of(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let keys: Vec<&str> = m.keys().take(8).map(String::as_str).collect();
            let more = if m.len() > 8 { ", ..." } else { "" };
            format!("object with keys [{}{more}]", keys.join(", "))
        }
        Value::Array(a) => match a.first() {
            Some(first) => format!("array of {} ({})", a.len(), shape_of(first)),
            None => "empty array".to_string(),
        },
        Value::String(_) => "a string".to_string(),
        Value::Number(_) => "a number".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Null => "null".to_string(),
    }
}

/// `v[path[0]][path[1]]...` as a non-empty string; anything else (absent, another type) is `None`.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// A boolean field; `"true"`/`"false"` strings count (some exporters stringify everything).
pub(crate) fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    match cur {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A time field. Absent or null is `Ok(None)`; a string that is not RFC 3339 is an error naming the
/// field, so a malformed export is visible rather than read as "never".
pub(crate) fn time_at(v: &Value, field: &'static str) -> Result<Option<EventTime>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            EventTime::parse_rfc3339(s).map(Some).ok_or_else(|| format!("{field} not RFC 3339: {:?}", cut(s)))
        }
        Some(_) => Err(format!("{field} is not a string")),
    }
}

/// A value quoted in an error message, cut so a hostile record cannot flood the logs.
pub(crate) fn cut(s: &str) -> &str {
    grantwatch_types::cut_str(s, 64)
}

/// The lower-cased, trimmed form of an email address, or `None` when it is not one (no `@` with
/// text on both sides). Email comparison is ASCII-case-insensitive here: providers treat the local
/// part case-insensitively in practice, and a directory and a cloud spelling one address
/// differently must still meet.
pub fn canonical_email(s: &str) -> Option<String> {
    let s = s.trim();
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || s.chars().any(char::is_whitespace) {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

/// A document an event keeps (the `additional` of [`grantwatch_types::Event`]), secret-looking keys
/// redacted, at most [`RAW_DETAIL_MAX`] bytes. The fields are tried in order, dropping the
/// least essential (last) ones until it fits: the outcome and target matter more than debug data.
pub(crate) fn bounded_detail(mut fields: Vec<(&str, Value)>) -> Option<RawJson> {
    while !fields.is_empty() {
        let mut map = Map::new();
        for (k, v) in &fields {
            if !v.is_null() {
                map.insert((*k).to_string(), v.clone());
            }
        }
        if map.is_empty() {
            return None;
        }
        let mut doc = Value::Object(map);
        crate::cloudtrail::redact::redact_value(&mut doc);
        let text = doc.to_string();
        if text.len() <= RAW_DETAIL_MAX {
            return RawJson::from_text(&text);
        }
        fields.pop();
    }
    None
}

/// The host of an `https://host/...` URL, lower-cased.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit('@').next()?.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_one_value_or_json_lines() {
        assert!(matches!(read_document(b"\xEF\xBB\xBF[1]"), Ok(Document::One(_))));
        match read_document(b"{\"a\":1}\n\n{bad\n{\"b\":2}\n").unwrap() {
            Document::Lines(v, e) => {
                assert_eq!(v.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
                assert_eq!(e.len(), 1);
                assert_eq!(e[0].index, 1);
            }
            Document::One(_) => panic!("expected lines"),
        }
        assert!(matches!(read_document(b"{\"a\": [1,"), Err(ExportError::Json(m)) if m.contains("EOF")));
        assert_eq!(read_document(b" \n ").unwrap_err(), ExportError::Empty);
        // Truncated pretty-printed JSON whose lines include a valid scalar is still broken JSON.
        let truncated = b"[\n  {\n    \"aliases\": [\n      \"a@example.com\"\n";
        assert!(matches!(read_document(truncated), Err(ExportError::Json(m)) if m.contains("EOF")));
    }

    proptest::proptest! {
        /// Whatever the bytes, every reader answers with data or an error, never a panic.
        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
                               text in "[\\[\\]{}\":,a-z0-9 \n_.@-]{0,200}") {
            for input in [bytes.as_slice(), text.as_bytes()] {
                let _ = okta::parse_export(input);
                let _ = okta::events_from_export(input, None);
                let _ = okta::normalize_event(input, Some("x"));
                let _ = workspace::parse_export(input);
                let _ = workspace::events_from_export(input);
                let _ = workspace::normalize_activity(input);
                let _ = identity_center::parse_export(input);
                let _ = crate::humans::Mapping::parse(input);
            }
        }
    }

    #[test]
    fn emails_and_hosts() {
        assert_eq!(canonical_email(" Alice@Example.COM ").as_deref(), Some("alice@example.com"));
        assert_eq!(canonical_email("alice"), None);
        assert_eq!(canonical_email("@example.com"), None);
        assert_eq!(canonical_email("a b@example.com"), None);
        assert_eq!(url_host("https://Dev-1.okta.com:443/api/v1/users/1").as_deref(), Some("dev-1.okta.com"));
        assert_eq!(url_host("/api/v1/users"), None);
    }

    #[test]
    fn details_drop_last_fields_until_they_fit() {
        let big = Value::String("x".repeat(RAW_DETAIL_MAX));
        let d = bounded_detail(vec![
            ("outcome", serde_json::json!({"result": "SUCCESS"})),
            ("debugData", big),
            ("password", Value::String("hunter2".into())),
        ])
        .unwrap();
        // debugData would not fit with it, so both later fields go; the outcome stays.
        assert_eq!(d.get(), r#"{"outcome":{"result":"SUCCESS"}}"#);
        let d = bounded_detail(vec![("outcome", Value::Null), ("clientSecret", Value::String("s".into()))]).unwrap();
        assert_eq!(d.get(), r#"{"clientSecret":"<redacted>"}"#);
    }
}
