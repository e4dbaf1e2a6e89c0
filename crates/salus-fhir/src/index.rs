//! Index values of a resource per search parameter: the parameter's FHIRPath expression
//! (from the R4 definitions) evaluated over the resource, and each node found turned into
//! the values its parameter type searches on (FHIR R4 §3.1.1 "Search", per type).

use crate::definitions::{ParamType, SearchParameter, search_parameters};
use crate::fhirpath::{self, EvalError, Expr, Node, ParseError};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;

/// One value a resource is found by.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// A string as written (matching folds case and accents).
    String(String),
    Token {
        system: Option<String>,
        code: String,
    },
    /// A literal reference (`Patient/123`, an absolute URL, a canonical).
    Reference(String),
    /// The instants a date, date-time or period covers: `[low, high)`.
    Date {
        low: DateTime<Utc>,
        high: DateTime<Utc>,
    },
    Number(f64),
    Quantity {
        value: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri(String),
    /// The text of a coded value (`CodeableConcept.text`, `Coding.display`,
    /// `Identifier.type.text`), searched by a token's `:text`.
    Text(String),
    /// The identifier of a logical reference (`Reference.identifier`), searched by a
    /// reference's `:identifier`.
    ReferenceIdentifier {
        system: Option<String>,
        value: String,
    },
    /// An identifier with its type (`Identifier.type.coding`), searched by `:of-type`.
    TypedIdentifier {
        type_system: String,
        type_code: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    #[error("search parameter {0} has no expression")]
    NoExpression(String),
    #[error("search parameter {0}: {1}")]
    Parse(String, ParseError),
    #[error("search parameter {0}: {1}")]
    Eval(String, EvalError),
}

/// Every R4 search parameter's expression, parsed once (by parameter id).
static COMPILED: LazyLock<HashMap<String, Result<Expr, ParseError>>> = LazyLock::new(|| {
    search_parameters()
        .all
        .iter()
        .filter_map(|p| {
            p.expression
                .as_ref()
                .map(|e| (p.id.clone(), fhirpath::parse(e)))
        })
        .collect()
});

/// The parsed expression of `param`.
pub fn compiled(param: &SearchParameter) -> Result<&'static Expr, IndexError> {
    match COMPILED.get(&param.id) {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(IndexError::Parse(param.id.clone(), e.clone())),
        None => Err(IndexError::NoExpression(param.id.clone())),
    }
}

/// The values `resource` is found by under `param`.
pub fn extract(param: &SearchParameter, resource: &Value) -> Result<Vec<IndexValue>, IndexError> {
    let expr = compiled(param)?;
    let nodes =
        fhirpath::evaluate(expr, resource).map_err(|e| IndexError::Eval(param.id.clone(), e))?;
    let mut out = Vec::new();
    for n in &nodes {
        values_of(param.kind, n, &mut out);
    }
    Ok(out)
}

/// The parameters of a composite parameter that this server searches on: exactly two
/// components, the first a token (the code the pair is about), neither relative to
/// `%resource`. (Of the R4 composites, this leaves out MolecularSequence's three-part
/// coordinates and DocumentReference `relationship`, whose component definitions are
/// crossed in the published R4 package.)
pub fn composite_parts(
    param: &SearchParameter,
) -> Option<(&'static SearchParameter, &'static SearchParameter)> {
    let [a, b] = param.component.as_slice() else {
        return None;
    };
    let all = search_parameters();
    let (first, second) = (all.by_url(&a.definition)?, all.by_url(&b.definition)?);
    let relative = |e: &str| !e.contains('%');
    let usable = first.kind == ParamType::Token
        && !matches!(second.kind, ParamType::Composite | ParamType::Special)
        && relative(&a.expression)
        && relative(&b.expression);
    usable.then_some((first, second))
}

