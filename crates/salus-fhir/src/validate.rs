//! Structural validation of a resource against the R4 structure definitions: every element
//! known to its type, arrays where the cardinality says many and single values where it
//! says one, required elements present, primitives of their JSON form (FHIR R4 §2.6.2
//! "JSON representation"). Each issue names the element as a FHIRPath (`Patient.name[0]`).

use crate::definitions::{ElementDef, Structures, structures};
use crate::index::date_range;
use crate::outcome::Issue;
use serde_json::{Map, Value};

/// The issues of `resource` (empty when it is structurally valid).
pub fn validate(resource: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    let st = structures();
    let Some(obj) = resource.as_object() else {
        issues.push(Issue::error(
            "structure",
            "a resource must be a JSON object",
        ));
        return issues;
    };
    let Some(rt) = obj.get("resourceType").and_then(Value::as_str) else {
        issues
            .push(Issue::error("required", "the resource has no resourceType").at("resourceType"));
        return issues;
    };
    if !st.is_resource(rt) {
        issues.push(
            Issue::error(
                "not-supported",
                format!("'{rt}' is not an R4 resource type"),
            )
            .at("resourceType"),
        );
        return issues;
    }
    let mut v = Walker {
        st,
        issues: &mut issues,
        depth: 0,
    };
    v.object(obj, rt, "", rt, true);
    issues
}

struct Walker<'a> {
    st: &'a Structures,
    issues: &'a mut Vec<Issue>,
    depth: usize,
}

fn upper_first(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + cs.as_str(),
        None => String::new(),
    }
}

/// The JSON form of a primitive type: `Some(check)` for primitives.
fn primitive(ty: &str) -> Option<fn(&Value) -> bool> {
    Some(match ty {
        "boolean" | "System.Boolean" => Value::is_boolean,
        "integer" | "unsignedInt" | "positiveInt" | "System.Integer" => {
            |v| v.is_i64() || v.is_u64()
        }
        "decimal" | "System.Decimal" => Value::is_number,
        "date" | "dateTime" | "instant" => |v| v.as_str().is_some_and(|s| date_range(s).is_some()),
        "string" | "code" | "id" | "markdown" | "uri" | "url" | "canonical" | "oid" | "uuid"
        | "base64Binary" | "time" | "xhtml" | "System.String" | "System.Time" | "System.Date"
        | "System.DateTime" => |v| v.as_str().is_some_and(|s| !s.trim().is_empty()),
        _ => return None,
    })
}

