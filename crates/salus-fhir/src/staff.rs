//! FHIR Practitioner ⇄ the staff Clinician, Organization ⇄ Department, Location ⇄
//! Location, both ways. Ids are the aggregates' UUIDs.
//!
//! Modelled:
//! - **Practitioner**: the identifier of system [`CREDENTIAL`] (the registration, unique
//!   in the tenant), the first `name` (its `family` and `given`), `active` (⇄ active |
//!   inactive), and the specialty and org unit as the `valueString` of the extensions
//!   [`SPECIALTY`] and [`ORG_UNIT`]. Only the family name is required: a resource from
//!   another system (an NPI, no Salus extensions) gets the credential `system|value` of its
//!   first identifier and the specialty and org unit [`UNSPECIFIED`], and reads back
//!   without them while they stay that.
//! - **Organization**: the identifier of system [`DEPARTMENT_CODE`] (the department's
//!   unique code, upper case; without one Salus makes `ORG-` and twelve hex digits, which
//!   read back left out), `name`, `active`.
//! - **Location**: `name`, `status` (active | inactive; `suspended` is refused),
//!   `managingOrganization` (`Organization/<id>` of the location's department, required,
//!   never changed), `physicalType` (the location's kind: a coding of [`LOCATION_KIND`],
//!   or the HL7 location-physical-type `wa` | `ro` | `bd` for ward | room | bed; a
//!   location without one, or with one Salus does not know, is of kind `other`).
//!
//! Every other element (telecom, address, gender, birthDate, qualification, other
//! identifiers and names, Organization.type and partOf, Location.position, partOf, mode,
//! …) and what else a modelled identifier, name or reference holds is kept as sent in
//! the aggregate's `fhir_elements` and merged back on read, so a resource reads back as
//! sent apart from `id`, `meta`, the modelled identifier, name and extensions coming first
//! in their arrays, and the code upper-cased. A status left out is the aggregate's default
//! (active), and reads back left out while it stays that ([`ABSENT`]).
//!
//! An update changes what the aggregates let change (a revision: one event, one version):
//! the name, the credential, the specialty, the org unit, a department's code, a
//! location's kind, the status (through the aggregate's lifecycle) and the kept elements;
//! a location's department cannot change. A delete deactivates.

