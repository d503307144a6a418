//! Credentials out of CloudTrail documents before they travel on.
//!
//! CloudTrail masks most secrets itself (`HIDDEN_DUE_TO_SECURITY_REASONS`, `<sensitiveDataRemoved>`,
//! `****`) but not all of them: some STS- and SSO-style responses log
//! `responseElements.credentials.sessionToken` / `secretAccessKey`, and records from other producers
//! (LookupEvents replays, third-party forwarders, hand-written JSON Lines) may carry
//! `requestParameters.password`, `newPassword`, `privateKey`, `clientSecret`, `secretString`, ...
//! Whatever grantwatch passes on — the request and response documents an `Event` keeps, the payloads
//! of dead letters — goes through [`redact_json`] first.
//!
//! **Which keys.** A key is secret-looking when, compared ASCII-case-insensitively, it
//! * ends with one of [`SECRET_KEY_SUFFIXES`] (`password`, `newPassword`, `masterUserPassword`,
//!   `clientSecret`, `sessionToken`, `SecretAccessKey`, `privateKey`, ...), except the
//!   [`NOT_SECRET_KEYS`] (pagination and idempotency tokens), or
//! * is one of [`SECRET_KEYS`] (`secretString`, `secretBinary`, `keyMaterial`, `userData`, ...).
//!
//! `accessKeyId` is not secret-looking (it identifies a key and detection follows it).
//!
//! **What happens.** The value of a secret-looking key, at any depth and of any type except a
//! boolean or null (a flag such as `manageMasterUserPassword: true` is not a secret), becomes
//! `"<redacted>"`. Values CloudTrail already masked are left as they are, so rules that test for a
//! masked field (`masterUserPassword|contains: '*'`) still see it.
//!
//! **Cost.** The normalizer runs this on every document it keeps, so the common case — no string
//! ending like a secret-looking key — is one pass over the quotes with a 4-byte comparison at each
//! ([`may_contain_secret`]) and no allocation: about what copying the document costs. The rewrite
//! works on the text, keeps everything else byte for byte, and tolerates malformed or truncated
//! JSON (dead letters are exactly that): an unterminated secret value is redacted to the end of the
//! text.
//!
//! Not covered: secrets inside JSON that is itself a string value (`"policy": "{\"password\": ..}"`),
//! and values under keys this list does not know.

use std::borrow::Cow;

/// What a secret value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Keys ending with one of these (ASCII case-insensitive) are secret-looking.
pub const SECRET_KEY_SUFFIXES: &[&str] =
    &["password", "passphrase", "secret", "secretkey", "secretaccesskey", "token", "privatekey"];

/// Keys equal to one of these (ASCII case-insensitive) are secret-looking.
pub const SECRET_KEYS: &[&str] = &["secretstring", "secretbinary", "keymaterial", "userdata", "credential"];

/// Keys that end like a secret but are not one: pagination and idempotency tokens.
pub const NOT_SECRET_KEYS: &[&str] = &[
    "nexttoken",
    "clienttoken",
    "clientrequesttoken",
    "paginationtoken",
    "continuationtoken",
    "idempotencytoken",
    "startingtoken",
];

/// The last four letters, lowercased, of every secret-looking key (checked by a test): a string
/// ending otherwise is not one, which rules out almost every key at the cost of one comparison.
const TAILS: [[u8; 4]; 12] = [
    *b"word", *b"rase", *b"cret", *b"tkey", *b"skey", *b"oken", *b"ekey", *b"ring", *b"nary", *b"rial", *b"data",
    *b"tial",
];

/// [`TAILS`] as little-endian words, compared in one instruction each.
const TAIL_WORDS: [u32; TAILS.len()] = {
    let mut words = [0; TAILS.len()];
    let mut i = 0;
    while i < TAILS.len() {
        words[i] = u32::from_le_bytes(TAILS[i]);
        i += 1;
    }
    words
};

/// Whether `s` ends like a secret-looking key (ASCII case-insensitive; false positives are fine).
fn has_secret_tail(s: &[u8]) -> bool {
    let Some(&[a, b, c, d]) = s.len().checked_sub(4).and_then(|i| s.get(i..)) else { return false };
    // `| 0x20` lowercases ASCII letters, and maps no other byte to one.
    TAIL_WORDS.contains(&(u32::from_le_bytes([a, b, c, d]) | 0x2020_2020))
}

/// Values CloudTrail (or an earlier pass) already masked: nothing to hide, and rules test for them.
fn already_masked(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'*')
        || s == b"HIDDEN_DUE_TO_SECURITY_REASONS"
        || s == b"<sensitiveDataRemoved>"
        || s == REDACTED.as_bytes()
}

