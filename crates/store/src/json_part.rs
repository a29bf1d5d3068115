//! One object out of a stored JSON object (a profile's `traits`, an event's `properties`)
//! without decoding the rest: the other fields are skipped, not built, and of the object
//! only the keys asked for are kept. A batch evaluation decodes every stored profile, and
//! building the whole profile (every key and string it holds, to read `plan`) was most of
//! that; SQLite's `json_extract` was slower still (it builds a binary form of all of it).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The object under `key` of the JSON object `json`, only `keep` of its keys when given.
/// Absent, or anything but an object there, is empty.
pub fn object_under(
    json: &str,
    key: &str,
    keep: Option<&[String]>,
) -> serde_json::Result<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let object = Outer { key, keep }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(object)
}

/// The outer object: the value under `key` kept, everything else skipped.
struct Outer<'k> {
    key: &'k str,
    keep: Option<&'k [String]>,
}

impl<'de> DeserializeSeed<'de> for Outer<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Outer<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some(found) = map.next_key_seed(KeyIn(&[self.key]))? {
            if found.is_some() {
                object = map.next_value_seed(Inner { keep: self.keep })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(object)
    }
}

/// The inner object: the wanted keys kept (all of them without a list); a value of
/// another type skipped, as an empty object.
struct Inner<'k> {
    keep: Option<&'k [String]>,
}

impl<'de> DeserializeSeed<'de> for Inner<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Inner<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Map::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Map::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        loop {
            let key = match self.keep {
                None => map.next_key::<String>()?.map(Some),
                Some(keys) => map.next_key_seed(KeyIn(keys))?,
            };
            match key {
                None => return Ok(object),
                Some(Some(key)) => {
                    object.insert(key, map.next_value()?);
                }
                Some(None) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

/// A key, owned only when it is one of these (`None` for any other: no allocation).
struct KeyIn<'k, K>(&'k [K]);

impl<'de, K: AsRef<str>> DeserializeSeed<'de> for KeyIn<'_, K> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, K: AsRef<str>> Visitor<'de> for KeyIn<'_, K> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .any(|k| k.as_ref() == key)
            .then(|| key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_keys_asked_for_and_skips_the_rest() {
        let state = json!({
            "id": "p1",
            "identities": {"traits": ["not these"], "email": ["a@example.com"]},
            "traits": {"plan": "pro", "email": "a@example.com", "nested": {"traits": {"plan": "x"}}, "esc\"aped": 1},
            "event_counts": {"traits": 3},
        })
        .to_string();
        let keep = ["plan".to_owned(), "esc\"aped".to_owned()];
        let only = object_under(&state, "traits", Some(&keep)).expect("decodes");
        assert_eq!(Value::Object(only), json!({"plan": "pro", "esc\"aped": 1}));
        let all = object_under(&state, "traits", None).expect("decodes");
        let expected = json!({"plan": "pro", "email": "a@example.com", "nested": {"traits": {"plan": "x"}}, "esc\"aped": 1});
        assert_eq!(Value::Object(all), expected);
    }

    #[test]
    fn absent_or_not_an_object_is_empty_and_broken_json_an_error() {
        assert_eq!(
            object_under(r#"{"id": "p2"}"#, "traits", None).expect("decodes"),
            Map::new()
        );
        for odd in [
            r#"null"#,
            r#""text""#,
            r#"[1, {"a": 2}]"#,
            r#"3.5"#,
            r#"true"#,
        ] {
            let json = format!(r#"{{"properties": {odd}, "after": {{"x": 1}}}}"#);
            assert_eq!(
                object_under(&json, "properties", None).expect("decodes"),
                Map::new(),
                "{odd}"
            );
        }
        assert!(
            object_under(r#"{"traits": {"plan": "pro"}"#, "traits", None).is_err(),
            "unterminated"
        );
        assert!(
            object_under(r#"[]"#, "traits", None).is_err(),
            "not an object"
        );
    }
}