use crate::datatypes::*;
use crate::outcome::Issue;
use chrono::{DateTime, Utc};
use salus_domain::staff::clinician::{
    Clinician, ClinicianCommand, ClinicianInput, ClinicianRevision, ClinicianStatus,
};
use salus_domain::staff::place::{
    Department, DepartmentInput, Location, LocationInput, PlaceCommand, PlaceRevision,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use crate::statement::ABSENT;

/// The identifier system of a clinician's credential (professional registration).
pub const CREDENTIAL: &str = "urn:salus:credential";
/// The identifier system of a department's code.
pub const DEPARTMENT_CODE: &str = "urn:salus:department-code";
/// The code system of a location's kind (ward | room | bed | theatre | clinic | other).
pub const LOCATION_KIND: &str = "urn:salus:location-kind";
/// The HL7 code system of Location.physicalType.
pub const PHYSICAL_TYPE: &str = "http://terminology.hl7.org/CodeSystem/location-physical-type";
/// The extension carrying a practitioner's specialty (`valueString`).
pub const SPECIALTY: &str = "urn:salus:fhir:extension:specialty";
/// The extension carrying a practitioner's org unit (`valueString`).
pub const ORG_UNIT: &str = "urn:salus:fhir:extension:org-unit";

/// The kept element holding what else the modelled identifier has (use, type, period).
const IDENTIFIER_REST: &str = "salus:identifier";
/// The kept element holding what else the first name has (use, text, prefix, …).
const NAME_REST: &str = "salus:name[0]";

/// HL7 physical types that are a Salus kind.
const HL7_KINDS: &[(&str, &str)] = &[("wa", "ward"), ("ro", "room"), ("bd", "bed")];

fn resource(t: &str, id: Uuid, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = json!({ "resourceType": t, "id": id.to_string() });
    if let Some((v, at)) = version {
        r["meta"] = meta(v, at);
    }
    r
}

/// Merge what is kept into `r`, but for the elements the rendering already placed.
fn merge_rest(r: &mut Value, mut kept: Map<String, Value>, placed: &[&str]) {
    kept.remove(ABSENT);
    kept.remove(IDENTIFIER_REST);
    kept.remove(NAME_REST);
    for k in placed {
        kept.remove(*k);
    }
    merge(r, &Value::Object(kept));
}

/// The identifier of `system`, with what else it held, then the kept identifiers. A value
/// Salus chose because the resource had none (marked [`ABSENT`] as `mark`) is left out
/// while it stays that.
fn identifiers(system: &str, value: &str, kept: &Map<String, Value>, mark: &str) -> Vec<Value> {
    let mut all = Vec::new();
    if !absent(kept, mark, &json!(value)) {
        let mut first = json!({ "system": system, "value": value });
        if let Some(rest) = kept.get(IDENTIFIER_REST) {
            merge(&mut first, rest);
        }
        all.push(first);
    }
    all.extend(
        kept.get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    all
}

/// Set `key` of `r` to `items`, or leave it out when there are none.
fn put_items(r: &mut Value, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        r[key] = Value::Array(items);
    }
}

/// Take the first identifier of `system` out of `o`: its value, what else it held kept.
fn take_identifier(
    o: &mut Map<String, Value>,
    system: &str,
    t: &str,
) -> Result<Option<String>, Issue> {
    let Some(Value::Array(ids)) = o.get_mut("identifier") else {
        return Ok(None);
    };
    let Some(at) = ids
        .iter()
        .position(|i| i.get("system").and_then(Value::as_str) == Some(system))
    else {
        return Ok(None);
    };
    let one = ids.remove(at);
    if ids.is_empty() {
        o.remove("identifier");
    }
    let Some(value) = one.get("value").and_then(Value::as_str).map(str::to_owned) else {
        return Err(required(
            format!("{t}.identifier[{at}].value"),
            format!("the identifier of {system} needs a value"),
        ));
    };
    if let Some(m) = one.as_object() {
        let mut rest = m.clone();
        rest.remove("system");
        rest.remove("value");
        if let Some(rest) = nonempty(rest) {
            o.insert(IDENTIFIER_REST.into(), rest);
        }
    }
    Ok(Some(value))
}

/// Take the extension `url` out of `o`: its `valueString`.
fn take_extension(o: &mut Map<String, Value>, url: &str, t: &str) -> Result<Option<String>, Issue> {
    let Some(Value::Array(exts)) = o.get_mut("extension") else {
        return Ok(None);
    };
    let Some(at) = exts
        .iter()
        .position(|x| x.get("url").and_then(Value::as_str) == Some(url))
    else {
        return Ok(None);
    };
    let one = exts.remove(at);
    if exts.is_empty() {
        o.remove("extension");
    }
    match one.get("valueString").and_then(Value::as_str) {
        Some(s) => Ok(Some(s.to_owned())),
        None => Err(invalid(
            format!("{t}.extension('{url}')"),
            format!("the extension {url} carries a valueString"),
        )),
    }
}

/// A boolean element taken out of `o` (validation checked its type).
fn take_bool(o: &mut Map<String, Value>, key: &str) -> Option<bool> {
    o.remove(key).and_then(|v| v.as_bool())
}

fn needed(what: Option<String>, path: String, msg: &str, issues: &mut Vec<Issue>) -> String {
    what.unwrap_or_else(|| {
        issues.push(required(path, msg));
        String::new()
    })
}

/// Structural validation, then the resource as an object without the managed elements.
fn object_of(r: &Value, t: &str) -> Result<Map<String, Value>, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid(t, format!("a {t} is a JSON object"))]);
    };
    let mut o = obj.clone();
    strip_managed(&mut o);
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Practitioner ⇄ Clinician