/// The component expressions of every composite parameter, parsed once (by parameter id).
static COMPONENTS: LazyLock<HashMap<String, Vec<Result<Expr, ParseError>>>> = LazyLock::new(|| {
    search_parameters()
        .all
        .iter()
        .filter(|p| p.kind == ParamType::Composite)
        .map(|p| {
            let parsed = p
                .component
                .iter()
                .map(|c| fhirpath::parse(&c.expression))
                .collect();
            (p.id.clone(), parsed)
        })
        .collect()
});

/// One node of a composite parameter: its first component's values and its second's.
pub type Pair = (Vec<IndexValue>, Vec<IndexValue>);

/// The pairs `resource` is found by under the composite `param` (see [`composite_parts`]):
/// for each node of its expression, the first component's tokens and the second's values.
/// Empty for a composite this server does not search on.
pub fn extract_pairs(param: &SearchParameter, resource: &Value) -> Result<Vec<Pair>, IndexError> {
    let Some((first, second)) = composite_parts(param) else {
        return Ok(Vec::new());
    };
    let (Some(Ok(a)), Some(Ok(b))) = (
        COMPONENTS.get(&param.id).and_then(|c| c.first()),
        COMPONENTS.get(&param.id).and_then(|c| c.get(1)),
    ) else {
        return Ok(Vec::new());
    };
    let expr = compiled(param)?;
    let eval = |e| IndexError::Eval(param.id.clone(), e);
    let mut out = Vec::new();
    for node in fhirpath::evaluate(expr, resource).map_err(eval)? {
        let mut firsts = Vec::new();
        for n in fhirpath::evaluate_at(a, resource, &node).map_err(eval)? {
            values_of(first.kind, &n, &mut firsts);
        }
        let mut seconds = Vec::new();
        for n in fhirpath::evaluate_at(b, resource, &node).map_err(eval)? {
            values_of(second.kind, &n, &mut seconds);
        }
        if !firsts.is_empty() && !seconds.is_empty() {
            out.push((firsts, seconds));
        }
    }
    Ok(out)
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    match v.get(k) {
        Some(Value::String(x)) => vec![x.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => vec![],
    }
}

fn values_of(kind: ParamType, n: &Node<'_>, out: &mut Vec<IndexValue>) {
    let ty = n.type_name().unwrap_or("");
    let v: &Value = &n.value;
    match kind {
        ParamType::String => match ty {
            "HumanName" => {
                for k in ["family", "given", "prefix", "suffix", "text"] {
                    out.extend(strings(v, k).into_iter().map(IndexValue::String));
                }
            }
            "Address" => {
                for k in [
                    "line",
                    "city",
                    "district",
                    "state",
                    "postalCode",
                    "country",
                    "text",
                ] {
                    out.extend(strings(v, k).into_iter().map(IndexValue::String));
                }
            }
            _ => {
                if let Some(x) = v.as_str() {
                    out.push(IndexValue::String(x.to_owned()));
                }
            }
        },
        ParamType::Token => match ty {
            "Coding" => {
                if let Some(code) = s(v, "code") {
                    out.push(IndexValue::Token {
                        system: s(v, "system"),
                        code,
                    });
                }
                out.extend(s(v, "display").map(IndexValue::Text));
            }
            "CodeableConcept" => {
                if let Some(Value::Array(cs)) = v.get("coding") {
                    for c in cs {
                        if let Some(code) = s(c, "code") {
                            out.push(IndexValue::Token {
                                system: s(c, "system"),
                                code,
                            });
                        }
                        out.extend(s(c, "display").map(IndexValue::Text));
                    }
                }
                out.extend(s(v, "text").map(IndexValue::Text));
            }
            "Identifier" => {
                if let Some(code) = s(v, "value") {
                    out.push(IndexValue::Token {
                        system: s(v, "system"),
                        code: code.clone(),
                    });
                    let ty = v.get("type");
                    if let Some(Value::Array(cs)) = ty.and_then(|t| t.get("coding")) {
                        for c in cs {
                            if let (Some(ts), Some(tc)) = (s(c, "system"), s(c, "code")) {
                                out.push(IndexValue::TypedIdentifier {
                                    type_system: ts,
                                    type_code: tc,
                                    value: code.clone(),
                                });
                            }
                        }
                    }
                    out.extend(ty.and_then(|t| s(t, "text")).map(IndexValue::Text));
                }
            }
            "ContactPoint" => {
                if let Some(code) = s(v, "value") {
                    out.push(IndexValue::Token {
                        system: s(v, "system"),
                        code,
                    });
                }
            }
            _ => match v {
                Value::String(x) => out.push(IndexValue::Token {
                    system: None,
                    code: x.clone(),
                }),
                Value::Bool(b) => out.push(IndexValue::Token {
                    system: None,
                    code: b.to_string(),
                }),
                _ => {}
            },
        },
        ParamType::Reference => match v {
            Value::Object(_) => {
                if let Some(r) = s(v, "reference") {
                    out.push(IndexValue::Reference(r));
                }
                if let Some(id) = v.get("identifier")
                    && let Some(value) = s(id, "value")
                {
                    out.push(IndexValue::ReferenceIdentifier {
                        system: s(id, "system"),
                        value,
                    });
                }
            }
            Value::String(x) => out.push(IndexValue::Reference(x.clone())),
            _ => {}
        },
        ParamType::Date => match ty {
            "Period" => {
                let low = s(v, "start")
                    .and_then(|t| date_range(&t))
                    .map(|r| r.0)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                let high = s(v, "end")
                    .and_then(|t| date_range(&t))
                    .map(|r| r.1)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                out.push(IndexValue::Date { low, high });
            }
            "Timing" => {
                for e in strings(v, "event") {
                    if let Some((low, high)) = date_range(&e) {
                        out.push(IndexValue::Date { low, high });
                    }
                }
            }
            _ => {
                if let Some((low, high)) = v.as_str().and_then(date_range) {
                    out.push(IndexValue::Date { low, high });
                }
            }
        },
        ParamType::Number => {
            if let Some(x) = v.as_f64() {
                out.push(IndexValue::Number(x));
            }
        }
        ParamType::Quantity => {
            if let Some(value) = v.get("value").and_then(Value::as_f64) {
                out.push(IndexValue::Quantity {
                    value,
                    system: s(v, "system"),
                    code: s(v, "code").or_else(|| s(v, "currency")),
                    unit: s(v, "unit"),
                });
            }
        }
        ParamType::Uri => {
            if let Some(x) = v.as_str() {
                out.push(IndexValue::Uri(x.to_owned()));
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The instants a FHIR date, dateTime or instant covers, `[low, high)`: a year, a month, a
/// day, or a second (local times without a zone are taken as UTC). `None` when it is not one.
pub fn date_range(text: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let t = text.trim();
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        t.get(r)
            .filter(|x| x.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|x| x.parse::<u32>().ok())
    };
    match b.len() {
        4 => {
            let y = digits(0..4)? as i32;
            let low = day_start(NaiveDate::from_ymd_opt(y, 1, 1)?);
            let high = day_start(NaiveDate::from_ymd_opt(y + 1, 1, 1)?);
            Some((low, high))
        }
        7 if b[4] == b'-' => {
            let y = digits(0..4)? as i32;
            let m = digits(5..7)?;
            let first = NaiveDate::from_ymd_opt(y, m, 1)?;
            let next = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)?
            };
            Some((day_start(first), day_start(next)))
        }
        10 if b[4] == b'-' && b[7] == b'-' => {
            let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
            if d.year() < 1 {
                return None;
            }
            Some((day_start(d), day_start(d) + Duration::days(1)))
        }
        n if n > 10 && b[10] == b'T' => {
            let at = DateTime::parse_from_rfc3339(t)
                .map(|x| x.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|x| x.and_utc())
                })
                .ok()?;
            let at = at.with_nanosecond_floor();
            Some((at, at + Duration::seconds(1)))
        }
        _ => None,
    }
}

