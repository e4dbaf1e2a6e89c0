//! The CSV column mapping: which column holds which field of a kind's record (README,
//! "Bulk import and export"). A CSV row becomes the record's JSON form (the same one JSON
//! and NDJSON files carry), and an exported resource becomes a CSV row, so all three
//! formats share one typed decoding in `salus_domain::bulk::records`.
//!
//! A cell that holds several values separates them with `;`; a value made of parts (an
//! identifier's system and value, a further name's family and given names) separates the
//! parts with `|`; `\` escapes `;`, `|` and `\` inside a value. An empty (or blank) cell is
//! an absent field.

use salus_domain::bulk::{Kind, RowError};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub const PATIENT_COLUMNS: &[&str] = &[
    "id",
    "identifiers",
    "family",
    "given",
    "other_names",
    "birth_date",
    "gender",
    "phones",
    "email",
    "address_line",
    "address_city",
    "address_district",
    "address_state",
    "address_postal_code",
    "address_country",
    "persona_profile_id",
    "shard_id",
    "status",
    "status_reason",
    "deceased_date",
    "merged_into",
    "fhir_elements",
    "version",
    "created_at",
    "updated_at",
];

pub const INTERACTION_COLUMNS: &[&str] = &[
    "id",
    "patient_id",
    "patient_identifier",
    "kind",
    "occurred_at",
    "outcome",
    "notes",
    "encounter_id",
    "status",
    "status_reason",
    "recorded_by",
    "version",
    "created_at",
    "updated_at",
];

pub const ENCOUNTER_COLUMNS: &[&str] = &[
    "id",
    "patient_id",
    "patient_identifier",
    "clinician_id",
    "clinician_credential",
    "type",
    "department_id",
    "department_code",
    "scheduled_for",
    "status",
    "start_time",
    "end_time",
    "cancel_reason",
    "fhir_elements",
    "version",
    "created_at",
    "updated_at",
];

pub const OBSERVATION_COLUMNS: &[&str] = &[
    "id",
    "patient_id",
    "patient_identifier",
    "encounter_id",
    "code_system",
    "code",
    "code_display",
    "value_type",
    "value",
    "value_unit",
    "value_low",
    "value_high",
    "value_system",
    "value_code",
    "value_display",
    "status",
    "effective_at",
    "status_reason",
    "fhir_elements",
    "version",
    "created_at",
    "updated_at",
];

/// Columns exports write and imports ignore.
const EXPORT_ONLY: &[&str] = &["version", "created_at", "updated_at", "recorded_by"];

pub fn columns(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Patients => PATIENT_COLUMNS,
        Kind::Interactions => INTERACTION_COLUMNS,
        Kind::Encounters => ENCOUNTER_COLUMNS,
        Kind::Observations => OBSERVATION_COLUMNS,
    }
}

/// Columns a file of the kind must have: one of each group.
fn required(kind: Kind) -> &'static [&'static [&'static str]] {
    match kind {
        Kind::Patients => &[&["family", "other_names"]],
        Kind::Interactions => &[
            &["patient_id", "patient_identifier"],
            &["kind"],
            &["outcome"],
        ],
        Kind::Encounters => &[
            &["patient_id", "patient_identifier"],
            &["clinician_id", "clinician_credential"],
            &["type"],
        ],
        Kind::Observations => &[
            &["patient_id", "patient_identifier"],
            &["code_system"],
            &["code"],
            &["value_type"],
        ],
    }
}

/// Where each known column sits in a file's header.
#[derive(Debug, Clone)]
pub struct Header {
    kind: Kind,
    index: HashMap<&'static str, usize>,
    pub len: usize,
}

