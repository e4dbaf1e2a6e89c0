//! Canonical JSON: the byte form that is hashed. Object keys are sorted (by UTF-8 bytes),
//! no insignificant white space, numbers and strings as serde_json writes them. The form
//! must never change for a stored schema version: the hash chain depends on it.

use serde_json::Value;

/// Write `v` in canonical form.
pub fn to_canonical_string(v: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, v);
    // Only serde_json's own output and ASCII punctuation went in: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // serde_json's map is ordered by key already unless its `preserve_order`
            // feature is on somewhere in the build; sort only then.
            if !keys.is_sorted() {
                keys.sort_unstable();
            }
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(out, k);
                out.push(b':');
                if let Some(val) = map.get(k) {
                    write_value(out, val);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::String(s) => write_scalar(out, s),
        other => write_scalar(out, other),
    }
}

/// A string, number, boolean or null exactly as serde_json writes it.
fn write_scalar<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "é\n"}});
        assert_eq!(
            to_canonical_string(&v),
            r#"{"a":{"c":"é\n","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    /// The form before it wrote into one buffer: it must not change (hashes depend on it).
    fn reference(v: &Value) -> String {
        fn walk(out: &mut String, v: &Value) {
            match v {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort_unstable();
                    out.push('{');
                    for (i, k) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&Value::String(k.clone()).to_string());
                        out.push(':');
                        walk(out, &map[k.as_str()]);
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        walk(out, item);
                    }
                    out.push(']');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let mut out = String::new();
        walk(&mut out, v);
        out
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC*".prop_map(Value::from),
            "[\\x00-\\x1f\"\\\\é€😀]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_form_is_unchanged_for_any_value(v in any_value()) {
            proptest::prop_assert_eq!(to_canonical_string(&v), reference(&v));
        }

        /// What is stored is the canonical text; what is verified is the canonical text
        /// of the value read back from it. They must be the same bytes, or `audit verify`
        /// would call an untouched event altered.
        #[test]
        fn canonical_text_reads_back_to_the_same_value_and_bytes(v in any_value()) {
            let text = to_canonical_string(&v);
            let back: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(&back, &v);
            proptest::prop_assert_eq!(to_canonical_string(&back), text);
        }
    }

    /// Found by the `canonical_json` fuzz target: without serde_json's `float_roundtrip`
    /// its parser reads "5.555555555555555e41" (what it writes for this number) as a
    /// neighbouring float.
    #[test]
    fn long_decimal_numbers_survive_a_round_trip() {
        let v: Value = serde_json::from_str("555555555555555555555555555555555555555555").unwrap();
        let text = to_canonical_string(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        assert_eq!(to_canonical_string(&back), text);
    }

    #[test]
    fn same_content_in_another_key_order_gives_same_bytes() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":true,"q":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"q":null,"p":true},"x":1}"#).unwrap();
        assert_eq!(to_canonical_string(&a), to_canonical_string(&b));
    }
}
