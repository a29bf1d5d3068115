//! A stored profile's traits decoded from its JSON without the rest: the other fields are
//! skipped, not built, and of the traits only the keys a rule reads are kept. A batch
//! evaluation decodes every stored profile, and building the whole traits map (every
//! key and string a profile holds, to read `plan`) was most of that.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The traits of a stored profile's JSON (`{"traits": {...}, ...}`), only `keys` of them
/// when given; an absent `traits` is empty.
pub fn decode(state: &str, keys: Option<&[String]>) -> serde_json::Result<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_str(state);
    let traits = Profile { keys }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(traits)
}

/// The profile object: its `traits` kept, everything else skipped.
struct Profile<'k> {
    keys: Option<&'k [String]>,
}

impl<'de> DeserializeSeed<'de> for Profile<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Profile<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a profile object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut traits = Map::new();
        while let Some(is_traits) = map.next_key_seed(KeyIn(&["traits"]))? {
            if is_traits.is_some() {
                traits = map.next_value_seed(Traits { keys: self.keys })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(traits)
    }
}

/// The traits object: the wanted keys kept (all of them without a list).
struct Traits<'k> {
    keys: Option<&'k [String]>,
}

impl<'de> DeserializeSeed<'de> for Traits<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Traits<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a traits object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut traits = Map::new();
        loop {
            let key = match self.keys {
                None => map.next_key::<String>()?.map(Some),
                Some(keys) => map.next_key_seed(KeyIn(keys))?,
            };
            match key {
                None => return Ok(traits),
                Some(Some(key)) => {
                    traits.insert(key, map.next_value()?);
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
    fn keeps_the_traits_asked_for_and_skips_the_rest() {
        let state = json!({
            "id": "p1",
            "identities": {"traits": ["not these"], "email": ["a@example.com"]},
            "traits": {"plan": "pro", "email": "a@example.com", "nested": {"traits": {"plan": "x"}}, "esc\"aped": 1},
            "event_counts": {"traits": 3},
        })
        .to_string();
        let only =
            decode(&state, Some(&["plan".to_owned(), "esc\"aped".to_owned()])).expect("decodes");
        assert_eq!(Value::Object(only), json!({"plan": "pro", "esc\"aped": 1}));
        let all = decode(&state, None).expect("decodes");
        assert_eq!(
            Value::Object(all),
            json!({"plan": "pro", "email": "a@example.com", "nested": {"traits": {"plan": "x"}}, "esc\"aped": 1})
        );
        assert_eq!(
            decode(r#"{"id": "p2"}"#, None).expect("decodes"),
            Map::new()
        );
        assert!(
            decode(r#"{"traits": {"plan": "pro"}"#, None).is_err(),
            "unterminated"
        );
        assert!(
            decode(r#"{"traits": []}"#, None).is_err(),
            "traits not an object"
        );
    }
}
