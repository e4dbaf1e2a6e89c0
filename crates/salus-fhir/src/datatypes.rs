//! FHIR R4 datatypes as the clinical mappings read and write them: references to Salus
//! records, CodeableConcepts whose first coding is what the domain keeps, UCUM quantities,
//! date-times, and the unmodelled elements kept beside an aggregate (`fhir_elements`)
//! merged back into its rendering.

use crate::outcome::Issue;
use chrono::{DateTime, NaiveDate, Utc};
use salus_domain::clinical::observation::Coding;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The extension that carries why an entry's status is what it is (the reason of an
/// amendment or of entering in error), which FHIR status codes cannot say: a `valueString`.
pub const STATUS_REASON: &str = "urn:salus:fhir:extension:status-reason";

/// The UCUM code system.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// The reason Salus records for a FHIR amendment or deletion that gives none.
pub const DEFAULT_REASON: &str = "changed through the FHIR API";

/// An element Salus cannot keep as sent.
pub fn refused(path: impl Into<String>, msg: impl Into<String>) -> Issue {
    Issue::error("not-supported", msg).at(path)
}

pub fn invalid(path: impl Into<String>, msg: impl Into<String>) -> Issue {
    Issue::error("invalid", msg).at(path)
}

pub fn required(path: impl Into<String>, msg: impl Into<String>) -> Issue {
    Issue::error("required", msg).at(path)
}

/// An instant as the clinical resources write it: UTC, seconds, and a fraction only when
/// there is one (`2024-05-01T10:00:00Z`).
pub fn date_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

/// A FHIR dateTime with a time and a zone (a partial date is not an instant).
pub fn parse_date_time(s: &str, path: &str) -> Result<DateTime<Utc>, Issue> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            refused(
                path,
                format!("'{s}' is not a date-time with a time and a zone (e.g. 2024-05-01T10:00:00Z); Salus keeps this as an instant"),
            )
        })
}

/// A FHIR date or dateTime as the statements keep an onset: `YYYY-MM-DD` or an instant.
pub fn parse_day_or_instant(s: &str, path: &str) -> Result<String, Issue> {
    let t = s.trim();
    if NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() {
        return Ok(t.to_owned());
    }
    parse_date_time(t, path).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A JSON number for `x`: whole numbers as integers (`72`, not `72.0`).
pub fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// The id of `Type/<uuid>` in a Reference (`{"reference": "Patient/…"}`), and what else
/// the Reference holds (display, …).
pub fn split_reference(
    v: &Value,
    target: &str,
    path: &str,
) -> Result<(Uuid, Option<Value>), Issue> {
    let Some(o) = v.as_object() else {
        return Err(invalid(path, "a Reference is a JSON object"));
    };
    let r = o.get("reference").and_then(Value::as_str).unwrap_or("");
    let id = r
        .strip_prefix(&format!("{target}/"))
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            refused(
                format!("{path}.reference"),
                format!("'{r}' does not name a Salus {target} ({target}/<id>)"),
            )
        })?;
    let mut rest = o.clone();
    rest.remove("reference");
    Ok((id, nonempty(rest)))
}

/// Take the Reference `key` of `o` (of resource type `type_name`) naming a Salus `target`
/// out of it: its id, the rest of the Reference left in `o`. `Ok(None)` when absent; a
/// Reference that names no Salus `target` is an issue at `type_name.key`.
pub fn take_reference(
    o: &mut Map<String, Value>,
    key: &str,
    target: &str,
    type_name: &str,
) -> Result<Option<Uuid>, Issue> {
    let Some(v) = o.remove(key) else {
        return Ok(None);
    };
    let (id, rest) = split_reference(&v, target, &format!("{type_name}.{key}"))?;
    if let Some(rest) = rest {
        o.insert(key.into(), rest);
    }
    Ok(Some(id))
}

/// [`take_reference`] of an element the mapping requires: an issue at `type_name.key`
/// saying `why` when it is absent; any issue goes to `issues`.
pub fn take_required_reference(
    o: &mut Map<String, Value>,
    key: &str,
    target: &str,
    type_name: &str,
    why: impl Into<String>,
    issues: &mut Vec<Issue>,
) -> Option<Uuid> {
    match take_reference(o, key, target, type_name) {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            issues.push(required(format!("{type_name}.{key}"), why));
            None
        }
        Err(e) => {
            issues.push(e);
            None
        }
    }
}

/// `{"reference": "Type/<id>"}` with what else the Reference held.
pub fn reference(target: &str, id: Uuid, rest: Option<&Value>) -> Value {
    let mut v = json!({ "reference": format!("{target}/{id}") });
    if let Some(r) = rest {
        merge(&mut v, r);
    }
    v
}