impl Header {
    /// Check a header row: every column known (a UTF-8 byte-order mark before the first is
    /// dropped), none twice, the required ones present.
    pub fn parse<'a>(kind: Kind, names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let known = columns(kind);
        let mut index = HashMap::new();
        let mut len = 0;
        for (i, raw) in names.into_iter().enumerate() {
            len += 1;
            let name = raw.trim_start_matches('\u{feff}').trim();
            let Some(col) = known.iter().find(|c| **c == name) else {
                return Err(format!(
                    "unknown column '{name}'; the columns of {} are: {}",
                    kind.as_str(),
                    known.join(", ")
                ));
            };
            if index.insert(*col, i).is_some() {
                return Err(format!("column '{name}' appears twice"));
            }
        }
        for group in required(kind) {
            if !group.iter().any(|c| index.contains_key(c)) {
                return Err(format!(
                    "a {} file needs the column {}",
                    kind.as_str(),
                    group.join(" or ")
                ));
            }
        }
        Ok(Self { kind, index, len })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// One CSV row as a lookup by column name.
struct Cells<'a> {
    header: &'a Header,
    record: &'a csv::StringRecord,
}

impl<'a> Cells<'a> {
    fn get(&self, column: &str) -> Option<&'a str> {
        let i = *self.header.index.get(column)?;
        self.record.get(i).filter(|v| !v.trim().is_empty())
    }
}

/// A CSV row as the record's JSON form.
pub fn row_to_value(
    header: &Header,
    row: u64,
    record: &csv::StringRecord,
) -> Result<Value, RowError> {
    if record.len() != header.len {
        return Err(RowError::new(
            row,
            None,
            format!(
                "the row has {} fields but the header has {}",
                record.len(),
                header.len
            ),
        ));
    }
    let cells = Cells { header, record };
    let mut obj = Map::new();
    let kind = header.kind;
    // Plain columns: the field of the same name.
    let plain: &[&str] = match kind {
        Kind::Patients => &[
            "id",
            "birth_date",
            "gender",
            "email",
            "persona_profile_id",
            "shard_id",
            "status",
            "status_reason",
            "merged_into",
        ],
        Kind::Observations => &[
            "id",
            "patient_id",
            "patient_identifier",
            "encounter_id",
            "status",
            "effective_at",
            "status_reason",
        ],
        _ => columns(kind),
    };
    for c in plain {
        if EXPORT_ONLY.contains(c) || *c == "fhir_elements" {
            continue;
        }
        if let Some(v) = cells.get(c) {
            obj.insert((*c).to_owned(), Value::String(v.to_owned()));
        }
    }
    // What the FHIR API kept beside the fields: a JSON object, as exported.
    if let Some(v) = cells.get("fhir_elements") {
        let kept: Value = serde_json::from_str(v).map_err(|e| {
            RowError::new(
                row,
                Some("fhir_elements"),
                format!("fhir_elements is a JSON object: {e}"),
            )
        })?;
        obj.insert("fhir_elements".into(), kept);
    }
    match kind {
        Kind::Patients => patient_fields(&cells, row, &mut obj)?,
        Kind::Observations => observation_fields(&cells, row, &mut obj)?,
        Kind::Interactions | Kind::Encounters => {}
    }
    Ok(Value::Object(obj))
}

fn patient_fields(
    cells: &Cells<'_>,
    row: u64,
    obj: &mut Map<String, Value>,
) -> Result<(), RowError> {
    if let Some(v) = cells.get("identifiers") {
        let mut ids = Vec::new();
        for parts in split_items(v) {
            let [system, value] = parts.as_slice() else {
                return Err(RowError::new(
                    row,
                    Some("identifiers"),
                    "each identifier is system|value (several separated by ;)",
                ));
            };
            ids.push(json!({"system": system, "value": value}));
        }
        obj.insert("identifiers".into(), Value::Array(ids));
    }
    let mut names = Vec::new();
    if cells.get("family").is_some() || cells.get("given").is_some() {
        names.push(json!({
            "family": cells.get("family").unwrap_or(""),
            "given": cells.get("given").map(split_list).unwrap_or_default(),
        }));
    }
    if let Some(v) = cells.get("other_names") {
        for parts in split_items(v) {
            let mut parts = parts.into_iter();
            let family = parts.next().unwrap_or_default();
            names.push(json!({"family": family, "given": parts.collect::<Vec<_>>()}));
        }
    }
    if !names.is_empty() {
        obj.insert("name".into(), Value::Array(names));
    }
    if let Some(v) = cells.get("phones") {
        obj.insert("phones".into(), json!(split_list(v)));
    }
    let mut address = Map::new();
    if let Some(v) = cells.get("address_line") {
        address.insert("line".into(), json!(split_list(v)));
    }
    for (column, field) in [
        ("address_city", "city"),
        ("address_district", "district"),
        ("address_state", "state"),
        ("address_postal_code", "postal_code"),
        ("address_country", "country"),
    ] {
        if let Some(v) = cells.get(column) {
            address.insert(field.into(), Value::String(v.to_owned()));
        }
    }
    if !address.is_empty() {
        obj.insert("address".into(), Value::Object(address));
    }
    if let Some(v) = cells.get("deceased_date") {
        obj.insert("deceased".into(), json!({"date": v}));
    }
    Ok(())
}