fn ends_with_ignore_case(s: &[u8], suffix: &str) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether values under `key` are redacted (see the module documentation for the rule).
pub fn is_secret_key(key: &str) -> bool {
    is_secret_key_bytes(key.as_bytes())
}

fn is_secret_key_bytes(key: &[u8]) -> bool {
    if !has_secret_tail(key) {
        return false;
    }
    if SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k.as_bytes())) {
        return true;
    }
    SECRET_KEY_SUFFIXES.iter().any(|s| ends_with_ignore_case(key, s))
        && !NOT_SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k.as_bytes()))
}

/// A fast, conservative pre-check: `false` means `text` holds no secret-looking key.
///
/// Looks at the four bytes before every `"`, and only where they match the end of a secret-looking
/// key at the whole string; plus any `\u` (a key spelled with escapes could hide its name).
pub fn may_contain_secret(text: &[u8]) -> bool {
    let candidate = |q: usize| {
        let before = &text[..q];
        if !has_secret_tail(before) {
            return false;
        }
        // The string this quote closes (or, for an opening quote, a superset of what precedes it).
        match memchr::memrchr(b'"', before) {
            Some(s) if s > 0 && before[s - 1] == b'\\' => true, // an escaped quote: do not guess
            Some(s) => is_secret_key_bytes(&before[s + 1..]),
            None => is_secret_key_bytes(before),
        }
    };
    any_quote(text, candidate) || memchr::memchr_iter(b'\\', text).any(|i| text.get(i + 1) == Some(&b'u'))
}

/// Whether `f` holds for the position of some `"` in `text`, tried in order.
///
/// A CloudTrail document has a quote every few bytes, where `memchr`'s per-call setup dominates:
/// those stretches are searched 8 bytes at a time in a register (3x faster on typical documents);
/// after 32 bytes without a quote, `memchr` takes over to the next one (long policy strings).
fn any_quote(text: &[u8], mut f: impl FnMut(usize) -> bool) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    let mut pos = 0;
    let mut quiet = 0;
    while let Some(word) = text.get(pos..pos + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        // Bytes equal to `"` are zero in `w`; the classic zero-byte test flags every one of them
        // (and possibly a byte right after one: checked below).
        let w = u64::from_le_bytes(word) ^ QUOTES;
        let mut flags = w.wrapping_sub(ONES) & !w & HIGHS;
        if flags == 0 {
            quiet += 1;
            if quiet < 4 {
                pos += 8;
                continue;
            }
            quiet = 0;
            match memchr::memchr(b'"', &text[pos + 8..]) {
                Some(i) => pos += 8 + i,
                None => return false,
            }
            continue;
        }
        quiet = 0;
        while flags != 0 {
            let q = pos + (flags.trailing_zeros() / 8) as usize;
            if text[q] == b'"' && f(q) {
                return true;
            }
            flags &= flags - 1;
        }
        pos += 8;
    }
    text[pos..].iter().enumerate().any(|(i, &b)| b == b'"' && f(pos + i))
}

/// `text` with the value of every secret-looking key replaced by `"<redacted>"`; borrowed when
/// there is nothing to replace. Works on malformed and truncated JSON too; never panics.
pub fn redact_json(text: &[u8]) -> Cow<'_, [u8]> {
    if !may_contain_secret(text) {
        return Cow::Borrowed(text);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // text[..copied] is in `out` already
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &text[i..]) {
        let start = i + q;
        let end = string_end(text, start);
        i = end;
        let after = skip_ws(text, end);
        if text.get(after) != Some(&b':') || !is_secret_key_bytes(&key_text(&text[start..end])) {
            continue;
        }
        let value_start = skip_ws(text, after + 1);
        let Some(value_end) = value_end(text, value_start) else { continue };
        let value = &text[value_start..value_end];
        if value.first() == Some(&b'"') {
            let inner = value.get(1..value.len().saturating_sub(1)).unwrap_or_default();
            if value.len() >= 2 && value.ends_with(b"\"") && already_masked(inner) {
                i = value_end;
                continue;
            }
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 16));
        buf.extend_from_slice(&text[copied..value_start]);
        buf.push(b'"');
        buf.extend_from_slice(REDACTED.as_bytes());
        buf.push(b'"');
        copied = value_end;
        i = value_end;
    }
    match out {
        Some(mut buf) => {
            buf.extend_from_slice(&text[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(text),
    }
}

/// [`redact_json`] for text. Replacements happen at ASCII token boundaries, so UTF-8 stays UTF-8.
pub fn redact_json_str(text: &str) -> Cow<'_, str> {
    match redact_json(text.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| {
            // Unreachable by construction; lossy is still free of the secret.
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        })),
    }
}