/// The first coding of a CodeableConcept as the domain keeps it (system, code, display),
/// and the rest of the concept (other codings, text).
pub fn split_concept(v: &Value, path: &str) -> Result<(Coding, Option<Value>), Issue> {
    let Some(o) = v.as_object() else {
        return Err(invalid(path, "a CodeableConcept is a JSON object"));
    };
    let codings = o.get("coding").and_then(Value::as_array);
    let first = codings
        .and_then(|c| c.first())
        .and_then(Value::as_object)
        .ok_or_else(|| {
            required(
                format!("{path}.coding"),
                "Salus keeps a coded concept: at least one coding with a system and a code",
            )
        })?;
    let text = |k: &str| first.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(system), Some(code)) = (text("system"), text("code")) else {
        return Err(required(
            format!("{path}.coding[0]"),
            "the first coding needs a system and a code",
        ));
    };
    let coding = Coding {
        system,
        code,
        display: text("display"),
    };
    let mut rest = o.clone();
    let others: Vec<Value> = codings.map(|c| c[1..].to_vec()).unwrap_or_default();
    if others.is_empty() {
        rest.remove("coding");
    } else {
        rest.insert("coding".into(), Value::Array(others));
    }
    // The first coding's other elements (version, userSelected, id, extension) are kept
    // with the code they belong to, and given back only while the aggregate holds it.
    let extras: Map<String, Value> = first
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "system" | "code" | "display"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !extras.is_empty() {
        rest.insert(
            FIRST_CODING.into(),
            json!({"of": first_key(&coding), "with": extras}),
        );
    }
    Ok((coding, nonempty(rest)))
}

/// Where the kept part of a concept (see [`split_concept`]) holds the first coding's
/// elements besides system, code and display. Not a FHIR element: [`concept`] takes it out.
const FIRST_CODING: &str = "salus:firstCoding";

fn first_key(c: &Coding) -> String {
    format!("{}|{}", c.system, c.code)
}

/// A CodeableConcept of `c` first, then what else the concept held.
pub fn concept(c: &Coding, rest: Option<&Value>) -> Value {
    let mut coding = json!({ "system": c.system, "code": c.code });
    if let Some(d) = &c.display {
        coding["display"] = json!(d);
    }
    let mut v = json!({ "coding": [coding] });
    if let Some(r) = rest {
        merge(&mut v, r);
    }
    if let Some(kept) = v.as_object_mut().and_then(|o| o.remove(FIRST_CODING))
        && kept["of"].as_str() == Some(first_key(c).as_str())
        && let (Some(with), Some(first)) =
            (kept["with"].as_object(), v["coding"][0].as_object_mut())
    {
        for (k, x) in with {
            first.insert(k.clone(), x.clone());
        }
    }
    v
}

/// A UCUM Quantity as the domain keeps it: the value and the UCUM code; what else it held
/// (a `unit` display other than the code). A comparator or another system is refused.
pub fn split_quantity(v: &Value, path: &str) -> Result<(f64, String, Option<Value>), Issue> {
    let Some(o) = v.as_object() else {
        return Err(invalid(path, "a Quantity is a JSON object"));
    };
    for k in o.keys() {
        if !matches!(k.as_str(), "value" | "unit" | "system" | "code") {
            return Err(refused(
                format!("{path}.{k}"),
                format!("Salus keeps a quantity's value and UCUM unit, not {k}"),
            ));
        }
    }
    let value = o
        .get("value")
        .and_then(Value::as_f64)
        .ok_or_else(|| required(format!("{path}.value"), "a quantity needs a value"))?;
    if let Some(s) = o.get("system").and_then(Value::as_str)
        && s != UCUM
    {
        return Err(refused(
            format!("{path}.system"),
            format!("units are UCUM ({UCUM}), not {s}"),
        ));
    }
    let unit = o.get("unit").and_then(Value::as_str);
    let code = o
        .get("code")
        .and_then(Value::as_str)
        .or(unit)
        .ok_or_else(|| {
            required(
                format!("{path}.code"),
                "a quantity needs its UCUM unit in code",
            )
        })?
        .to_owned();
    let rest = match unit {
        Some(u) if u != code => Some(json!({ "unit": u })),
        _ => None,
    };
    Ok((value, code, rest))
}

/// A UCUM Quantity, with what else it held.
pub fn quantity(value: f64, unit: &str, rest: Option<&Value>) -> Value {
    let mut v = json!({ "value": number(value), "unit": unit, "system": UCUM, "code": unit });
    if let Some(r) = rest {
        merge(&mut v, r);
    }
    v
}

/// Whether the kept elements say (by [`crate::statement::ABSENT`]) that `element` was
/// left out while it stood for `now`: the rendering leaves it out too.
pub fn absent(kept: &Map<String, Value>, element: &str, now: &Value) -> bool {
    kept.get(crate::statement::ABSENT)
        .and_then(|a| a.get(element))
        == Some(now)
}

/// The kept elements with the [`crate::statement::ABSENT`] marks of what a write left
/// out, at the values the aggregate holds after it (none: no mark).
pub fn with_absent(mut kept: Map<String, Value>, marks: &[(&str, Value)]) -> Map<String, Value> {
    let a: Map<String, Value> = marks
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    if !a.is_empty() {
        kept.insert(crate::statement::ABSENT.into(), Value::Object(a));
    }
    kept
}