impl Walker<'_> {
    fn issue(&mut self, code: &'static str, path: &str, msg: String) {
        self.issues.push(Issue::error(code, msg).at(path));
    }

    /// The definition of member `key` of (type `root`, backbone `prefix`), and the type it
    /// takes when `key` is a choice (`valueQuantity` → `Quantity`).
    fn member(&self, root: &str, prefix: &str, key: &str) -> Option<(ElementDef, Option<String>)> {
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let found = self.st.element(root, &path).or_else(|| {
            (!prefix.is_empty())
                .then(|| self.st.element("BackboneElement", key))
                .flatten()
        });
        if let Some((_, d)) = found {
            return Some((d.clone(), None));
        }
        // A choice: `deceasedDateTime` for `deceased[x]`.
        for (i, _) in key.char_indices().skip(1) {
            let (head, tail) = key.split_at(i);
            if !tail.starts_with(|c: char| c.is_ascii_uppercase()) {
                continue;
            }
            let choice = if prefix.is_empty() {
                format!("{head}[x]")
            } else {
                format!("{prefix}.{head}[x]")
            };
            if let Some((_, d)) = self.st.element(root, &choice)
                && let Some(t) = d.types.iter().find(|t| upper_first(t) == tail)
            {
                return Some((d.clone(), Some(t.clone())));
            }
        }
        None
    }

    fn object(
        &mut self,
        obj: &Map<String, Value>,
        root: &str,
        prefix: &str,
        path: &str,
        is_resource: bool,
    ) {
        self.depth += 1;
        if self.depth > 64 {
            self.issue("structure", path, "the resource nests too deeply".into());
            return;
        }
        if obj.is_empty() {
            self.issue("structure", path, "an element must not be empty".into());
        }
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let here = format!("{path}.{key}");
            if let Some(base) = key.strip_prefix('_') {
                // A primitive's id and extensions.
                if self.member(root, prefix, base).is_none() {
                    self.issue("structure", &here, format!("unknown element '{key}'"));
                } else if !(value.is_object() || value.is_array()) {
                    self.issue(
                        "structure",
                        &here,
                        format!("'{key}' must be an object or an array"),
                    );
                }
                continue;
            }
            let Some((def, choice)) = self.member(root, prefix, key) else {
                self.issue(
                    "structure",
                    &here,
                    format!(
                        "unknown element '{key}' of {}",
                        if prefix.is_empty() {
                            root.to_owned()
                        } else {
                            format!("{root}.{prefix}")
                        }
                    ),
                );
                continue;
            };
            let ty = choice
                .clone()
                .or_else(|| def.types.first().cloned())
                .unwrap_or_default();
            let child_prefix = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Array(items) => {
                    if !def.is_array() {
                        self.issue(
                            "structure",
                            &here,
                            format!("'{key}' takes one value, not an array"),
                        );
                        continue;
                    }
                    if items.is_empty() {
                        self.issue(
                            "structure",
                            &here,
                            format!("'{key}' must not be an empty array"),
                        );
                    }
                    for (i, item) in items.iter().enumerate() {
                        self.value(
                            item,
                            &def,
                            &ty,
                            root,
                            &child_prefix,
                            &format!("{here}[{i}]"),
                        );
                    }
                }
                other => {
                    if def.is_array() {
                        self.issue("structure", &here, format!("'{key}' takes an array"));
                        continue;
                    }
                    self.value(other, &def, &ty, root, &child_prefix, &here);
                }
            }
        }
        // Required elements of this level.
        let st = self.st;
        let level: Vec<(String, u32)> = match st.get(root) {
            Some(s) => s
                .elements
                .iter()
                .filter(|(p, d)| {
                    d.min > 0
                        && if prefix.is_empty() {
                            !p.contains('.')
                        } else {
                            p.strip_prefix(prefix)
                                .and_then(|r| r.strip_prefix('.'))
                                .is_some_and(|r| !r.contains('.'))
                        }
                })
                .map(|(p, d)| (p.rsplit('.').next().unwrap_or(p).to_owned(), d.min))
                .collect(),
            None => vec![],
        };
        for (name, _) in level {
            let present = if let Some(head) = name.strip_suffix("[x]") {
                obj.keys()
                    .any(|k| k.starts_with(head) && k.len() > head.len())
            } else {
                obj.contains_key(&name)
            };
            if !present {
                self.issue(
                    "required",
                    &format!("{path}.{}", name.trim_end_matches("[x]")),
                    format!("'{}' is required", name.trim_end_matches("[x]")),
                );
            }
        }
        self.depth -= 1;
    }

    fn value(
        &mut self,
        v: &Value,
        def: &ElementDef,
        ty: &str,
        root: &str,
        prefix: &str,
        path: &str,
    ) {
        if let Some(r) = &def.content_ref {
            if let Some((r_root, r_path)) = r.split_once('.') {
                match v.as_object() {
                    Some(o) => self.object(o, r_root, r_path, path, false),
                    None => self.issue("structure", path, "must be an object".into()),
                }
            }
            return;
        }
        if v.is_null() {
            self.issue("structure", path, "null is not a value in FHIR JSON".into());
            return;
        }
        if let Some(check) = primitive(ty) {
            if !check(v) {
                self.issue("value", path, format!("not a valid {ty}"));
            }
            return;
        }
        let Some(o) = v.as_object() else {
            self.issue("structure", path, format!("a {ty} must be an object"));
            return;
        };
        match ty {
            "BackboneElement" | "Element" => self.object(o, root, prefix, path, false),
            "Resource" => match o.get("resourceType").and_then(Value::as_str) {
                Some(rt) if self.st.is_resource(rt) => self.object(o, rt, "", path, true),
                _ => self.issue(
                    "structure",
                    path,
                    "a contained resource needs a known resourceType".into(),
                ),
            },
            t if self.st.get(t).is_some() => self.object(o, t, "", path, false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(r: Value) -> Vec<String> {
        validate(&r)
            .into_iter()
            .filter_map(|i| i.expression)
            .collect()
    }

    #[test]
    fn valid_resources_pass_and_faults_are_located() {
        assert!(paths(json!({"resourceType": "Patient", "name": [{"family": "A", "given": ["B"]}],
            "deceasedDateTime": "2020-01-01", "birthDate": "1980-02-03",
            "contact": [{"name": {"family": "C"}}], "_birthDate": {"extension": [{"url": "u", "valueString": "x"}]}})).is_empty());
        assert_eq!(
            paths(json!({"resourceType": "Patient", "nmae": []})),
            ["Patient.nmae"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "name": {"family": "A"}})),
            ["Patient.name"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "birthDate": "1980-13-01"})),
            ["Patient.birthDate"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "active": "yes"})),
            ["Patient.active"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "name": [{"family": "A", "foo": 1}]})),
            ["Patient.name[0].foo"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "deceasedString": "x"})),
            ["Patient.deceasedString"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Patient", "link": [{"type": "seealso"}]})),
            ["Patient.link[0].other"]
        );
        assert_eq!(
            paths(json!({"resourceType": "Observation", "status": "final"})),
            ["Observation.code"]
        );
        assert_eq!(paths(json!({"resourceType": "Nope"})), ["resourceType"]);
    }
}
