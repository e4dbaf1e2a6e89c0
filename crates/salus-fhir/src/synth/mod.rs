//! A synthetic patient population in FHIR R4, for the tests and benchmarks of import:
//! patients with a history of years (encounters of every class, vital signs and
//! laboratory results, conditions, procedures, allergies, prescriptions, immunizations,
//! care plans, diagnostic reports, coverage and claims), coded with real LOINC, SNOMED CT,
//! RxNorm and CVX codes ([`codes`]).
//!
//! It is deterministic and does no I/O: a [`Config`] (seed, size, the population's "today")
//! names one population, byte for byte, and patient `i` is the same in every population of
//! that seed whatever its size. Patients are made one at a time ([`population`] is a lazy
//! iterator), so a population of millions of resources never sits in memory.
//!
//! Two shapes: a FHIR `transaction` Bundle per patient ([`PatientRecord::transaction`],
//! references as `urn:uuid:` for the server to resolve, the Patient and its general
//! practitioner created only if their identifiers are new), and the Bulk Data form ([`PatientRecord::bulk_resources`]: ids
//! assigned, references as `Type/id`, one NDJSON line per resource).
//!
//! It never decides what Salus keeps: every resource is valid R4 ([`crate::validate`]),
//! and the Patient carries what other systems add beside the fields Salus models (an
//! identifier type, a name's use, the language spoken, a marital status, the US Core birth
//! sex), so that importing a population exercises what is kept as sent.

pub mod codes;
mod history;
mod people;
mod rng;

use chrono::NaiveDate;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The system of the synthetic patients' medical record numbers.
pub const PATIENT_IDENTIFIER_SYSTEM: &str = "https://synth.salus.example/mrn";

/// The system of the general practitioners' credentials (Salus's clinician credential).
pub const PRACTITIONER_IDENTIFIER_SYSTEM: &str = "urn:salus:credential";

/// What names one population.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub seed: u64,
    pub patients: u64,
    /// The population's "today": no event lies after it, every age is counted to it.
    pub as_of: NaiveDate,
    /// A Salus clinician (its id) who sees every patient: each Encounter's participant and
    /// each Procedure's performer (Salus keeps no encounter without its clinician,
    /// requirements/000). Without one, each record holds its patient's own general
    /// practitioner, a Practitioner entry the Encounters and Procedures name.
    pub practitioner: Option<Uuid>,
}

/// The default "today" of a population, fixed so that a seed alone names one.
pub fn default_as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default()
}

impl Config {
    pub fn new(seed: u64, patients: u64) -> Self {
        Config {
            seed,
            patients,
            as_of: default_as_of(),
            practitioner: None,
        }
    }

    /// The same population, its patients seen by `practitioner`.
    pub fn with_practitioner(mut self, practitioner: Uuid) -> Self {
        self.practitioner = Some(practitioner);
        self
    }
}

/// The medical record number of patient `index` of the population `seed`.
pub fn medical_record_number(seed: u64, index: u64) -> String {
    format!("S{seed}-{:07}", index + 1)
}

/// One resource of a patient's record, with references between the record's resources
/// written `urn:uuid:<id>` and no `id` of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: Uuid,
    pub resource_type: &'static str,
    pub resource: Value,
}

/// One patient's whole record: the Patient first, then its Coverage, its general
/// practitioner (unless [`Config::practitioner`] names a Salus clinician), then the history in
/// date order (each visit's Encounter before what was recorded in it).
#[derive(Debug, Clone, PartialEq)]
pub struct PatientRecord {
    /// The patient's place in the population, from 0.
    pub index: u64,
    pub entries: Vec<Entry>,
}

impl PatientRecord {
    /// The Patient's id (the `urn:uuid:` of its entry, and its id in the Bulk Data form).
    pub fn patient_id(&self) -> Uuid {
        self.entries.first().map(|e| e.id).unwrap_or_default()
    }