/// Redacts a parsed document in place; returns whether anything was replaced.
pub fn redact_value(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut changed = false;
            for (k, child) in map.iter_mut() {
                let secret = is_secret_key(k)
                    && match child {
                        Value::Null | Value::Bool(_) => false,
                        Value::String(s) => !already_masked(s.as_bytes()),
                        _ => true,
                    };
                if secret {
                    *child = Value::String(REDACTED.to_string());
                    changed = true;
                } else {
                    changed |= redact_value(child);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, item| redact_value(item) | c),
        _ => false,
    }
}

/// The key's name: its raw bytes, unescaped when it holds escapes (`"pass\u0077ord"`).
fn key_text(quoted: &[u8]) -> Cow<'_, [u8]> {
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    if memchr::memchr(b'\\', inner).is_none() {
        return Cow::Borrowed(inner);
    }
    match serde_json::from_slice::<String>(quoted) {
        Ok(s) => Cow::Owned(s.into_bytes()),
        Err(_) => Cow::Borrowed(inner),
    }
}

/// Index just past the string starting at `start` (a `"`), or the end of the text if unterminated.
fn string_end(text: &[u8], start: usize) -> usize {
    let mut k = start + 1;
    while let Some(off) = memchr::memchr2(b'"', b'\\', text.get(k..).unwrap_or_default()) {
        k += off;
        if text[k] == b'\\' {
            k += 2;
        } else {
            return k + 1;
        }
    }
    text.len()
}

fn skip_ws(text: &[u8], mut k: usize) -> usize {
    while k < text.len() && matches!(text[k], b' ' | b'\t' | b'\n' | b'\r') {
        k += 1;
    }
    k
}

