//! JSON object merged field by field, last writer wins per field.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::version::Version;

/// The text of one JSON value. Deserializing checks that it parses, so turning it back into a
/// `serde_json::Value` cannot fail. Stored as text because postcard cannot hold a
/// `serde_json::Value` (it needs `deserialize_any`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct JsonText(String);

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(serde::de::Error::custom)?;
        Ok(JsonText(text))
    }
}

impl JsonText {
    fn of(value: &serde_json::Value) -> JsonText {
        JsonText(value.to_string())
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("invariant: JsonText holds parsed or checked JSON")
    }
}

/// One field's last write: `value` `None` means the field was removed at `version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Field {
    version: Version,
    value: Option<JsonText>,
}

/// A JSON object merged per field by last writer wins, plus `cleared`: a whole-map delete or
/// replace at that version hides every field written before it. Fields hidden by `cleared` are
/// dropped, so equal contents compare equal. The default is the empty map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Repr")]
pub struct LwwMap {
    fields: BTreeMap<String, Field>,
    cleared: Option<Version>,
}

#[derive(Deserialize)]
struct Repr {
    fields: BTreeMap<String, Field>,
    cleared: Option<Version>,
}

impl From<Repr> for LwwMap {
    fn from(r: Repr) -> LwwMap {
        let mut map = LwwMap {
            fields: r.fields,
            cleared: r.cleared,
        };
        map.drop_cleared();
        map
    }
}

impl LwwMap {
    /// The live fields as a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.live()
            .map(|(name, text)| (name.to_owned(), text.to_value()))
            .collect()
    }

    /// The JSON text of a live field.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field)?.value.as_ref().map(|t| t.0.as_str())
    }

    /// The version of the latest whole-map delete or replace, if any.
    pub fn cleared(&self) -> Option<&Version> {
        self.cleared.as_ref()
    }

    /// Per field, the write with the greater version wins; `cleared` takes the greater version.
    pub fn merge(&mut self, other: &LwwMap) {
        for (name, theirs) in &other.fields {
            match self.fields.get_mut(name) {
                Some(mine) if *mine >= *theirs => {}
                Some(mine) => *mine = theirs.clone(),
                None => {
                    self.fields.insert(name.clone(), theirs.clone());
                }
            }
        }
        self.cleared = self.cleared.clone().max(other.cleared.clone());
        self.drop_cleared();
    }

    /// Bytes of the live fields' names and JSON texts.
    pub fn live_bytes(&self) -> usize {
        self.live()
            .map(|(name, text)| name.len() + text.0.len())
            .sum()
    }

    /// Whether no field is live.
    pub fn is_empty(&self) -> bool {
        self.live().next().is_none()
    }

    /// The delta of a JSON merge patch at `version`: `null` removes a field.
    pub(crate) fn patch_delta(
        patch: &serde_json::Map<String, serde_json::Value>,
        version: &Version,
    ) -> LwwMap {
        let fields = patch.iter().map(|(name, value)| {
            let value = (!value.is_null()).then(|| JsonText::of(value));
            (
                name.clone(),
                Field {
                    version: version.clone(),
                    value,
                },
            )
        });
        LwwMap {
            fields: fields.collect(),
            cleared: None,
        }
    }

    /// The delta of replacing the whole map with `object` at `version` (a `null` field is
    /// stored as JSON `null`, as written).
    pub(crate) fn replace_delta(
        object: &serde_json::Map<String, serde_json::Value>,
        version: &Version,
    ) -> LwwMap {
        let fields = object.iter().map(|(name, value)| {
            (
                name.clone(),
                Field {
                    version: version.clone(),
                    value: Some(JsonText::of(value)),
                },
            )
        });
        LwwMap {
            fields: fields.collect(),
            cleared: Some(version.clone()),
        }
    }

    /// The delta of deleting the whole map at `version`.
    pub(crate) fn clear_delta(version: &Version) -> LwwMap {
        LwwMap {
            fields: BTreeMap::new(),
            cleared: Some(version.clone()),
        }
    }

    fn live(&self) -> impl Iterator<Item = (&str, &JsonText)> {
        self.fields
            .iter()
            .filter_map(|(name, f)| Some((name.as_str(), f.value.as_ref()?)))
    }

    fn drop_cleared(&mut self) {
        if let Some(cleared) = &self.cleared {
            self.fields.retain(|_, f| f.version >= *cleared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use serde_json::json;

    fn v(ts: u64, origin: &str) -> Version {
        Version {
            ts: Timestamp(ts),
            origin: origin.into(),
        }
    }

    fn obj(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn per_field_last_writer_wins_and_null_removes() {
        let mut a = LwwMap::patch_delta(&obj(json!({"x": 1, "y": [1, 2]})), &v(1, "eu"));
        let b = LwwMap::patch_delta(&obj(json!({"x": 2, "y": null})), &v(2, "us"));
        let c = LwwMap::patch_delta(&obj(json!({"x": 3, "z": "s"})), &v(1, "zz"));
        a.merge(&b);
        a.merge(&c);
        assert_eq!(a.to_json(), obj(json!({"x": 2, "z": "s"})));
        assert_eq!(a.get("y"), None);
        assert_eq!(a.get("z"), Some("\"s\""));
    }

    #[test]
    fn clear_hides_older_fields_only() {
        let mut a = LwwMap::patch_delta(&obj(json!({"old": 1})), &v(1, "eu"));
        let newer = LwwMap::patch_delta(&obj(json!({"new": 1})), &v(5, "eu"));
        a.merge(&newer);
        a.merge(&LwwMap::clear_delta(&v(3, "us")));
        assert_eq!(a.to_json(), obj(json!({"new": 1})));
        assert_eq!(a.cleared(), Some(&v(3, "us")));
        let replaced = LwwMap::replace_delta(&obj(json!({"n": null})), &v(9, "us"));
        a.merge(&replaced);
        assert_eq!(a.to_json(), obj(json!({"n": null})));
        a.merge(&LwwMap::clear_delta(&v(10, "us")));
        assert!(a.is_empty());
    }

    #[test]
    fn deserialize_rejects_text_that_is_not_json() {
        let ok = serde_json::from_str::<JsonText>(r#""[1,2]""#);
        assert!(ok.is_ok());
        let bad = serde_json::from_str::<JsonText>(r#""[1,""#);
        assert!(bad.is_err());
    }
}