/// The kept elements of an aggregate (its `fhir_elements`), as a map (empty without).
pub fn kept_of(v: &Option<Value>) -> Map<String, Value> {
    v.as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `Some(object)` unless it is empty.
pub fn nonempty(m: Map<String, Value>) -> Option<Value> {
    (!m.is_empty()).then_some(Value::Object(m))
}

/// Merge the kept elements `extra` into a rendering: objects member by member, arrays
/// appended after what the rendering holds, anything else from `extra`.
pub fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    Some(Value::Array(a)) if v.is_array() => {
                        if let Some(more) = v.as_array() {
                            a.extend(more.iter().cloned());
                        }
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, e) => *b = e.clone(),
    }
}

/// The status reason a resource carries in [`STATUS_REASON`], taken out of its extensions
/// (the other extensions stay).
pub fn take_status_reason(
    o: &mut Map<String, Value>,
    type_name: &str,
) -> Result<Option<String>, Issue> {
    let Some(Value::Array(exts)) = o.get_mut("extension") else {
        return Ok(None);
    };
    let mut reason = None;
    let mut err = None;
    exts.retain(|x| {
        if x.get("url").and_then(Value::as_str) != Some(STATUS_REASON) {
            return true;
        }
        match x.get("valueString").and_then(Value::as_str) {
            Some(s) => reason = Some(s.to_owned()),
            None => {
                err = Some(invalid(
                    format!("{type_name}.extension('{STATUS_REASON}')"),
                    "the status-reason extension carries a valueString",
                ))
            }
        }
        false
    });
    if exts.is_empty() {
        o.remove("extension");
    }
    match err {
        Some(e) => Err(e),
        None => Ok(reason),
    }
}

/// The extension saying why the status is what it is.
pub fn status_reason_extension(reason: &str) -> Value {
    json!({ "url": STATUS_REASON, "valueString": reason })
}

/// `meta` as rendered: the version and the time of the last change, with the kept
/// elements of the client's (profile, tag, security).
pub fn meta(version: i64, updated: DateTime<Utc>) -> Value {
    json!({ "versionId": version.to_string(), "lastUpdated": crate::patient::instant(updated) })
}

/// Take the elements the server manages out of what is kept: `id`, `resourceType`, and
/// `meta.versionId`, `meta.lastUpdated`.
pub fn strip_managed(o: &mut Map<String, Value>) {
    o.remove("resourceType");
    o.remove("id");
    if let Some(Value::Object(m)) = o.get_mut("meta") {
        m.remove("versionId");
        m.remove("lastUpdated");
        if m.is_empty() {
            o.remove("meta");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concept_splits_into_its_first_coding_and_the_rest_and_back() {
        let c = json!({"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                                  {"system": "urn:local", "code": "hr"}], "text": "HR"});
        let (coding, rest) = split_concept(&c, "Observation.code").unwrap();
        assert_eq!(coding.code, "8867-4");
        assert_eq!(concept(&coding, rest.as_ref()), c);
        // The first coding's version and userSelected come back with it, and go when the
        // code they belong to is replaced.
        let versioned = json!({"coding": [{"system": "s", "code": "c", "version": "1", "userSelected": true}], "text": "t"});
        let (mut coding, rest) = split_concept(&versioned, "X.code").unwrap();
        assert_eq!(concept(&coding, rest.as_ref()), versioned);
        coding.code = "d".into();
        assert_eq!(
            concept(&coding, rest.as_ref()),
            json!({"coding": [{"system": "s", "code": "d"}], "text": "t"})
        );
        let e = split_concept(&json!({"coding": [{"code": "c"}]}), "X.code").unwrap_err();
        assert_eq!(e.expression.as_deref(), Some("X.code.coding[0]"));
    }

    #[test]
    fn quantities_keep_their_display_unit_and_refuse_comparators() {
        let q = json!({"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"});
        let (v, u, rest) = split_quantity(&q, "Q").unwrap();
        assert_eq!((v, u.as_str()), (120.0, "mm[Hg]"));
        assert_eq!(quantity(v, &u, rest.as_ref()), q);
        assert!(split_quantity(&json!({"value": 1, "comparator": "<", "code": "g"}), "Q").is_err());
        assert!(split_quantity(&json!({"value": 1, "system": "urn:x", "code": "g"}), "Q").is_err());
    }

    #[test]
    fn date_times_need_a_zone_and_render_in_utc() {
        let t = parse_date_time("2024-05-01T12:00:00+02:00", "p").unwrap();
        assert_eq!(date_time(t), "2024-05-01T10:00:00Z");
        assert!(parse_date_time("2024-05-01", "p").is_err());
        assert_eq!(number(72.0), json!(72));
        assert_eq!(number(36.6), json!(36.6));
    }
}