fn number(row: u64, column: &str, v: &str) -> Result<Value, RowError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| {
            RowError::new(
                row,
                Some(column),
                format!("{column} '{v}' is not a finite number"),
            )
        })
}

fn observation_fields(
    cells: &Cells<'_>,
    row: u64,
    obj: &mut Map<String, Value>,
) -> Result<(), RowError> {
    let mut code = Map::new();
    for (column, field) in [
        ("code_system", "system"),
        ("code", "code"),
        ("code_display", "display"),
    ] {
        if let Some(v) = cells.get(column) {
            code.insert(field.into(), Value::String(v.to_owned()));
        }
    }
    obj.insert("code".into(), Value::Object(code));
    let Some(value_type) = cells.get("value_type").map(str::trim) else {
        return Err(RowError::new(
            row,
            Some("value_type"),
            "value_type is required: quantity, range, code, string or boolean",
        ));
    };
    let need = |column: &str| {
        cells.get(column).ok_or_else(|| {
            RowError::new(
                row,
                Some(column),
                format!("a {value_type} value needs {column}"),
            )
        })
    };
    let value = match value_type {
        "quantity" => json!({
            "type": "quantity",
            "value": number(row, "value", need("value")?)?,
            "unit": need("value_unit")?,
        }),
        "range" => json!({
            "type": "range",
            "low": number(row, "value_low", need("value_low")?)?,
            "high": number(row, "value_high", need("value_high")?)?,
            "unit": need("value_unit")?,
        }),
        "code" => {
            let mut coding = Map::new();
            coding.insert(
                "system".into(),
                Value::String(need("value_system")?.to_owned()),
            );
            coding.insert("code".into(), Value::String(need("value_code")?.to_owned()));
            if let Some(d) = cells.get("value_display") {
                coding.insert("display".into(), Value::String(d.to_owned()));
            }
            json!({"type": "code", "coding": coding})
        }
        "string" => json!({"type": "string", "value": need("value")?}),
        "boolean" => {
            let v = match need("value")?.trim() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(RowError::new(
                        row,
                        Some("value"),
                        format!("a boolean value is true or false, not '{other}'"),
                    ));
                }
            };
            json!({"type": "boolean", "value": v})
        }
        other => {
            return Err(RowError::new(
                row,
                Some("value_type"),
                format!("value_type '{other}' is not quantity, range, code, string or boolean"),
            ));
        }
    };
    obj.insert("value".into(), value);
    Ok(())
}

/// An exported resource (the API's JSON of it) as a CSV row in the kind's column order.
pub fn value_to_row(kind: Kind, doc: &Value) -> Vec<String> {
    columns(kind).iter().map(|c| cell(kind, doc, c)).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| text(Some(x))).collect())
        .unwrap_or_default()
}

