//! The JSON tree the parser validates: like `serde_json::Value`, but its strings borrow from
//! the body and its objects are lists of pairs. Every message is parsed into one and thrown
//! away, so building `serde_json`'s tree (a `String` per key and value, a `BTreeMap` per
//! object) was most of the parser's cost; a string with escapes is still owned.
//!
//! The syntax, its errors and the depth limit are `serde_json`'s own (this is only what it
//! builds). As in `serde_json::Value`, a key given twice keeps its last value.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// One JSON value, its strings borrowed from the text it was parsed from where they can be.
#[derive(Debug, Clone)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object's members in the order written, duplicates included; lookups find the last.
#[derive(Debug, Clone, Default)]
pub(super) struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Json<'a> {
    /// Parses `text` (which must be one JSON value and nothing after it).
    pub(super) fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl<'a> Object<'a> {
    /// The value of `key` (the last one, if the key was given more than once).
    pub(super) fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// How many distinct keys it has.
    pub(super) fn len(&self) -> usize {
        self.0
            .iter()
            .map(|(k, _)| k.as_ref())
            .collect::<HashSet<_>>()
            .len()
    }

    /// Each distinct key with its last value.
    fn last_values(&self) -> HashMap<&str, &Json<'a>> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v)).collect()
    }
}

/// Equal as JSON values: numbers as `serde_json` compares them, objects by their keys' last
/// values whatever the order.
impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Json::Null, Json::Null) => true,
            (Json::Bool(a), Json::Bool(b)) => a == b,
            (Json::Number(a), Json::Number(b)) => a == b,
            (Json::String(a), Json::String(b)) => a == b,
            (Json::Array(a), Json::Array(b)) => a == b,
            // Each distinct key's value compared once: comparing once per member, duplicates
            // included, is exponential in the depth of nested objects with repeated keys.
            (Json::Object(a), Json::Object(b)) => {
                let (a, b) = (a.last_values(), b.last_values());
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As serde_json's own tree: a float it parsed is finite.
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        // serde_json's own Value, with its `raw_value` feature on (axum turns it on), takes an
        // object whose first key is its private RawValue marker for the JSON text in its value,
        // parsed again from scratch: here it is an ordinary key, so nothing recurses.
        while let Some(key) = map.next_key_seed(Str("a string key"))? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(Object(members)))
    }
}

/// A string, borrowed when it has no escapes (serde's own `Cow` always copies); the name is
/// what a wrong type's error says was expected.
struct Str(&'static str);

impl<'de> DeserializeSeed<'de> for Str {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Str {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// `serde_json::Value` as this tree, for tests that write their values with `json!`.
#[cfg(test)]
impl From<serde_json::Value> for Json<'static> {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(Cow::Owned(s)),
            serde_json::Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => Json::Object(Object(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Json::from(v)))
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_the_last_duplicate_key_wins() {
        let text =
            r#"{"a": "plain", "b": "esc\"aped", "a": "again", "n": [1, -2, 2.5, null, true]}"#;
        let Ok(Json::Object(obj)) = Json::parse(text) else {
            panic!("an object");
        };
        assert_eq!(obj.len(), 3);
        assert!(matches!(
            obj.get("a"),
            Some(Json::String(Cow::Borrowed("again")))
        ));
        assert!(matches!(obj.get("b"), Some(Json::String(Cow::Owned(s))) if s == "esc\"aped"));
        assert_eq!(
            obj.get("n"),
            Some(&Json::from(serde_json::json!([1, -2, 2.5, null, true])))
        );
        assert_eq!(obj.get("missing"), None);
    }

    #[test]
    fn syntax_errors_and_the_depth_limit_are_serde_jsons() {
        for text in ["{", "[1,]", "{} x", "\"\\ud800\"", &"[".repeat(200)] {
            let ours = Json::parse(text).map(drop).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<serde_json::Value>(text)
                .map(drop)
                .map_err(|e| e.to_string());
            assert!(ours.is_err(), "{text:?} parsed");
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    /// The fuzz seeds, the bad-input corpus and some edge cases parse as serde_json's `Value`
    /// does: the same tree, or the same error.
    #[test]
    fn parses_as_serde_json_value_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts: Vec<String> = ["fuzz/seeds", "tests/corpus"]
            .iter()
            .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect(dir).flatten())
            .filter_map(|entry| String::from_utf8(std::fs::read(entry.path()).ok()?).ok())
            .map(|text| text.split('\0').next().unwrap_or_default().to_owned())
            .collect();
        assert!(texts.len() > 20, "{} files", texts.len());
        let nested = |open: &str, close: &str, n| format!("{}0{}", open.repeat(n), close.repeat(n));
        texts.extend(
            [
                r#"{"a\"\u00e9":"\ud83d\ude00\n","":[],"e":{},"a":1,"a":null}"#,
                r#"[0,-0,-0.0,1E+2,1e-400,0.1e1,18446744073709551615,18446744073709551616]"#,
                "[-9223372036854775808,-9223372036854775809]",
                "1e400",
                r#""\ud800""#,
                r#"{"\udc00":1}"#,
                "01",
                "1.",
                "{\"a\":1,}",
                " {} \n",
                &nested("[", "]", 127),
                &nested("[", "]", 128),
                &nested("{\"x\":0,\"x\":", "}", 100),
                &format!(
                    "{{{}}}",
                    (0..30_000)
                        .map(|i| format!("\"{i}\":{i}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ]
            .map(str::to_owned),
        );
        for text in &texts {
            let ours = Json::parse(text).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<serde_json::Value>(text)
                .map(Json::from)
                .map_err(|e| e.to_string());
            assert!(
                ours == theirs,
                "{:.400}",
                format!("{text:?}: {ours:?} vs {theirs:?}")
            );
        }
    }

    /// The one deliberate difference: serde_json's `Value` (with `raw_value`, which axum turns on)
    /// parses the text under its private RawValue marker key as the object itself, again from
    /// the top; here the marker is a key like any other.
    #[test]
    fn serde_jsons_raw_value_marker_is_an_ordinary_key() {
        let text = r#"{"$serde_json::private::RawValue":"[1,2]"}"#;
        let Ok(Json::Object(obj)) = Json::parse(text) else {
            panic!("an object");
        };
        assert_eq!(
            obj.get("$serde_json::private::RawValue")
                .and_then(Json::as_str),
            Some("[1,2]")
        );
    }

    #[test]
    fn objects_are_equal_whatever_their_order_and_numbers_as_serde_json_compares_them() {
        let parse = |t: &'static str| Json::parse(t).expect("json");
        assert_eq!(parse(r#"{"a":1,"b":[2]}"#), parse(r#"{"b":[2],"a":1}"#));
        assert_eq!(parse(r#"{"a":0,"a":1}"#), parse(r#"{"a":1}"#));
        assert_ne!(parse(r#"{"a":1}"#), parse(r#"{"a":1,"b":2}"#));
        assert_ne!(parse("2"), parse("2.0"));
        assert_eq!(parse(r#""x""#), parse(r#""\u0078""#));
    }
}