    /// The record as one FHIR `transaction` Bundle: every entry's `fullUrl` is
    /// `urn:uuid:<id>`, its request a POST; the Patient's and the Practitioner's are
    /// conditional on their identifiers (`ifNoneExist`), so a second import finds them again.
    pub fn transaction(&self) -> Value {
        let entry: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut request = json!({ "method": "POST", "url": e.resource_type });
                let system = match e.resource_type {
                    "Patient" => Some(PATIENT_IDENTIFIER_SYSTEM),
                    "Practitioner" => Some(PRACTITIONER_IDENTIFIER_SYSTEM),
                    _ => None,
                };
                if let Some(system) = system
                    && let Some(value) = e.resource["identifier"][0]["value"].as_str()
                {
                    request["ifNoneExist"] = json!(format!("identifier={system}|{value}"));
                }
                json!({
                    "fullUrl": format!("urn:uuid:{}", e.id),
                    "resource": e.resource,
                    "request": request,
                })
            })
            .collect();
        json!({ "resourceType": "Bundle", "type": "transaction", "entry": entry })
    }

    /// The record in the Bulk Data form: each resource with its `id` set to its entry's
    /// id and every `urn:uuid:` reference rewritten to `Type/id`.
    pub fn bulk_resources(&self) -> Vec<(&'static str, Value)> {
        let types: HashMap<Uuid, &'static str> = self
            .entries
            .iter()
            .map(|e| (e.id, e.resource_type))
            .collect();
        self.entries
            .iter()
            .map(|e| {
                let mut r = e.resource.clone();
                rewrite_references(&mut r, &types);
                if let Some(obj) = r.as_object_mut() {
                    obj.insert("id".into(), json!(e.id.to_string()));
                }
                (e.resource_type, r)
            })
            .collect()
    }
}

fn rewrite_references(v: &mut Value, types: &HashMap<Uuid, &'static str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference"
                    && let Some(s) = x.as_str()
                    && let Some(id) = s
                        .strip_prefix("urn:uuid:")
                        .and_then(|u| Uuid::parse_str(u).ok())
                    && let Some(t) = types.get(&id)
                {
                    *x = json!(format!("{t}/{id}"));
                } else {
                    rewrite_references(x, types);
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                rewrite_references(x, types);
            }
        }
        _ => {}
    }
}

/// Patient `index` of the population `config` names.
pub fn patient(config: &Config, index: u64) -> PatientRecord {
    let mut rng = rng::Rng::for_patient(config.seed, index);
    let entries = history::Builder::new(&mut rng, config.as_of, index, config.seed)
        .with_practitioner(config.practitioner)
        .build();
    PatientRecord { index, entries }
}

/// The population, one patient at a time.
pub fn population(config: &Config) -> Population {
    Population {
        config: *config,
        next: 0,
    }
}

/// The population's transaction Bundles, one per patient, made as they are taken.
pub fn transactions(config: &Config) -> impl Iterator<Item = Value> {
    population(config).map(|r| r.transaction())
}

/// The lazy iterator of [`population`].
#[derive(Debug, Clone)]
pub struct Population {
    config: Config,
    next: u64,
}

impl Iterator for Population {
    type Item = PatientRecord;

    fn next(&mut self) -> Option<PatientRecord> {
        if self.next >= self.config.patients {
            return None;
        }
        let r = patient(&self.config, self.next);
        self.next += 1;
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.config.patients - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Population {}

/// Counts of a population by resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub patients: u64,
    pub by_type: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn add(&mut self, record: &PatientRecord) {
        self.patients += 1;
        for e in &record.entries {
            *self.by_type.entry(e.resource_type).or_default() += 1;
        }
    }

    /// Every resource, of every type.
    pub fn total(&self) -> u64 {
        self.by_type.values().sum()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (t, n) in &self.by_type {
            writeln!(f, "{t:<20} {n:>10}")?;
        }
        write!(f, "{:<20} {:>10}", "total", self.total())
    }
}

#[cfg(test)]
mod tests;