fn cell(kind: Kind, doc: &Value, column: &str) -> String {
    match (kind, column) {
        (Kind::Patients, "identifiers") => join_items(
            &doc["identifiers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| vec![text(i.get("system")), text(i.get("value"))])
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        ),
        (Kind::Patients, "family") => text(doc["name"].get(0).and_then(|n| n.get("family"))),
        (Kind::Patients, "given") => {
            join_list(&strings(doc["name"].get(0).and_then(|n| n.get("given"))))
        }
        (Kind::Patients, "other_names") => {
            let names: Vec<Vec<String>> = doc["name"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .skip(1)
                        .map(|n| {
                            let mut parts = vec![text(n.get("family"))];
                            parts.extend(strings(n.get("given")));
                            parts
                        })
                        .collect()
                })
                .unwrap_or_default();
            join_items(&names)
        }
        (Kind::Patients, "phones") => join_list(&strings(doc.get("phones"))),
        (Kind::Patients, "address_line") => join_list(&strings(doc["address"].get("line"))),
        (Kind::Patients, c) if c.starts_with("address_") => {
            text(doc["address"].get(c.trim_start_matches("address_")))
        }
        (Kind::Patients, "deceased_date") => text(doc["deceased"].get("date")),
        (Kind::Observations, "code_system") => text(doc["code"].get("system")),
        (Kind::Observations, "code") => text(doc["code"].get("code")),
        (Kind::Observations, "code_display") => text(doc["code"].get("display")),
        (Kind::Observations, "value_type") => text(doc["value"].get("type")),
        (Kind::Observations, "value") => match doc["value"]["type"].as_str() {
            Some("quantity" | "string" | "boolean") => text(doc["value"].get("value")),
            _ => String::new(),
        },
        (Kind::Observations, "value_unit") => text(doc["value"].get("unit")),
        (Kind::Observations, "value_low") => text(doc["value"].get("low")),
        (Kind::Observations, "value_high") => text(doc["value"].get("high")),
        (Kind::Observations, "value_system") => text(doc["value"]["coding"].get("system")),
        (Kind::Observations, "value_code") => text(doc["value"]["coding"].get("code")),
        (Kind::Observations, "value_display") => text(doc["value"]["coding"].get("display")),
        (_, c) => text(doc.get(c)),
    }
}

fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        if matches!(ch, '\\' | ';' | '|') {
            out.push('\\');
        }
        out.push(ch);
    }
}

/// Values with parts: `;` between values, `|` between parts.
pub fn join_items(items: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, parts) in items.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        for (j, p) in parts.iter().enumerate() {
            if j > 0 {
                out.push('|');
            }
            escape_into(&mut out, p);
        }
    }
    out
}

/// Plain values, `;` between them.
pub fn join_list(values: &[String]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        escape_into(&mut out, v);
    }
    out
}

/// The values of a cell and the parts of each (the inverse of [`join_items`]). An empty
/// cell has no values.
pub fn split_items(cell: &str) -> Vec<Vec<String>> {
    let mut items = Vec::new();
    if cell.is_empty() {
        return items;
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = cell.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            '|' => parts.push(std::mem::take(&mut cur)),
            ';' => {
                parts.push(std::mem::take(&mut cur));
                items.push(std::mem::take(&mut parts));
            }
            other => cur.push(other),
        }
    }
    parts.push(cur);
    items.push(parts);
    items
}