/// Index just past the value starting at `start`, or the end of the text if it is cut off; `None`
/// when there is no value there, or it is a boolean or null (not secrets, and kept for rules).
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match *text.get(start)? {
        b'"' => Some(string_end(text, start)),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut k = start;
            while k < text.len() {
                match text[k] {
                    b'"' => {
                        k = string_end(text, k);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(k + 1);
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            Some(text.len())
        }
        b',' | b'}' | b']' | b':' => None,
        _ => {
            let end = text[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(text.len(), |p| start + p);
            let scalar = &text[start..end];
            (!matches!(scalar, b"true" | b"false" | b"null")).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_json_str(s).into_owned()
    }

    #[test]
    fn every_secret_key_is_caught_by_the_precheck() {
        let suffixed = SECRET_KEY_SUFFIXES.iter().map(|k| format!("someLong{}", k.to_uppercase()));
        let keys = SECRET_KEY_SUFFIXES.iter().chain(SECRET_KEYS).map(|k| k.to_string());
        for key in keys.clone().chain(keys.map(|k| k.to_uppercase())).chain(suffixed) {
            assert!(has_secret_tail(key.as_bytes()), "{key}");
            assert!(may_contain_secret(format!(r#"{{"{key}":1}}"#).as_bytes()), "{key}");
            assert!(is_secret_key(&key), "{key}");
        }
    }

    #[test]
    fn secret_looking_keys() {
        for k in [
            "password",
            "newPassword",
            "OldPassword",
            "masterUserPassword",
            "sessionToken",
            "SessionToken",
            "secretAccessKey",
            "SecretAccessKey",
            "privateKey",
            "clientSecret",
            "SecretString",
            "secretBinary",
            "userData",
            "keyMaterial",
            "accessToken",
            "refreshToken",
            "authorizationToken",
            "PASSWORD",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["accessKeyId", "AccessKeyId", "key", "keyId", "nextToken", "clientToken", "userName", "secretId"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn every_quote_is_visited_once_in_order() {
        for text in [
            String::new(),
            "\"".into(),
            "a\"\"b".into(),
            format!("{}\"{}\"\"x", "y".repeat(100), "z".repeat(7)),
            format!("\"\x01\x01\"{}", "\"\x01".repeat(20)),
            "\"".repeat(33),
        ] {
            let bytes = text.as_bytes();
            let expected: Vec<usize> = memchr::memchr_iter(b'"', bytes).collect();
            let mut seen = Vec::new();
            assert!(!any_quote(bytes, |q| {
                seen.push(q);
                false
            }));
            assert_eq!(seen, expected, "{text:?}");
        }
    }

    #[test]
    fn precheck() {
        assert!(may_contain_secret(br#"{"a":{"SessionTOKEN" : "x"}}"#));
        assert!(may_contain_secret(br#"{"pass\u0077ord":"x"}"#));
        assert!(!may_contain_secret(br#"{"userName":"alice","accessKeyId":"AKIA","tags":[{"key":"k"}]}"#));
        assert!(!may_contain_secret(br#"{"clientToken":"c","nextToken":"n"}"#), "not secrets");
        assert!(may_contain_secret(br#"{"a\"clientToken":"c"}"#), "escaped quote: no guessing");
        for s in [&b""[..], b"\"", b"ab\"", b"\\"] {
            assert!(!may_contain_secret(s));
        }
    }

    #[test]
    fn nothing_to_redact_is_borrowed() {
        let s = r#"{"userName":"alice","accessKeyId":"AKIAEXAMPLE","bucketName":"b"}"#;
        assert!(matches!(redact_json_str(s), Cow::Borrowed(_)));
        // a candidate substring in a value, not a key
        let s = r#"{"policyName":"password-policy","nextToken":"abc"}"#;
        assert!(matches!(redact_json_str(s), Cow::Borrowed(_)));
    }

    #[test]
    fn redacts_values_of_any_type_at_any_depth() {
        let s = r#"{"credentials":{"accessKeyId":"ASIAX","sessionToken":"FwoGZX\"Iv","secretAccessKey":"wJalr/K7"},"a":[{"Password" : 12345},{"privateKey":{"pem":"-----BEGIN"}}],"newPassword":["x","y"]}"#;
        let out = r(s);
        for secret in ["FwoGZX", "wJalr", "12345", "BEGIN", "\"x\""] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains(r#""accessKeyId":"ASIAX""#), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["credentials"]["sessionToken"], REDACTED);
        assert_eq!(v["a"][0]["Password"], REDACTED);
        assert_eq!(v["a"][1]["privateKey"], REDACTED);
        assert_eq!(v["newPassword"], REDACTED);
    }

    #[test]
    fn keeps_masks_flags_and_null() {
        let s = r#"{"masterUserPassword":"****","userData":"<sensitiveDataRemoved>","password":"HIDDEN_DUE_TO_SECURITY_REASONS","manageMasterUserPassword":true,"secret":null}"#;
        assert_eq!(r(s), s);
    }

    #[test]
    fn escaped_key_names_are_recognized() {
        let out = r(r#"{"pass\u0077ord":"hunter2"}"#);
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn malformed_and_truncated_text_is_redacted_too() {
        for (s, secret) in [
            (r#"{"password":"hunter2"#, "hunter2"),
            (r#"{"password":"hunt\"#, "hunt"),
            (r#"{"password": 98765"#, "98765"),
            (r#"{"credentials":{"sessionToken":{"a":["tok"#, "tok"),
            (r#"not json "password":"hunter2", oops"#, "hunter2"),
        ] {
            let out = r(s);
            assert!(!out.contains(secret), "{s} -> {out}");
        }
        for s in [r#"{"password":"#, r#"{"password""#, r#""password"#, "\"", r#"{"password":}"#] {
            let _ = r(s); // no panic
        }
    }

    #[test]
    fn value_form_matches_text_form() {
        let s = r#"{"requestParameters":{"userName":"bob","password":"p@ss","oldPassword":"old"},"responseElements":{"credentials":{"accessKeyId":"ASIA","sessionToken":"tok","expiration":"x"}},"flag":{"manageMasterUserPassword":false}}"#;
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert!(redact_value(&mut v));
        let text: serde_json::Value = serde_json::from_str(&r(s)).unwrap();
        assert_eq!(v, text);
        assert!(!redact_value(&mut v), "idempotent");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_leaks(prefix in ".{0,40}", secret in "[a-zA-Z0-9]{6,20}", cut in 0usize..80) {
            let doc = format!(r#"{{"x":"{}","sessionToken":"S{secret}","y":1}}"#, prefix.replace(['"', '\\'], ""));
            let out = redact_json(doc.as_bytes());
            let out = String::from_utf8_lossy(&out);
            let leaked = out.contains(&format!("S{secret}"));
            proptest::prop_assert!(!leaked, "{}", out);
            let cut = cut.min(doc.len());
            let _ = redact_json(&doc.as_bytes()[..cut]);
            let mut seen = Vec::new();
            any_quote(doc.as_bytes(), |q| { seen.push(q); false });
            proptest::prop_assert_eq!(seen, memchr::memchr_iter(b'"', doc.as_bytes()).collect::<Vec<_>>());
        }
    }
}
