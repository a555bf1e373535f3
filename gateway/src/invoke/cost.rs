//! What one invoke costs against its rate limit (the capability's `cost`), measured on the
//! payload's JSON text without building a `serde_json::Value` of it.
//!
//! ```text
//!  inputs: items of the array at `field` (another value: one) ─┐
//!  bytes:  length of the payload's JSON text                   ├─▶ ceil(measure / per), ≥ 1
//!  tokens: ceil(UTF-8 bytes / 4) of each string at `field`     ─┘
//! ```
//!
//! A payload without the field, or of the wrong shape, costs one unit: the schema check that
//! follows refuses it anyway.

use std::borrow::Cow;

use bkg_core::{Cost, CostUnit};
use serde_json::value::RawValue;

/// Units charged for one call with this payload.
pub fn units(cost: Option<&Cost>, payload: &RawValue) -> u32 {
    let Some(cost) = cost else {
        return 1;
    };
    let measure = match cost.unit {
        CostUnit::Bytes => payload.get().len() as u64,
        CostUnit::Inputs => at_pointer(payload, cost.field()).map_or(1, count_inputs),
        CostUnit::Tokens => at_pointer(payload, cost.field()).map_or(1, count_tokens),
    };
    cost.units(measure)
}

/// The value a JSON pointer (RFC 6901) names, found by opening only the objects and arrays
/// on its way.
fn at_pointer<'a>(root: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut current = root;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token: Cow<'_, str> = if token.contains('~') {
            Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(token)
        };
        let text = current.get();
        current = if text.starts_with('{') {
            let object: Vec<(Cow<'a, str>, &'a RawValue)> =
                serde_json::from_str::<Entries<'a>>(text).ok()?.0;
            // The last of duplicate names wins, as when the payload is parsed into a map.
            object.into_iter().rev().find(|(name, _)| *name == token)?.1
        } else if text.starts_with('[') {
            let index: usize = token.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
            *items.get(index)?
        } else {
            return None;
        };
    }
    Some(current)
}

/// An object's members in order, names borrowed where they have no escapes.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Items of an array; any other value is one input.
fn count_inputs(value: &RawValue) -> u64 {
    if value.get().starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(value.get()).map_or(1, |items| items.len() as u64)
    } else {
        1
    }
}

/// Estimated tokens of a string or of each string of an array: a quarter of the UTF-8 bytes,
/// rounded up (the common rule of thumb for English with BPE and WordPiece vocabularies).
fn count_tokens(value: &RawValue) -> u64 {
    fn of(StrLen(len): StrLen) -> u64 {
        (len as u64).div_ceil(4).max(1)
    }
    let text = value.get();
    if text.starts_with('"') {
        serde_json::from_str::<StrLen>(text).map_or(1, of)
    } else if text.starts_with('[') {
        serde_json::from_str::<Vec<StrLen>>(text).map_or(1, |items| items.into_iter().map(of).sum())
    } else {
        1
    }
}

/// The UTF-8 length of a JSON string, read without keeping the string.
struct StrLen(usize);

impl<'de> serde::Deserialize<'de> for StrLen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = StrLen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StrLen, E> {
                Ok(StrLen(s.len()))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(yaml: &str) -> Cost {
        serde_yaml::from_str(yaml).expect("cost")
    }

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn inputs_count_the_items_of_the_field() {
        let c = cost("{unit: inputs}");
        let texts: Vec<String> = (0..256).map(|i| format!("text {i}")).collect();
        let payload = serde_json::json!({"input": texts, "normalize": true}).to_string();
        assert_eq!(units(Some(&c), raw(&payload)), 256);
        assert_eq!(units(Some(&c), raw(r#"{"input": "one"}"#)), 1);
        assert_eq!(
            units(Some(&c), raw(r#"{"input": []}"#)),
            1,
            "never below one"
        );
        assert_eq!(units(Some(&c), raw(r#"{"other": [1, 2]}"#)), 1);
        assert_eq!(units(Some(&c), raw(r#"[1, 2, 3]"#)), 1);
        assert_eq!(units(None, raw(&payload)), 1);
        // Escaped names and duplicates read as a parser would.
        assert_eq!(units(Some(&c), raw(r#"{"in\u0070ut": [1, 2]}"#)), 2);
        assert_eq!(
            units(Some(&c), raw(r#"{"input": [1], "input": [1, 2, 3]}"#)),
            3
        );
    }

    #[test]
    fn fields_are_json_pointers() {
        let c = cost("{unit: inputs, field: /batch/0/items}");
        assert_eq!(
            units(Some(&c), raw(r#"{"batch": [{"items": [1, 2, 3, 4]}]}"#)),
            4
        );
        let c = cost("{unit: inputs, field: /a~1b}");
        assert_eq!(units(Some(&c), raw(r#"{"a/b": [1, 2]}"#)), 2);
        let c = cost("{unit: inputs, field: ''}");
        assert_eq!(units(Some(&c), raw(r#"[1, 2, 3]"#)), 3);
    }

    #[test]
    fn bytes_and_tokens_divide_by_per_and_round_up() {
        let c = cost("{unit: bytes, per: 10}");
        assert_eq!(units(Some(&c), raw(r#"{"x": "0123456789"}"#)), 2);
        let c = cost("{unit: bytes}");
        assert_eq!(units(Some(&c), raw(r#"{"x":1}"#)), 7);
        let c = cost("{unit: tokens}");
        assert_eq!(units(Some(&c), raw(r#"{"input": "12345678"}"#)), 2);
        assert_eq!(units(Some(&c), raw(r#"{"input": ["123456789", "a"]}"#)), 4);
        let c = cost("{unit: tokens, per: 100}");
        assert_eq!(units(Some(&c), raw(r#"{"input": "a"}"#)), 1);
    }
}
