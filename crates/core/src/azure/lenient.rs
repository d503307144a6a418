//! Lenient field types for Azure records: a field of an unexpected JSON type reads as absent instead of
//! failing the whole record (exports from different tool versions disagree on types: `"accountEnabled":
//! "true"`, `"otherMails": null`, `operationName` as a string or as `{"value", "localizedValue"}`).
//! Strings without escapes are borrowed from the input.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string field; any other JSON type reads as `None`. An object with a `value` member (the Activity
/// Log's localized names: `{"value": "Succeeded", "localizedValue": "Réussi"}`) reads as that value.
#[derive(Debug, Default, Clone)]
pub(crate) struct Str<'a>(pub(crate) Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    /// The value when present and not empty (after trimming).
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    pub(crate) fn owned(&self) -> Option<String> {
        self.get().map(str::to_string)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v))))
    }
    // Numbers are kept as text: a sign-in's `errorCode` is a number in Graph and a string (`resultType`)
    // in the diagnostic export.
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Str::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Str(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Str(None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "value" {
                out = map.next_value::<Str<'de>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A boolean that also accepts `"true"` / `"false"` (any case); anything else reads as `None`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flag(pub(crate) Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Str::deserialize(FlagDe(d))?;
        Ok(Flag(match s.get() {
            Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }))
    }
}

/// Routes a JSON boolean to `Str("true"/"false")` so [`Flag`] can share [`StrVisitor`]'s leniency.
struct FlagDe<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for FlagDe<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_any(BoolAsStr(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct BoolAsStr<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for BoolAsStr<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.visit_str(if v { "true" } else { "false" })
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.0.visit_borrowed_str(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.0.visit_string(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }
    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map)
    }
}

/// A list of strings; a non-list reads as empty; members read as [`Str`] (numbers as their text), and
/// the others (null, objects, lists) are skipped.
#[derive(Debug, Default, Clone)]
pub(crate) struct StrList(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    if let Some(s) = s.get() {
                        out.push(s.to_string());
                    }
                }
                Ok(StrList(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrList(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_unit<E>(self) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_none<E>(self) -> Result<StrList, E> {
                Ok(StrList(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<StrList, D::Error> {
                d.deserialize_any(self)
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of `T`; a non-list (`null`, a string, an object) reads as empty. Members that fail to
/// deserialize fail the list: callers type members leniently.
#[derive(Debug, Clone)]
pub(crate) struct List<T>(pub(crate) Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element::<T>()? {
                    out.push(x);
                }
                Ok(List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(List(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_unit<E>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_none<E>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<List<T>, D::Error> {
                d.deserialize_any(self)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Azure GUIDs and ids compared case-insensitively are kept lower-case.
pub(crate) fn lower(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Parses an Azure timestamp: RFC 3339 (`2024-01-02T03:04:05.1234567Z`), or the same without an offset
/// (some exports drop the `Z`; Azure times are UTC).
pub(crate) fn parse_time(s: &str) -> Option<grantwatch_types::EventTime> {
    let s = s.trim();
    grantwatch_types::EventTime::parse_rfc3339(s).or_else(|| {
        let has_offset = s.ends_with(['Z', 'z']) || s.get(19..).is_some_and(|tail| tail.contains(['+', '-']));
        if has_offset { None } else { grantwatch_types::EventTime::parse_rfc3339(&format!("{s}Z")) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct T<'a> {
        #[serde(borrow, default)]
        s: Str<'a>,
        #[serde(default)]
        f: Flag,
        #[serde(default)]
        l: StrList,
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let t: T<'_> =
            serde_json::from_str(r#"{"s":{"value":"Succeeded","localizedValue":"x"},"f":"TRUE","l":["a",1,null,"b"]}"#)
                .unwrap();
        assert_eq!(t.s.get(), Some("Succeeded"));
        assert_eq!(t.f.0, Some(true));
        assert_eq!(t.l.0, ["a", "1", "b"], "numbers read as their text, null is skipped");
        let t: T<'_> = serde_json::from_str(r#"{"s":[1,2],"f":3,"l":null}"#).unwrap();
        assert_eq!(t.s.get(), None);
        assert_eq!(t.f.0, None);
        assert!(t.l.0.is_empty());
        let t: T<'_> = serde_json::from_str(r#"{"s":50126,"f":false,"l":"x"}"#).unwrap();
        assert_eq!(t.s.get(), Some("50126"));
        assert_eq!(t.f.0, Some(false));
    }

    #[test]
    fn times_with_seven_digits_or_no_offset() {
        let a = parse_time("2024-01-02T03:04:05.1234567Z").unwrap();
        assert_eq!(parse_time("2024-01-02T03:04:05.1234567").unwrap(), a);
        assert_eq!(parse_time("2024-01-02T03:04:05.123+00:00").unwrap(), a);
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("").is_none());
    }
}