trait SecondFloor {
    fn with_nanosecond_floor(self) -> Self;
}

impl SecondFloor for DateTime<Utc> {
    fn with_nanosecond_floor(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(resource_type: &str, code: &str, r: &Value) -> Vec<IndexValue> {
        let p = search_parameters().get(resource_type, code).unwrap();
        extract(p, r).unwrap()
    }

    #[test]
    fn each_parameter_type_extracts_its_values() {
        let p = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": "42"}],
            "name": [{"family": "Lovelace", "given": ["Ada", "King"]}],
            "gender": "female", "birthDate": "1815-12-10",
            "telecom": [{"system": "phone", "value": "+442079460958"}],
            "address": [{"city": "London", "postalCode": "W1"}],
            "generalPractitioner": [{"reference": "Practitioner/9"}],
            "deceasedDateTime": "1852-11-27T10:00:00Z"});
        assert_eq!(
            values("Patient", "identifier", &p),
            [IndexValue::Token {
                system: Some("urn:mrn".into()),
                code: "42".into()
            }]
        );
        assert_eq!(
            values("Patient", "name", &p),
            ["Lovelace", "Ada", "King"].map(|s| IndexValue::String(s.into()))
        );
        assert_eq!(
            values("Patient", "family", &p),
            [IndexValue::String("Lovelace".into())]
        );
        assert_eq!(
            values("Patient", "gender", &p),
            [IndexValue::Token {
                system: None,
                code: "female".into()
            }]
        );
        let (low, high) = date_range("1815-12-10").unwrap();
        assert_eq!(
            values("Patient", "birthdate", &p),
            [IndexValue::Date { low, high }]
        );
        assert_eq!(
            values("Patient", "general-practitioner", &p),
            [IndexValue::Reference("Practitioner/9".into())]
        );
        assert_eq!(
            values("Patient", "address-city", &p),
            [IndexValue::String("London".into())]
        );
        assert_eq!(
            values("Patient", "deceased", &p),
            [IndexValue::Token {
                system: None,
                code: "true".into()
            }]
        );
        assert_eq!(
            values("Patient", "_id", &p),
            [IndexValue::Token {
                system: None,
                code: "p1".into()
            }]
        );
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72.5, "system": "http://unitsofmeasure.org", "code": "/min"},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2024-01-01", "end": "2024-01-02T10:00:00Z"}});
        assert_eq!(
            values("Observation", "value-quantity", &obs),
            [IndexValue::Quantity {
                value: 72.5,
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("/min".into()),
                unit: None
            }]
        );
        assert_eq!(
            values("Observation", "patient", &obs),
            [IndexValue::Reference("Patient/p1".into())]
        );
        assert_eq!(values("Observation", "date", &obs).len(), 1);
        let risk =
            json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]});
        assert_eq!(
            values("RiskAssessment", "probability", &risk),
            [IndexValue::Number(0.25)]
        );
        let vs = json!({"resourceType": "ValueSet", "url": "http://x/vs"});
        assert_eq!(
            values("ValueSet", "url", &vs),
            [IndexValue::Uri("http://x/vs".into())]
        );
    }

    #[test]
    fn dates_cover_their_precision() {
        let (l, h) = date_range("2024").unwrap();
        assert_eq!(
            (l.to_rfc3339(), h.to_rfc3339()),
            (
                "2024-01-01T00:00:00+00:00".into(),
                "2025-01-01T00:00:00+00:00".into()
            )
        );
        let (l, h) = date_range("2024-12").unwrap();
        assert_eq!(h - l, Duration::days(31));
        let (l, _) = date_range("2024-02-29T23:00:00+02:00").unwrap();
        assert_eq!(l.to_rfc3339(), "2024-02-29T21:00:00+00:00");
        for bad in ["", "2024-13", "2023-02-29", "24", "2024-01-01T", "x"] {
            assert!(date_range(bad).is_none(), "{bad}");
        }
    }
}
