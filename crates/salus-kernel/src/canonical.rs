//! Canonical JSON: the byte form that is hashed. Object keys are sorted (by UTF-8 bytes),
//! no insignificant white space, numbers and strings as serde_json writes them. The form
//! must never change for a stored schema version: the hash chain depends on it.

use serde_json::Value;

/// Write `v` in canonical form.
pub fn to_canonical_string(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                if let Some(val) = map.get(k) {
                    write_value(out, val);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's string escaping is deterministic; reuse it.
    out.push_str(&Value::String(s.to_owned()).to_string());
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

    #[test]
    fn same_content_in_another_key_order_gives_same_bytes() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":true,"q":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"q":null,"p":true},"x":1}"#).unwrap();
        assert_eq!(to_canonical_string(&a), to_canonical_string(&b));
    }
}