/// The Practitioner a clinician is: `version` and `updated` make its `meta` (`None` for
/// the search index).
pub fn practitioner(c: &Clinician, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = resource("Practitioner", c.id, version);
    let kept = kept_of(&c.fhir_elements);
    put_items(
        &mut r,
        "identifier",
        identifiers(CREDENTIAL, &c.credential, &kept, "credential"),
    );
    let active = json!(c.status == ClinicianStatus::Active);
    if !absent(&kept, "active", &active) {
        r["active"] = active;
    }
    let mut name = json!({ "family": c.name.family });
    if !c.name.given.is_empty() {
        name["given"] = json!(c.name.given);
    }
    if let Some(rest) = kept.get(NAME_REST) {
        merge(&mut name, rest);
    }
    let mut names = vec![name];
    names.extend(
        kept.get("name")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    r["name"] = Value::Array(names);
    let mut exts = Vec::new();
    for (mark, url, v) in [
        ("specialty", SPECIALTY, &c.specialty),
        ("org_unit", ORG_UNIT, &c.org_unit),
    ] {
        if !absent(&kept, mark, &json!(v)) {
            exts.push(json!({ "url": url, "valueString": v }));
        }
    }
    exts.extend(
        kept.get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    put_items(&mut r, "extension", exts);
    merge_rest(&mut r, kept, &["identifier", "name", "extension", "active"]);
    r
}

/// What a FHIR Practitioner says, in the Clinician's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct PractitionerWrite {
    pub family: String,
    pub given: Vec<String>,
    pub credential: String,
    pub specialty: String,
    pub org_unit: String,
    /// `None`: the resource has no `active`.
    pub active: Option<bool>,
    /// Every element not modelled, without [`ABSENT`].
    pub kept: Map<String, Value>,
    /// The fields the resource did not give (`credential`, `specialty`, `org_unit`):
    /// a new clinician gets Salus's choice ([`UNSPECIFIED`], a credential from the first
    /// identifier), an update keeps the current value, and either reads back left out.
    pub left_out: Vec<&'static str>,
}

/// The specialty and org unit of a clinician whose Practitioner did not give them.
pub const UNSPECIFIED: &str = "unspecified";

impl PractitionerWrite {
    /// The kept elements with the marks of what was left out, at the values written.
    fn kept_at(&self, active: bool, values: [&str; 3]) -> Map<String, Value> {
        let mut marks: Vec<(&str, Value)> = match self.active {
            None => vec![("active", json!(active))],
            Some(_) => Vec::new(),
        };
        for (field, v) in ["credential", "specialty", "org_unit"]
            .into_iter()
            .zip(values)
        {
            if self.left_out.contains(&field) {
                marks.push((field, json!(v)));
            }
        }
        with_absent(self.kept.clone(), &marks)
    }

    /// The input of a new clinician (no Salus user: that link is the JSON API's).
    pub fn input(&self) -> ClinicianInput {
        let values = [
            self.credential.as_str(),
            self.specialty.as_str(),
            self.org_unit.as_str(),
        ];
        ClinicianInput {
            family: self.family.clone(),
            given: self.given.clone(),
            credential: self.credential.clone(),
            specialty: self.specialty.clone(),
            org_unit: self.org_unit.clone(),
            user_id: None,
            fhir_elements: Some(Value::Object(
                self.kept_at(self.active.unwrap_or(true), values),
            )),
            active: self.active,
        }
    }

    /// The registration of a clinician as `id`.
    pub fn register(&self, id: Uuid) -> ClinicianCommand {
        ClinicianCommand::Register {
            id,
            input: self.input(),
        }
    }
}

/// Read a FHIR Practitioner: structural validation first, then what the Clinician keeps.
/// The domain still checks the values (lengths, a credential not taken) when it decides.
pub fn practitioner_from_fhir(r: &Value) -> Result<PractitionerWrite, Vec<Issue>> {
    let t = "Practitioner";
    let mut o = object_of(r, t)?;
    let mut issues = Vec::new();
    let mut left_out = Vec::new();
    let credential = take_identifier(&mut o, CREDENTIAL, t).unwrap_or_else(|e| {
        issues.push(e);
        Some(String::new())
    });
    let credential = credential.unwrap_or_else(|| {
        left_out.push("credential");
        // The registration another system gave (an NPI, a GMC number), else a new one.
        o.get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|i| {
                let system = i.get("system").and_then(Value::as_str)?;
                let value = i.get("value").and_then(Value::as_str)?;
                Some(format!("{system}|{value}"))
            })
            .filter(|c| c.chars().count() <= 200)
            .unwrap_or_else(|| format!("urn:uuid:{}", Uuid::now_v7()))
    });
    let mut ext = |o: &mut Map<String, Value>, url: &str, field: &'static str| {
        let v = take_extension(o, url, t).unwrap_or_else(|e| {
            issues.push(e);
            Some(String::new())
        });
        v.unwrap_or_else(|| {
            left_out.push(field);
            UNSPECIFIED.to_owned()
        })
    };
    let specialty = ext(&mut o, SPECIALTY, "specialty");
    let org_unit = ext(&mut o, ORG_UNIT, "org_unit");
    let active = take_bool(&mut o, "active");
    let (mut family, mut given) = (String::new(), Vec::new());
    let first = match o.get_mut("name") {
        Some(Value::Array(names)) if !names.is_empty() => {
            let first = names.remove(0);
            if names.is_empty() {
                o.remove("name");
            }
            Some(first)
        }
        _ => None,
    };
    match first.as_ref().and_then(Value::as_object) {
        None => issues.push(required(
            format!("{t}.name"),
            "Salus keeps a practitioner's name: a name with a family",
        )),
        Some(n) => {
            let mut rest = n.clone();
            match rest.remove("family") {
                Some(Value::String(f)) => family = f,
                _ => issues.push(required(
                    format!("{t}.name[0].family"),
                    "the first name needs a family name",
                )),
            }
            if let Some(Value::Array(gs)) = rest.remove("given") {
                given = gs
                    .iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect();
            }
            if let Some(rest) = nonempty(rest) {
                o.insert(NAME_REST.into(), rest);
            }
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(PractitionerWrite {
        family,
        given,
        credential,
        specialty,
        org_unit,
        active,
        kept: o,
        left_out,
    })
}

/// The command a FHIR update of `current` is: `None` when it changes nothing.
pub fn practitioner_update(current: &Clinician, w: &PractitionerWrite) -> Option<ClinicianCommand> {
    let active = w
        .active
        .unwrap_or(current.status == ClinicianStatus::Active);
    let status = if active {
        ClinicianStatus::Active
    } else {
        ClinicianStatus::Inactive
    };
    // What the resource left out stays as it is.
    let pick = |field: &str, sent: &str, now: &str| {
        if w.left_out.contains(&field) {
            now.to_owned()
        } else {
            sent.trim().to_owned()
        }
    };
    let credential = pick("credential", &w.credential, &current.credential);
    let specialty = pick("specialty", &w.specialty, &current.specialty);
    let org_unit = pick("org_unit", &w.org_unit, &current.org_unit);
    let kept = w.kept_at(active, [&credential, &specialty, &org_unit]);
    let unchanged = current.name.family == w.family.trim()
        && current.name.given == w.given.iter().map(|g| g.trim()).collect::<Vec<_>>()
        && current.credential == credential
        && current.specialty == specialty
        && current.org_unit == org_unit
        && current.status == status
        && kept_of(&current.fhir_elements) == kept;
    (!unchanged).then(|| {
        ClinicianCommand::Revise(ClinicianRevision {
            family: Some(w.family.clone()),
            given: Some(w.given.clone()),
            credential: Some(credential),
            specialty: Some(specialty),
            org_unit: Some(org_unit),
            status: Some(status),
            fhir_elements: Some(Value::Object(kept)),
        })
    })
}

/// The deactivation a FHIR delete of a Practitioner is.
pub fn practitioner_delete() -> ClinicianCommand {
    ClinicianCommand::Revise(ClinicianRevision {
        status: Some(ClinicianStatus::Inactive),
        ..Default::default()
    })
}

/// The FHIRPath of a Clinician field the domain names in an error.
pub fn practitioner_path(field: &str) -> String {
    match field {
        "name.family" => "Practitioner.name[0].family".into(),
        "name.given" => "Practitioner.name[0].given".into(),
        "credential" => "Practitioner.identifier".into(),
        "specialty" => format!("Practitioner.extension('{SPECIALTY}')"),
        "org_unit" => format!("Practitioner.extension('{ORG_UNIT}')"),
        "action" | "status" => "Practitioner.active".into(),
        _ => "Practitioner".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Organization ⇄ Department

/// The Organization a department is.
pub fn organization(d: &Department, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = resource("Organization", d.id, version);
    let kept = kept_of(&d.fhir_elements);
    put_items(
        &mut r,
        "identifier",
        identifiers(DEPARTMENT_CODE, &d.code, &kept, "code"),
    );
    if !absent(&kept, "active", &json!(d.active)) {
        r["active"] = json!(d.active);
    }
    r["name"] = json!(d.name);
    merge_rest(&mut r, kept, &["identifier", "name", "active"]);
    r
}

/// What a FHIR Organization says, in the Department's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationWrite {
    pub code: String,
    pub name: String,
    pub active: Option<bool>,
    pub kept: Map<String, Value>,
    /// The resource had no identifier of [`DEPARTMENT_CODE`]: a new department gets a
    /// code Salus makes (`ORG-` and twelve hex digits), an update keeps the current one,
    /// and either reads back left out.
    pub code_left_out: bool,
}

impl OrganizationWrite {
    fn kept_at(&self, active: bool, code: &str) -> Map<String, Value> {
        let mut marks: Vec<(&str, Value)> = match self.active {
            None => vec![("active", json!(active))],
            Some(_) => Vec::new(),
        };
        if self.code_left_out {
            marks.push(("code", json!(code)));
        }
        with_absent(self.kept.clone(), &marks)
    }

    pub fn input(&self) -> DepartmentInput {
        DepartmentInput {
            code: self.code.clone(),
            name: self.name.clone(),
            fhir_elements: Some(Value::Object(
                self.kept_at(self.active.unwrap_or(true), &self.code),
            )),
            active: self.active,
        }
    }

    /// The creation of a department as `id`.
    pub fn create(&self, id: Uuid) -> PlaceCommand<DepartmentInput> {
        PlaceCommand::Create {
            id,
            input: self.input(),
            facts: true,
        }
    }
}

pub fn organization_from_fhir(r: &Value) -> Result<OrganizationWrite, Vec<Issue>> {
    let t = "Organization";
    let mut o = object_of(r, t)?;
    let mut issues = Vec::new();
    let code = take_identifier(&mut o, DEPARTMENT_CODE, t).unwrap_or_else(|e| {
        issues.push(e);
        Some(String::new())
    });
    let code_left_out = code.is_none();
    let code = code.unwrap_or_else(|| {
        let hex = Uuid::now_v7().simple().to_string();
        // The random end of a v7 UUID (its start is the time).
        format!("ORG-{}", hex[20..].to_ascii_uppercase())
    });
    let name = o.remove("name").and_then(|n| n.as_str().map(str::to_owned));
    let name = needed(
        name,
        format!("{t}.name"),
        "Salus keeps a department's name",
        &mut issues,
    );
    let active = take_bool(&mut o, "active");
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(OrganizationWrite {
        code,
        name,
        active,
        kept: o,
        code_left_out,
    })
}

pub fn organization_update(
    current: &Department,
    w: &OrganizationWrite,
) -> Option<PlaceCommand<DepartmentInput>> {
    let active = w.active.unwrap_or(current.active);
    let code = if w.code_left_out {
        current.code.clone()
    } else {
        w.code.trim().to_ascii_uppercase()
    };
    let kept = w.kept_at(active, &code);
    let unchanged = current.code == code
        && current.name == w.name.trim()
        && current.active == active
        && kept_of(&current.fhir_elements) == kept;
    (!unchanged).then(|| {
        PlaceCommand::Revise(PlaceRevision {
            code: Some(code),
            name: Some(w.name.clone()),
            kind: None,
            active: Some(active),
            fhir_elements: Some(Value::Object(kept)),
        })
    })
}

/// The deactivation a FHIR delete of an Organization or a Location is.
pub fn place_delete<I>() -> PlaceCommand<I> {
    PlaceCommand::Revise(PlaceRevision {
        active: Some(false),
        ..Default::default()
    })
}

pub fn organization_path(field: &str) -> String {
    match field {
        "code" => "Organization.identifier".into(),
        "name" => "Organization.name".into(),
        "action" | "active" => "Organization.active".into(),
        _ => "Organization".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Location ⇄ Location

/// The kind a physicalType concept says, when it says one Salus knows.
fn kind_of(concept: &Value) -> Option<String> {
    let codings = concept.get("coding")?.as_array()?;
    let code = |system: &str| {
        codings
            .iter()
            .find(|c| c.get("system").and_then(Value::as_str) == Some(system))
            .and_then(|c| c.get("code"))
            .and_then(Value::as_str)
    };
    if let Some(k) = code(LOCATION_KIND) {
        return Some(k.to_owned());
    }
    let hl7 = code(PHYSICAL_TYPE)?;
    HL7_KINDS
        .iter()
        .find(|(c, _)| *c == hl7)
        .map(|(_, k)| (*k).to_owned())
}

fn bare_kind(kind: &str) -> Value {
    json!({ "coding": [{ "system": LOCATION_KIND, "code": kind }] })
}

/// The Location a location is.
pub fn location(l: &Location, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = resource("Location", l.id, version);
    let kept = kept_of(&l.fhir_elements);
    let status = json!(if l.active { "active" } else { "inactive" });
    if !absent(&kept, "status", &status) {
        r["status"] = status;
    }
    r["name"] = json!(l.name);
    if !absent(&kept, "physicalType", &json!(l.kind)) {
        r["physicalType"] = match kept.get("physicalType") {
            Some(k) if kind_of(k).unwrap_or_else(|| "other".into()) == l.kind => k.clone(),
            _ => bare_kind(&l.kind),
        };
    }
    r["managingOrganization"] = reference(
        "Organization",
        l.department_id,
        kept.get("managingOrganization"),
    );
    merge_rest(
        &mut r,
        kept,
        &["status", "name", "physicalType", "managingOrganization"],
    );
    r
}

/// What a FHIR Location says, in the Location aggregate's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationWrite {
    pub department_id: Uuid,
    pub name: String,
    /// `None`: the resource has no physicalType (kind `other`).
    pub kind: Option<String>,
    pub active: Option<bool>,
    pub kept: Map<String, Value>,
}

impl LocationWrite {
    fn kind_now(&self) -> String {
        self.kind.clone().unwrap_or_else(|| "other".into())
    }

    fn kept_at(&self, active: bool) -> Map<String, Value> {
        let mut marks: Vec<(&str, Value)> = Vec::new();
        if self.active.is_none() {
            marks.push(("status", json!(if active { "active" } else { "inactive" })));
        }
        if self.kind.is_none() {
            marks.push(("physicalType", json!("other")));
        }
        with_absent(self.kept.clone(), &marks)
    }

    pub fn input(&self) -> LocationInput {
        LocationInput {
            department_id: self.department_id,
            name: self.name.clone(),
            kind: self.kind_now(),
            fhir_elements: Some(Value::Object(self.kept_at(self.active.unwrap_or(true)))),
            active: self.active,
        }
    }

    /// The creation of a location as `id`; `department_active`: the fact it needs.
    pub fn create(&self, id: Uuid, department_active: bool) -> PlaceCommand<LocationInput> {
        PlaceCommand::Create {
            id,
            input: self.input(),
            facts: department_active,
        }
    }
}

pub fn location_from_fhir(r: &Value) -> Result<LocationWrite, Vec<Issue>> {
    let t = "Location";
    let mut o = object_of(r, t)?;
    let mut issues = Vec::new();
    let active = match o.remove("status") {
        None => None,
        Some(s) => match s.as_str() {
            Some("active") => Some(true),
            Some("inactive") => Some(false),
            _ => {
                issues.push(refused(
                    format!("{t}.status"),
                    format!("Salus keeps a location active or inactive, not {s}"),
                ));
                None
            }
        },
    };
    let name = o.remove("name").and_then(|n| n.as_str().map(str::to_owned));
    let name = needed(
        name,
        format!("{t}.name"),
        "Salus keeps a location's name",
        &mut issues,
    );
    let department_id = take_required_reference(
        &mut o,
        "managingOrganization",
        "Organization",
        t,
        "Salus keeps a location in a department: managingOrganization is Organization/<id>",
        &mut issues,
    );
    let kind = match o.remove("physicalType") {
        None => None,
        Some(c) => {
            let kind = kind_of(&c).unwrap_or_else(|| "other".into());
            if c != bare_kind(&kind) {
                o.insert("physicalType".into(), c);
            }
            Some(kind)
        }
    };
    match (issues.is_empty(), department_id) {
        (true, Some(department_id)) => Ok(LocationWrite {
            department_id,
            name,
            kind,
            active,
            kept: o,
        }),
        _ => Err(issues),
    }
}

/// The command a FHIR update of `current` is (`None`: no change); the department cannot
/// change.
pub fn location_update(
    current: &Location,
    w: &LocationWrite,
) -> Result<Option<PlaceCommand<LocationInput>>, Vec<Issue>> {
    if w.department_id != current.department_id {
        return Err(vec![refused(
            "Location.managingOrganization",
            "a location's department cannot change: create a location in the other department",
        )]);
    }
    let active = w.active.unwrap_or(current.active);
    let kept = w.kept_at(active);
    let kind = w.kind_now();
    let unchanged = current.name == w.name.trim()
        && current.kind == kind.trim()
        && current.active == active
        && kept_of(&current.fhir_elements) == kept;
    Ok((!unchanged).then(|| {
        PlaceCommand::Revise(PlaceRevision {
            code: None,
            name: Some(w.name.clone()),
            kind: Some(kind),
            active: Some(active),
            fhir_elements: Some(Value::Object(kept)),
        })
    }))
}

pub fn location_path(field: &str) -> String {
    match field {
        "department_id" => "Location.managingOrganization".into(),
        "name" => "Location.name".into(),
        "kind" => "Location.physicalType".into(),
        "action" | "active" => "Location.status".into(),
        _ => "Location".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use salus_kernel::Aggregate;

    const DEPT: &str = "0190c3a0-0000-7000-8000-000000000001";

    fn house() -> Value {
        json!({
            "resourceType": "Practitioner",
            "identifier": [
                {"system": CREDENTIAL, "value": "GMC-7001", "use": "official"},
                {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"}
            ],
            "active": true,
            "name": [{"use": "official", "family": "House", "given": ["Gregory"], "prefix": ["Dr"]},
                     {"use": "nickname", "text": "Greg"}],
            "extension": [
                {"url": SPECIALTY, "valueString": "Diagnostics"},
                {"url": ORG_UNIT, "valueString": "Internal medicine"},
                {"url": "urn:other", "valueBoolean": true}
            ],
            "telecom": [{"system": "phone", "value": "+1 555 0100"}],
            "gender": "male",
            "birthDate": "1959-06-11",
            "qualification": [{"code": {"text": "MD"}}],
            "meta": {"profile": ["http://example.org/p"]},
        })
    }

    fn cardiology() -> Value {
        json!({
            "resourceType": "Organization",
            "identifier": [{"system": DEPARTMENT_CODE, "value": "CARD"}],
            "name": "Cardiology",
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "dept"}]}],
            "partOf": {"reference": "Organization/0190c3a0-0000-7000-8000-0000000000ff"},
            "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
        })
    }

    fn ward() -> Value {
        json!({
            "resourceType": "Location",
            "status": "active",
            "name": "Ward 7",
            "alias": ["Seven"],
            "mode": "instance",
            "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "wa", "display": "Ward"}]},
            "managingOrganization": {"reference": format!("Organization/{DEPT}"), "display": "Cardiology"},
            "position": {"longitude": -0.1, "latitude": 51.5},
            "address": {"city": "London"},
        })
    }

    fn content(mut r: Value) -> Value {
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
        r
    }

    fn registered(w: &PractitionerWrite) -> Clinician {
        let e = Clinician::decide(None, &w.register(Uuid::nil())).unwrap();
        e.iter().fold(None, Clinician::evolve).unwrap()
    }

    fn department(w: &OrganizationWrite) -> Department {
        let e = Department::decide(None, &w.create(Uuid::nil())).unwrap();
        e.iter().fold(None, Department::evolve).unwrap()
    }

    fn place(w: &LocationWrite) -> Location {
        let e = Location::decide(None, &w.create(Uuid::nil(), true)).unwrap();
        e.iter().fold(None, Location::evolve).unwrap()
    }

    #[test]
    fn staff_resources_read_back_as_sent() {
        let w = practitioner_from_fhir(&house()).unwrap();
        assert_eq!(
            (w.credential.as_str(), w.specialty.as_str(), w.active),
            ("GMC-7001", "Diagnostics", Some(true))
        );
        let c = registered(&w);
        assert_eq!(content(practitioner(&c, None)), house());
        assert!(practitioner_update(&c, &w).is_none());

        let w = organization_from_fhir(&cardiology()).unwrap();
        let d = department(&w);
        assert_eq!(content(organization(&d, None)), cardiology());
        assert!(organization_update(&d, &w).is_none());

        let w = location_from_fhir(&ward()).unwrap();
        let l = place(&w);
        assert_eq!(
            (l.kind.as_str(), l.department_id.to_string()),
            ("ward", DEPT.to_owned())
        );
        assert_eq!(content(location(&l, None)), ward());
        assert!(location_update(&l, &w).unwrap().is_none());
    }

    #[test]
    fn a_status_or_kind_left_out_reads_back_left_out_until_it_changes() {
        let mut r = ward();
        let o = r.as_object_mut().unwrap();
        o.remove("status");
        o.remove("physicalType");
        let w = location_from_fhir(&r).unwrap();
        let l = place(&w);
        assert_eq!((l.kind.as_str(), l.active), ("other", true));
        assert_eq!(content(location(&l, None)), r);
        let mut off = l.clone();
        off.active = false;
        off.kind = "room".into();
        let shown = location(&off, None);
        assert_eq!(shown["status"], "inactive");
        assert_eq!(shown["physicalType"], bare_kind("room"));

        let mut r = house();
        r.as_object_mut().unwrap().remove("active");
        let c = registered(&practitioner_from_fhir(&r).unwrap());
        assert_eq!(content(practitioner(&c, None)), r);
        let mut off = c.clone();
        off.status = ClinicianStatus::Inactive;
        assert_eq!(practitioner(&off, None)["active"], false);
    }

    #[test]
    fn an_update_revises_and_a_delete_deactivates() {
        let c = registered(&practitioner_from_fhir(&house()).unwrap());
        let mut r = house();
        r["active"] = json!(false);
        r["name"][0]["given"] = json!(["Greg"]);
        r["gender"] = json!("other");
        let cmd = practitioner_update(&c, &practitioner_from_fhir(&r).unwrap()).unwrap();
        let e = Clinician::decide(Some(&c), &cmd).unwrap();
        assert_eq!(e.len(), 1);
        let after = Clinician::evolve(Some(c.clone()), &e[0]).unwrap();
        assert_eq!(after.status, ClinicianStatus::Inactive);
        assert_eq!(content(practitioner(&after, None)), r);
        let e = Clinician::decide(Some(&after), &practitioner_delete()).unwrap();
        assert!(e.is_empty(), "already inactive: nothing to do");

        let l = place(&location_from_fhir(&ward()).unwrap());
        let mut r = ward();
        r["managingOrganization"]["reference"] =
            json!("Organization/0190c3a0-0000-7000-8000-000000000002");
        let e = location_update(&l, &location_from_fhir(&r).unwrap()).unwrap_err();
        assert_eq!(
            e[0].expression.as_deref(),
            Some("Location.managingOrganization")
        );
        let e = Location::decide(Some(&l), &place_delete()).unwrap();
        assert!(!Location::evolve(Some(l), &e[0]).unwrap().active);
    }

    type Reader = fn(&Value) -> Option<Vec<Issue>>;

    #[test]
    fn what_the_aggregates_need_is_refused_naming_the_element() {
        let cases: Vec<(Value, Reader, &str)> = vec![
            (
                {
                    let mut r = house();
                    r["name"] = json!([{"text": "Greg"}]);
                    r
                },
                |r| practitioner_from_fhir(r).err(),
                "Practitioner.name[0].family",
            ),
            (
                {
                    let mut r = cardiology();
                    r.as_object_mut().unwrap().remove("name");
                    r
                },
                |r| organization_from_fhir(r).err(),
                "Organization.name",
            ),
            (
                {
                    let mut r = ward();
                    r["status"] = json!("suspended");
                    r
                },
                |r| location_from_fhir(r).err(),
                "Location.status",
            ),
            (
                {
                    let mut r = ward();
                    r["managingOrganization"] = json!({"reference": "Organization/x"});
                    r
                },
                |r| location_from_fhir(r).err(),
                "Location.managingOrganization.reference",
            ),
        ];
        for (r, read, at) in cases {
            let e = read(&r).unwrap_or_else(|| panic!("{r} was accepted"));
            assert_eq!(e[0].expression.as_deref(), Some(at), "{e:?}");
        }
        // Structural errors come first (validation), naming the element too.
        let e = location_from_fhir(&json!({"resourceType": "Location", "name": 7})).unwrap_err();
        assert!(!e.is_empty());
        // The domain's refusals name FHIR elements.
        assert_eq!(location_path("kind"), "Location.physicalType");
        assert_eq!(practitioner_path("credential"), "Practitioner.identifier");
    }

    #[test]
    fn what_another_system_leaves_out_is_salus_s_choice_and_reads_back_left_out() {
        // A Practitioner and an Organization as Synthea writes them: an NPI, no Salus
        // credential, specialty, org unit or department code.
        let npi = json!({"resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999941093"}],
            "active": true, "name": [{"family": "Wolff180", "given": ["Jamey282"], "prefix": ["Dr."]}],
            "gender": "male"});
        let w = practitioner_from_fhir(&npi).unwrap();
        assert_eq!(w.credential, "http://hl7.org/fhir/sid/us-npi|9999941093");
        assert_eq!(
            (w.specialty.as_str(), w.org_unit.as_str()),
            (UNSPECIFIED, UNSPECIFIED)
        );
        let c = registered(&w);
        assert_eq!(content(practitioner(&c, None)), content(npi.clone()));
        // An update that still leaves them out keeps what the clinician has.
        let mut c2 = c.clone();
        c2.specialty = "Cardiology".into();
        let again = practitioner_from_fhir(&npi).unwrap();
        match practitioner_update(&c2, &again) {
            Some(ClinicianCommand::Revise(r)) => {
                assert_eq!(r.specialty.as_deref(), Some("Cardiology"));
                assert_eq!(r.credential.as_deref(), Some(c.credential.as_str()));
            }
            other => panic!("{other:?}"),
        }
        let org = json!({"resourceType": "Organization",
            "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": "ef6ab57c-ed94-3dbe-9861-812d515918b3"}],
            "active": true, "name": "BOSTON MEDICAL CENTER CORPORATION-",
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}]});
        let w = organization_from_fhir(&org).unwrap();
        assert!(
            w.code.starts_with("ORG-") && w.code.len() == 16,
            "{}",
            w.code
        );
        let d = department(&w);
        assert_eq!(content(organization(&d, None)), content(org.clone()));
        let again = organization_from_fhir(&org).unwrap();
        assert!(
            organization_update(&d, &again).is_none(),
            "the same resource changes nothing"
        );
    }

    #[test]
    fn staff_entries_are_indexed_on_their_r4_parameters() {
        let l = place(&location_from_fhir(&ward()).unwrap());
        let rows = crate::clinical::rows("location", &serde_json::to_value(&l).unwrap());
        let has = |param: &str, value: &str| {
            rows.iter()
                .any(|r| r.param == param && r.value.contains(value))
        };
        assert!(has("Location.organization", DEPT), "{rows:?}");
        assert!(has("Location.address-city", "london"), "{rows:?}");
        assert!(has("Location.status", "active"), "{rows:?}");
        let c = registered(&practitioner_from_fhir(&house()).unwrap());
        let rows = crate::clinical::rows("clinician", &serde_json::to_value(&c).unwrap());
        assert!(rows.iter().any(|r| r.param == "Practitioner.identifier"
            && r.system == CREDENTIAL
            && r.value == "GMC-7001"));
        assert!(rows.iter().any(|r| r.param == "Practitioner.family"));
        let d = department(&organization_from_fhir(&cardiology()).unwrap());
        let rows = crate::clinical::rows("department", &serde_json::to_value(&d).unwrap());
        assert!(
            rows.iter().any(|r| r.param == "Organization.partof"),
            "{rows:?}"
        );
    }

    proptest! {
        #[test]
        fn any_practitioner_the_domain_keeps_round_trips(
            family in "[A-Za-z][A-Za-z' -]{0,20}[a-z]",
            given in proptest::collection::vec("[A-Z][a-z]{0,12}", 0..3),
            credential in "[A-Z0-9-]{1,16}",
            active in any::<bool>(),
            phone in proptest::option::of("[0-9+][0-9 ]{1,10}[0-9]"),
        ) {
            let mut r = json!({
                "resourceType": "Practitioner",
                "identifier": [{"system": CREDENTIAL, "value": credential}],
                "active": active,
                "name": [{"family": family}],
                "extension": [
                    {"url": SPECIALTY, "valueString": "Cardiology"},
                    {"url": ORG_UNIT, "valueString": "Heart"}
                ],
            });
            if !given.is_empty() {
                r["name"][0]["given"] = json!(given);
            }
            if let Some(p) = phone {
                r["telecom"] = json!([{"system": "phone", "value": p}]);
            }
            let c = registered(&practitioner_from_fhir(&r).unwrap());
            prop_assert_eq!(c.status == ClinicianStatus::Active, active);
            prop_assert_eq!(content(practitioner(&c, None)), r.clone());
            prop_assert!(practitioner_update(&c, &practitioner_from_fhir(&r).unwrap()).is_none());
        }
    }
}