/// The plain values of a cell (the inverse of [`join_list`]); an unescaped `|` is kept.
pub fn split_list(cell: &str) -> Vec<String> {
    let mut values = Vec::new();
    if cell.is_empty() {
        return values;
    }
    let mut cur = String::new();
    let mut chars = cell.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ';' => values.push(std::mem::take(&mut cur)),
            other => cur.push(other),
        }
    }
    values.push(cur);
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(cells: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(cells.to_vec())
    }

    #[test]
    fn a_patient_row_becomes_the_record_and_back() {
        let header = Header::parse(
            Kind::Patients,
            [
                "\u{feff}identifiers",
                "family",
                "given",
                "other_names",
                "phones",
                "address_city",
                "deceased_date",
            ],
        )
        .unwrap();
        let v = row_to_value(
            &header,
            1,
            &record(&[
                "urn:mrn|1;urn:nhs|9434765919",
                "Lovelace",
                "Ada;Augusta",
                "Byron|Ada",
                "+44 20 7946 0958",
                "London",
                "",
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "identifiers": [{"system": "urn:mrn", "value": "1"}, {"system": "urn:nhs", "value": "9434765919"}],
                "name": [{"family": "Lovelace", "given": ["Ada", "Augusta"]}, {"family": "Byron", "given": ["Ada"]}],
                "phones": ["+44 20 7946 0958"],
                "address": {"city": "London"}
            })
        );
        let row = value_to_row(Kind::Patients, &v);
        assert_eq!(row[1], "urn:mrn|1;urn:nhs|9434765919");
        assert_eq!(row[3], "Ada;Augusta");
        assert_eq!(row[4], "Byron|Ada");
        assert_eq!(row[10], "London");
    }

    #[test]
    fn headers_are_checked_against_the_mapping() {
        let e = Header::parse(Kind::Patients, ["family", "colour"]).unwrap_err();
        assert!(e.contains("unknown column 'colour'"), "{e}");
        assert!(Header::parse(Kind::Patients, ["family", "family"]).is_err());
        let e = Header::parse(Kind::Interactions, ["kind", "outcome"]).unwrap_err();
        assert!(e.contains("patient_id or patient_identifier"), "{e}");
    }

    #[test]
    fn observation_values_follow_value_type() {
        let header = Header::parse(
            Kind::Observations,
            [
                "patient_id",
                "code_system",
                "code",
                "value_type",
                "value",
                "value_unit",
            ],
        )
        .unwrap();
        let v = row_to_value(
            &header,
            3,
            &record(&[
                "p",
                "http://loinc.org",
                "8480-6",
                "quantity",
                "128.5",
                "mm[Hg]",
            ]),
        )
        .unwrap();
        assert_eq!(
            v["value"],
            json!({"type": "quantity", "value": 128.5, "unit": "mm[Hg]"})
        );
        let e = row_to_value(
            &header,
            4,
            &record(&["p", "s", "c", "quantity", "lots", "mg"]),
        )
        .unwrap_err();
        assert_eq!((e.row, e.field.as_deref()), (4, Some("value")));
        let e = row_to_value(&header, 5, &record(&["p", "s", "c"])).unwrap_err();
        assert!(e.reason.contains("fields"), "{e:?}");
    }

    proptest! {
        /// Joining and splitting give back the same values and parts, whatever they hold.
        #[test]
        fn items_round_trip(items in proptest::collection::vec(proptest::collection::vec(".{0,8}", 1..4), 0..5)) {
            prop_assume!(items != vec![vec![String::new()]]);
            prop_assert_eq!(split_items(&join_items(&items)), items);
        }

        #[test]
        fn lists_round_trip(values in proptest::collection::vec(".{0,10}", 0..6)) {
            prop_assume!(values != vec![String::new()]);
            prop_assert_eq!(split_list(&join_list(&values)), values);
        }

        /// Any exported patient row decodes back to the same row (the mapping is its own
        /// inverse on what exports write).
        #[test]
        fn patient_rows_survive_export_and_import(
            family in "[A-Za-z;|\\\\ ]{1,12}",
            given in proptest::collection::vec("[A-Za-z;| ]{1,8}", 0..3),
            mrn in "[0-9|;]{1,10}",
            phones in proptest::collection::vec("\\+[1-9][0-9]{8,12}", 0..3),
            kept in proptest::option::of("[A-Za-z;|,\"\\ ]{1,10}"),
        ) {
            prop_assume!(!family.trim().is_empty() && given.iter().all(|g| !g.trim().is_empty()));
            let mut doc = json!({
                "identifiers": [{"system": "urn:mrn", "value": mrn}],
                "name": [{"family": family, "given": given}],
                "phones": phones,
            });
            if let Some(k) = &kept {
                doc["fhir_elements"] = json!({"extension": [{"url": "http://example.org/x", "valueString": k}]});
            }
            let header = Header::parse(Kind::Patients, PATIENT_COLUMNS.iter().copied()).unwrap();
            let row = value_to_row(Kind::Patients, &doc);
            let back = row_to_value(&header, 1, &csv::StringRecord::from(row)).unwrap();
            let mut expected = doc.clone();
            if phones.is_empty() {
                expected.as_object_mut().unwrap().remove("phones");
            }
            prop_assert_eq!(back, expected);
        }
    }
}
