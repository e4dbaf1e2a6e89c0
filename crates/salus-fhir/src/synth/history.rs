//! One patient's record over the years: a life plan (long-term conditions with their
//! onsets, allergies, acute problems, screenings, home visits), turned into visits in
//! date order, each with what a visit of its kind records. References between resources
//! are `urn:uuid:` of the entries they name (the transaction form, see `super::output`).

use super::codes::{self, Chronic, Code, Lab, Measure, Medication, Panel};
use super::people::{self, Person};
use super::rng::Rng;
use super::{Entry, PATIENT_IDENTIFIER_SYSTEM};
use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn urn(id: Uuid) -> String {
    format!("urn:uuid:{id}")
}

fn reference(id: Uuid) -> Value {
    json!({ "reference": urn(id) })
}

fn coding(c: &Code) -> Value {
    json!({ "system": c.system, "code": c.code, "display": c.display })
}

fn concept(c: &Code) -> Value {
    json!({ "coding": [coding(c)], "text": c.display })
}

/// A `CodeableConcept` of a code of an HL7 code system (no text: the code says it).
fn status_concept(system: &str, code: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code }] })
}

fn date_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An instant as FHIR writes it (seconds, milliseconds and a zone required).
fn instant(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A decimal of `scaled / 10^decimals`, written with exactly that many digits' meaning.
fn decimal(scaled: i64, decimals: u32) -> Value {
    if decimals == 0 {
        return json!(scaled);
    }
    let v = scaled as f64 / 10f64.powi(decimals as i32);
    json!(v)
}

fn quantity(m: &Measure, scaled: i64) -> Value {
    json!({
        "value": decimal(scaled, m.decimals),
        "unit": m.unit,
        "system": codes::UCUM,
        "code": m.unit,
    })
}

fn money(cents: i64, currency: &str) -> Value {
    json!({ "value": decimal(cents, 2), "currency": currency })
}

fn years_between(from: NaiveDate, to: NaiveDate) -> i64 {
    let mut y = i64::from(to.year() - from.year());
    if (to.month(), to.day()) < (from.month(), from.day()) {
        y -= 1;
    }
    y.max(0)
}

fn at(d: NaiveDate, hour: u32, minute: u32) -> NaiveDateTime {
    d.and_time(NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or(NaiveTime::MIN))
}

/// What the life plan schedules.
#[derive(Clone, Copy)]
enum Plan {
    /// Routine check-up (well-child visit for children), with the schedule's vaccines.
    CheckUp,
    /// Diagnosis of long-term condition `i` of the patient's list.
    Diagnosis(usize),
    /// Follow-up of long-term condition `i`, in person or (when `virtual`) by video.
    FollowUp {
        condition: usize,
        virtual_visit: bool,
    },
    /// An acute problem of [`codes::ACUTE`].
    Acute(usize),
    /// A screening procedure at its own visit.
    Screening(Code),
    HomeVisit,
}

/// A long-term condition the patient has, with its resource once it is recorded.
struct Condition {
    chronic: &'static Chronic,
    onset: NaiveDate,
    recorded: Option<Uuid>,
    /// The medication chosen for it, if it has any.
    medication: Option<&'static Medication>,
}

/// The last request of each medication being taken, to be closed when renewed.
struct ActiveMedication {
    code: &'static str,
    entry: usize,
    visit: Uuid,
}

pub(crate) struct Builder<'a> {
    rng: &'a mut Rng,
    as_of: NaiveDate,
    person: Person,
    patient: Uuid,
    coverage: Uuid,
    currency: &'static str,
    entries: Vec<Entry>,
    conditions: Vec<Condition>,
    allergies: Vec<&'static codes::Allergy>,
    allergies_recorded: bool,
    medications: Vec<ActiveMedication>,
    /// Baselines of this person: adult height (mm), BMI (tenths), systolic and diastolic
    /// pressure, resting heart rate.
    height_mm: i64,
    bmi: i64,
    systolic: i64,
    diastolic: i64,
    heart_rate: i64,
    last_vaccine_month: i64,
    adult_vaccines: (bool, bool, Option<NaiveDate>),
    /// A Salus clinician who sees the patient (Encounter.participant, Procedure.performer);
    /// without one, the patient's own general practitioner, an entry of the record.
    practitioner: Option<Uuid>,
    /// The general practitioner's entry id and credential.
    gp: (Uuid, String),
}

const CLINIC: &str = "Salus Synthetic Health Centre";
use super::PRACTITIONER_IDENTIFIER_SYSTEM;
const PLANS: &[&str] = &[
    "Meridian Mutual Health Plan",
    "Northwind Health Cooperative",
    "Harbour Public Health Insurance",
    "Lindqvist Family Health Fund",
];

impl<'a> Builder<'a> {
    pub(crate) fn new(rng: &'a mut Rng, as_of: NaiveDate, index: u64, seed: u64) -> Self {
        let person = people::person(rng, as_of);
        let patient = rng.uuid();
        let coverage = rng.uuid();
        let currency = match person.address.country {
            "US" => "USD",
            "GB" => "GBP",
            _ => "EUR",
        };
        let female = person.gender == "female";
        let height_mm = if female {
            rng.normal(1630, 70, 1450, 1850)
        } else {
            rng.normal(1760, 70, 1550, 2000)
        };
        let mut b = Builder {
            rng,
            as_of,
            person,
            patient,
            coverage,
            currency,
            entries: Vec::new(),
            conditions: Vec::new(),
            allergies: Vec::new(),
            allergies_recorded: false,
            medications: Vec::new(),
            height_mm,
            bmi: 0,
            systolic: 0,
            diastolic: 0,
            heart_rate: 0,
            last_vaccine_month: -1,
            adult_vaccines: (false, false, None),
            practitioner: None,
            gp: (Uuid::nil(), format!("S{seed}-GP{:07}", index + 1)),
        };
        // Not drawn from the generator, so the rest of the record is the same with or
        // without the practitioner's entry.
        let mut bytes = *b.patient.as_bytes();
        for (x, k) in bytes.iter_mut().zip(b"salus-synth-gp!!") {
            *x ^= k;
        }
        b.gp.0 = uuid::Builder::from_random_bytes(bytes).into_uuid();
        b.bmi = b.rng.normal(262, 40, 180, 420);
        b.systolic = b.rng.normal(118, 9, 95, 139);
        b.diastolic = b.rng.normal(76, 6, 60, 89);
        b.heart_rate = b.rng.normal(72, 8, 52, 98);
        b.patient_entry(index, seed);
        b
    }

    /// The clinician who sees the patient at every visit and performs its procedures.
    pub(crate) fn with_practitioner(mut self, practitioner: Option<Uuid>) -> Self {
        self.practitioner = practitioner;
        self
    }

    /// The Reference of the clinician who sees the patient.
    fn clinician(&self) -> Value {
        match self.practitioner {
            Some(p) => json!({ "reference": format!("Practitioner/{p}") }),
            None => reference(self.gp.0),
        }
    }

    /// The patient's general practitioner (unless a Salus clinician sees the patient): a
    /// Practitioner as Salus keeps a clinician (its credential as identifier, specialty and
    /// org unit as extensions).
    fn practitioner_entry(&mut self) {
        if self.practitioner.is_some() {
            return;
        }
        let (id, credential) = self.gp.clone();
        let resource = json!({
            "resourceType": "Practitioner",
            "identifier": [{ "system": PRACTITIONER_IDENTIFIER_SYSTEM, "value": credential }],
            "active": true,
            "name": [{ "family": "Okafor", "given": ["Adaeze"] }],
            "extension": [
                { "url": "urn:salus:fhir:extension:specialty", "valueString": "General practice" },
                { "url": "urn:salus:fhir:extension:org-unit", "valueString": CLINIC },
            ],
        });
        self.push(id, "Practitioner", resource);
    }

    fn push(&mut self, id: Uuid, resource_type: &'static str, resource: Value) -> usize {
        self.entries.push(Entry {
            id,
            resource_type,
            resource,
        });
        self.entries.len() - 1
    }

    fn age_at(&self, d: NaiveDate) -> i64 {
        years_between(self.person.birth_date, d)
    }

    fn patient_entry(&mut self, index: u64, seed: u64) {
        let p = &self.person;
        let mut telecom: Vec<Value> = p
            .phones
            .iter()
            .map(|ph| json!({ "system": "phone", "value": ph }))
            .collect();
        if let Some(e) = &p.email {
            telecom.push(json!({ "system": "email", "value": e }));
        }
        let mut address = Map::new();
        address.insert("line".into(), json!([p.address.line]));
        address.insert("city".into(), json!(p.address.city));
        if let Some(s) = p.address.state {
            address.insert("state".into(), json!(s));
        }
        address.insert("postalCode".into(), json!(p.address.postal_code));
        address.insert("country".into(), json!(p.address.country));
        // What other systems add to a patient and Salus keeps beside its fields: the
        // identifier's type, the name's use, the language spoken, the marital status of
        // adults, the birth sex (US Core); made from what the person already is, so the
        // population stays the one its seed names.
        let language = match p.address.country {
            "DE" => ("de", "German"),
            "FR" => ("fr", "French"),
            "ES" => ("es", "Spanish"),
            _ => ("en", "English"),
        };
        let mut resource = json!({
            "resourceType": "Patient",
            "extension": [{
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                "valueCode": if p.gender == "female" { "F" } else if p.gender == "male" { "M" } else { "UNK" },
            }],
            "identifier": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}]},
                "system": PATIENT_IDENTIFIER_SYSTEM,
                "value": super::medical_record_number(seed, index),
            }],
            "active": true,
            "name": [{ "use": "official", "family": p.family, "given": p.given }],
            "telecom": telecom,
            "gender": p.gender,
            "birthDate": date(p.birth_date),
            "address": [Value::Object(address)],
            "communication": [{"language": {
                "coding": [{"system": "urn:ietf:bcp:47", "code": language.0, "display": language.1}],
                "text": language.1,
            }}],
        });
        if self.age_at(self.as_of) >= 18 {
            let (code, display) = if index.is_multiple_of(3) {
                ("S", "Never Married")
            } else {
                ("M", "Married")
            };
            resource["maritalStatus"] = json!({"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                "code": code,
                "display": display,
            }]});
        }
        let id = self.patient;
        self.push(id, "Patient", resource);
    }

    /// The whole record, in date order after the Patient and its Coverage.
    pub(crate) fn build(mut self) -> Vec<Entry> {
        let as_of = self.as_of;
        let birth = self.person.birth_date;
        let age = self.age_at(as_of);
        // The years of record this practice holds: a child's whole life, an adult's last
        // few years to a few decades.
        let span_years = if age < 18 {
            age + 1
        } else {
            self.rng.between(3, 15)
        };
        let start = (as_of - Duration::days(span_years * 365)).max(birth);
        self.coverage_entry(start);
        self.practitioner_entry();
        self.plan_conditions(age);
        if self.rng.chance(220) {
            let n = if self.rng.chance(250) { 2 } else { 1 };
            for _ in 0..n {
                let a = self.rng.pick(codes::ALLERGIES);
                if !self.allergies.iter().any(|x| x.code == a.code) {
                    self.allergies.push(a);
                }
            }
        }
        let mut plan = self.plan_visits(start, age);
        plan.sort_by_key(|(d, _)| *d);
        for (d, p) in plan {
            if d > as_of || d < birth {
                continue;
            }
            self.visit(d, p);
        }
        if !self.allergies_recorded && !self.allergies.is_empty() {
            self.record_allergies(None, start);
        }
        self.entries
    }

    fn coverage_entry(&mut self, start: NaiveDate) {
        let payor = *self.rng.pick(PLANS);
        let member = format!("{:010}", self.rng.below(10_000_000_000));
        let resource = json!({
            "resourceType": "Coverage",
            "status": "active",
            "subscriberId": member,
            "beneficiary": reference(self.patient),
            "relationship": {
                "coding": [{ "system": codes::SUBSCRIBER_RELATIONSHIP, "code": "self", "display": "Self" }]
            },
            "period": { "start": date(start) },
            "payor": [{ "display": payor }],
        });
        let id = self.coverage;
        self.push(id, "Coverage", resource);
    }

    fn plan_conditions(&mut self, age: i64) {
        for c in codes::CHRONIC {
            if age < c.min_age {
                continue;
            }
            // Prevalence grows with the years past the condition's first age.
            let years = (age - c.min_age + 1).min(40);
            let per_mille = (u64::from(c.per_mille) * years as u64 / 20).min(900) as u32;
            if !self.rng.chance(per_mille) {
                continue;
            }
            if c.code == codes::PREDIABETES
                && self
                    .conditions
                    .iter()
                    .any(|x| x.chronic.code == codes::DIABETES)
            {
                continue;
            }
            let onset_age = self.rng.between(c.min_age, age);
            let days = self.rng.between(0, 364);
            let onset = (self.person.birth_date + Duration::days(onset_age * 365 + days))
                .min(self.as_of - Duration::days(1));
            let medication = if c.medications.is_empty() {
                None
            } else {
                Some(self.rng.pick(c.medications))
            };
            self.conditions.push(Condition {
                chronic: c,
                onset,
                recorded: None,
                medication,
            });
        }
    }

    fn plan_visits(&mut self, start: NaiveDate, age: i64) -> Vec<(NaiveDate, Plan)> {
        let birth = self.person.birth_date;
        let mut plan = Vec::new();
        // Well-child visits at the schedule's ages, then yearly check-ups.
        for m in [0u32, 1, 2, 4, 6, 9, 12, 15, 18, 24, 30, 36] {
            if let Some(d) = birth.checked_add_months(Months::new(m)) {
                let d = d + Duration::days(self.rng.between(3, 10));
                if d >= start {
                    plan.push((d, Plan::CheckUp));
                }
            }
        }
        let first_year = start.year().max(birth.year() + 4);
        for year in first_year..=self.as_of.year() {
            let years_old = i64::from(year - birth.year());
            if years_old >= 18 && !self.rng.chance(750) {
                continue;
            }
            let d = if years_old < 18 {
                // Around the birthday.
                NaiveDate::from_ymd_opt(year, birth.month(), birth.day().min(28))
                    .map(|d| d + Duration::days(self.rng.between(0, 30)))
            } else {
                let month = if self.rng.chance(500) {
                    self.rng.between(9, 12)
                } else {
                    self.rng.between(1, 8)
                } as u32;
                NaiveDate::from_ymd_opt(year, month, self.rng.between(1, 28) as u32)
            };
            if let Some(d) = d
                && d >= start
            {
                plan.push((d, Plan::CheckUp));
            }
        }
        // Long-term conditions: diagnosed (at a visit of their own when the onset falls
        // in the record), then followed up a few times a year.
        for i in 0..self.conditions.len() {
            let onset = self.conditions[i].onset;
            if onset >= start {
                plan.push((onset, Plan::Diagnosis(i)));
            }
            let mut d = onset.max(start) + Duration::days(self.rng.between(60, 150));
            while d <= self.as_of {
                let virtual_visit = self.rng.chance(350);
                plan.push((
                    d,
                    Plan::FollowUp {
                        condition: i,
                        virtual_visit,
                    },
                ));
                d += Duration::days(self.rng.between(90, 240));
            }
        }
        // Acute problems: about one every two years.
        let days = (self.as_of - start).num_days();
        let mut d = start + Duration::days(self.rng.between(30, 730));
        while d <= self.as_of && days > 0 {
            let weights: Vec<(u32, usize)> = codes::ACUTE
                .iter()
                .enumerate()
                .map(|(i, (w, _))| (*w, i))
                .collect();
            plan.push((d, Plan::Acute(*self.rng.weighted(&weights))));
            d += Duration::days(self.rng.between(120, 1100));
        }
        // Screenings.
        let female = self.person.gender == "female";
        for year in start.year()..=self.as_of.year() {
            let years_old = i64::from(year - birth.year());
            let day = || NaiveDate::from_ymd_opt(year, 3, 15);
            if (50..=75).contains(&years_old)
                && (years_old - 50) % 10 == 0
                && self.rng.chance(600)
                && let Some(d) = day()
            {
                plan.push((
                    d + Duration::days(self.rng.between(0, 200)),
                    Plan::Screening(codes::COLONOSCOPY),
                ));
            }
            if female
                && (50..=74).contains(&years_old)
                && years_old % 2 == 0
                && self.rng.chance(700)
                && let Some(d) = day()
            {
                plan.push((
                    d + Duration::days(self.rng.between(0, 250)),
                    Plan::Screening(codes::MAMMOGRAPHY),
                ));
            }
        }
        // Home health for the frail: the old with two long-term conditions or more.
        if age >= 75 && self.conditions.len() >= 2 {
            let mut d = (self.as_of - Duration::days(730)).max(start);
            while d <= self.as_of {
                plan.push((d, Plan::HomeVisit));
                d += Duration::days(self.rng.between(60, 120));
            }
        }
        plan
    }

    fn visit(&mut self, d: NaiveDate, plan: Plan) {
        let hour = self.rng.between(8, 16) as u32;
        let minute = (self.rng.below(4) * 15) as u32;
        let start = at(d, hour, minute);
        match plan {
            Plan::CheckUp => self.check_up(start),
            Plan::Diagnosis(i) => self.diagnosis(start, i),
            Plan::FollowUp {
                condition,
                virtual_visit,
            } => self.follow_up(start, condition, virtual_visit),
            Plan::Acute(i) => self.acute(start, &codes::ACUTE[i].1),
            Plan::Screening(code) => {
                let end = start + Duration::minutes(self.rng.between(30, 90));
                let mut v = self.encounter(codes::AMBULATORY, code, start, end, None);
                self.procedure(&mut v, code, start, None);
                self.close(v);
            }
            Plan::HomeVisit => {
                let end = start + Duration::minutes(45);
                let mut v = self.encounter(codes::HOME_HEALTH, codes::HOME_VISIT, start, end, None);
                self.vitals(&v, start, VitalSet::Home);
                self.record_open_conditions(&v, start);
                self.procedure(&mut v, codes::MEDICATION_RECONCILIATION, start, None);
                self.close(v);
            }
        }
    }

    fn check_up(&mut self, start: NaiveDateTime) {
        let d = start.date();
        let age = self.age_at(d);
        let kind = if age < 18 {
            codes::WELL_CHILD
        } else {
            codes::CHECK_UP
        };
        let end = start + Duration::minutes(30);
        let mut v = self.encounter(codes::AMBULATORY, kind, start, end, None);
        self.vitals(&v, start, VitalSet::Full);
        self.record_open_conditions(&v, start);
        if !self.allergies_recorded && !self.allergies.is_empty() {
            self.record_allergies(Some(v.id), d);
        }
        self.renew_medications(&v, start);
        if age >= 18 {
            let chronic = self.conditions.iter().any(|c| c.onset <= d);
            if chronic || self.rng.chance(350) {
                self.panel(&v, start, &codes::BASIC_METABOLIC);
                self.panel(&v, start, &codes::BLOOD_COUNT);
            }
            if age >= 35 && self.rng.chance(300) {
                self.panel(&v, start, &codes::LIPID);
            }
            if self.rng.chance(500) {
                self.procedure(&mut v, codes::DEPRESSION_SCREENING, start, None);
            }
        }
        self.vaccines(&v, start);
        self.close(v);
    }

    fn diagnosis(&mut self, start: NaiveDateTime, i: usize) {
        let code = self.conditions[i].chronic.code;
        let end = start + Duration::minutes(30);
        let mut v = self.encounter(
            codes::AMBULATORY,
            codes::PROBLEM_VISIT,
            start,
            end,
            Some(code),
        );
        self.vitals(&v, start, VitalSet::Problem);
        self.record_condition(&v, i, start);
        let panels = self.conditions[i].chronic.panels;
        for p in panels {
            self.panel(&v, start, p);
        }
        if code == codes::ATRIAL_FIBRILLATION {
            let reason = self.conditions[i].recorded;
            self.procedure(&mut v, codes::ELECTROCARDIOGRAM, start, reason);
        }
        self.close(v);
    }

    fn follow_up(&mut self, start: NaiveDateTime, i: usize, virtual_visit: bool) {
        let d = start.date();
        let code = self.conditions[i].chronic.code;
        let (class, kind) = if virtual_visit {
            (codes::VIRTUAL, codes::TELEMEDICINE)
        } else {
            (codes::AMBULATORY, codes::FOLLOW_UP)
        };
        let end = start + Duration::minutes(if virtual_visit { 15 } else { 20 });
        let mut v = self.encounter(class, kind, start, end, Some(code));
        self.record_open_conditions(&v, start);
        if virtual_visit {
            self.procedure(&mut v, codes::MEDICATION_RECONCILIATION, start, None);
        } else {
            self.vitals(&v, start, VitalSet::FollowUp);
            let chronic = self.conditions[i].chronic;
            if let Some(p) = chronic.panels.first()
                && self.rng.chance(600)
            {
                self.panel(&v, start, p);
            }
            let reason = self.conditions[i].recorded;
            if (code == codes::ASTHMA || code == codes::COPD) && self.rng.chance(400) {
                self.procedure(&mut v, codes::SPIROMETRY, start, reason);
            }
        }
        if self.rng.chance(300) && self.conditions[i].onset <= d {
            self.renew_medications(&v, start);
        }
        self.close(v);
    }

    fn acute(&mut self, start: NaiveDateTime, a: &'static codes::Acute) {
        let stay_days = if a.stay.1 > 0 {
            self.rng.between(a.stay.0, a.stay.1)
        } else {
            0
        };
        let end = if stay_days > 0 {
            start + Duration::days(stay_days) + Duration::hours(self.rng.between(-4, 4))
        } else if a.class == codes::EMERGENCY {
            start + Duration::minutes(self.rng.between(90, 360))
        } else {
            start + Duration::minutes(20)
        };
        let end = end.min(at(self.as_of, 23, 59));
        let mut v = self.encounter(a.class, a.visit, start, end, Some(a.code));
        if a.class != codes::VIRTUAL {
            self.vitals(&v, start, VitalSet::Acute(a));
        }
        self.record_open_conditions(&v, start);
        let onset = start.date() - Duration::days(self.rng.between(0, 3));
        let abatement = start.date() + Duration::days(self.rng.between(a.days.0, a.days.1));
        let condition = self.condition_entry(&v, &a.code, onset, Some(abatement), false, start);
        for p in a.procedures {
            self.procedure(&mut v, *p, start, Some(condition));
        }
        if stay_days > 0 {
            self.panel(&v, start, &codes::BLOOD_COUNT);
            self.panel(&v, start, &codes::BASIC_METABOLIC);
            for day in 1..=stay_days {
                let t = start + Duration::days(day) - Duration::hours(2);
                if t < end {
                    self.vitals(&v, t, VitalSet::Acute(a));
                }
            }
        }
        for m in a.medications {
            self.medication_request(&v, m, start, Some(condition), false);
        }
        self.close(v);
    }

    fn record_open_conditions(&mut self, v: &Visit, start: NaiveDateTime) {
        for i in 0..self.conditions.len() {
            if self.conditions[i].recorded.is_none() && self.conditions[i].onset <= start.date() {
                self.record_condition(v, i, start);
            }
        }
    }

    /// The long-term condition `i` enters the record at visit `v`: the Condition, its
    /// first prescription and its care plan.
    fn record_condition(&mut self, v: &Visit, i: usize, start: NaiveDateTime) {
        if self.conditions[i].recorded.is_some() {
            return;
        }
        let c = self.conditions[i].chronic;
        let onset = self.conditions[i].onset.min(start.date());
        let id = self.condition_entry(v, &c.code, onset, None, true, start);
        self.conditions[i].recorded = Some(id);
        if let Some(m) = self.conditions[i].medication {
            self.medication_request(v, m, start, Some(id), true);
        }
        if let Some((plan, activities)) = c.care_plan {
            let care_plan = self.rng.uuid();
            let resource = json!({
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "category": [concept(&plan)],
                "title": plan.display,
                "subject": reference(self.patient),
                "encounter": reference(v.id),
                "period": { "start": date_time(start) },
                "created": date_time(start),
                "addresses": [reference(id)],
                "activity": activities.iter().map(|a| json!({
                    "detail": { "code": concept(a), "status": "in-progress" }
                })).collect::<Vec<_>>(),
            });
            self.push(care_plan, "CarePlan", resource);
        }
    }

    fn condition_entry(
        &mut self,
        v: &Visit,
        code: &Code,
        onset: NaiveDate,
        abatement: Option<NaiveDate>,
        problem_list: bool,
        recorded: NaiveDateTime,
    ) -> Uuid {
        let id = self.rng.uuid();
        let (category, display) = if problem_list {
            ("problem-list-item", "Problem List Item")
        } else {
            ("encounter-diagnosis", "Encounter Diagnosis")
        };
        let resolved = abatement.filter(|a| *a <= self.as_of);
        let mut r = json!({
            "resourceType": "Condition",
            "clinicalStatus": status_concept(
                codes::CONDITION_CLINICAL,
                if resolved.is_some() { "resolved" } else { "active" },
            ),
            "verificationStatus": status_concept(codes::CONDITION_VERIFICATION, "confirmed"),
            "category": [{ "coding": [{
                "system": codes::CONDITION_CATEGORY, "code": category, "display": display,
            }] }],
            "code": concept(code),
            "subject": reference(self.patient),
            "encounter": reference(v.id),
            "onsetDateTime": date(onset),
            "recordedDate": date_time(recorded),
        });
        if let Some(a) = resolved {
            r["abatementDateTime"] = json!(date(a));
        }
        self.push(id, "Condition", r);
        id
    }

    fn record_allergies(&mut self, encounter: Option<Uuid>, d: NaiveDate) {
        self.allergies_recorded = true;
        let allergies = self.allergies.clone();
        for a in allergies {
            let id = self.rng.uuid();
            let onset_age = self.rng.between(0, self.age_at(d).min(10));
            let onset = (self.person.birth_date + Duration::days(onset_age * 365 + 100)).min(d);
            let severity = if a.criticality == "high" {
                "severe"
            } else if self.rng.chance(500) {
                "moderate"
            } else {
                "mild"
            };
            let mut r = json!({
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": status_concept(codes::ALLERGY_CLINICAL, "active"),
                "verificationStatus": status_concept(codes::ALLERGY_VERIFICATION, "confirmed"),
                "type": "allergy",
                "category": [a.category],
                "criticality": a.criticality,
                "code": concept(&a.code),
                "patient": reference(self.patient),
                "onsetDateTime": date(onset),
                "recordedDate": date(d),
                "reaction": [{
                    "manifestation": a.reactions.iter().map(concept).collect::<Vec<_>>(),
                    "severity": severity,
                }],
            });
            if let Some(e) = encounter {
                r["encounter"] = reference(e);
            }
            self.push(id, "AllergyIntolerance", r);
        }
    }

    /// A prescription; a long-term one stays `active` until the next renewal of the same
    /// drug closes it (`completed`), a course for an acute problem is `completed`.
    fn medication_request(
        &mut self,
        v: &Visit,
        m: &'static Medication,
        start: NaiveDateTime,
        reason: Option<Uuid>,
        long_term: bool,
    ) {
        let id = self.rng.uuid();
        let mut r = json!({
            "resourceType": "MedicationRequest",
            "status": if long_term { "active" } else { "completed" },
            "intent": "order",
            "medicationCodeableConcept": concept(&m.code),
            "subject": reference(self.patient),
            "encounter": reference(v.id),
            "authoredOn": date_time(start),
            "dosageInstruction": [{
                "sequence": 1,
                "text": m.instruction,
                "timing": { "repeat": { "frequency": m.per_day, "period": 1, "periodUnit": "d" } },
                "doseAndRate": [{ "doseQuantity": {
                    "value": m.dose.0, "unit": m.dose.1, "system": codes::UCUM, "code": m.dose.1,
                } }],
            }],
        });
        if let Some(c) = reason {
            r["reasonReference"] = json!([reference(c)]);
        }
        let entry = self.push(id, "MedicationRequest", r);
        if long_term {
            if let Some(prev) = self.medications.iter().position(|a| a.code == m.code.code) {
                let old = self.medications[prev].entry;
                self.entries[old].resource["status"] = json!("completed");
                self.medications[prev].entry = entry;
                self.medications[prev].visit = v.id;
            } else {
                self.medications.push(ActiveMedication {
                    code: m.code.code,
                    entry,
                    visit: v.id,
                });
            }
        }
    }

    /// Renew every long-term prescription of a recorded condition.
    fn renew_medications(&mut self, v: &Visit, start: NaiveDateTime) {
        for i in 0..self.conditions.len() {
            let c = &self.conditions[i];
            if let (Some(id), Some(m)) = (c.recorded, c.medication) {
                let already = self
                    .medications
                    .iter()
                    .any(|a| a.code == m.code.code && a.visit == v.id);
                if !already {
                    self.medication_request(v, m, start, Some(id), true);
                }
            }
        }
    }

    fn encounter(
        &mut self,
        class: Code,
        kind: Code,
        start: NaiveDateTime,
        end: NaiveDateTime,
        reason: Option<Code>,
    ) -> Visit {
        let id = self.rng.uuid();
        let mut r = json!({
            "resourceType": "Encounter",
            "status": "finished",
            "class": coding(&class),
            "type": [concept(&kind)],
            "subject": reference(self.patient),
            "period": { "start": date_time(start), "end": date_time(end) },
            "serviceProvider": { "display": CLINIC },
        });
        if let Some(c) = reason {
            r["reasonCode"] = json!([concept(&c)]);
        }
        r["participant"] = json!([{
            "type": [status_concept(codes::PARTICIPATION_TYPE, "PPRF")],
            "individual": self.clinician(),
        }]);
        self.push(id, "Encounter", r);
        Visit {
            id,
            class,
            kind,
            start,
            end,
            procedures: Vec::new(),
        }
    }

    /// The visit's claim, sent when it ends: the visit itself and each procedure.
    fn close(&mut self, v: Visit) {
        let base = match v.class.code {
            "IMP" => 180_000 * ((v.end - v.start).num_days().max(1)),
            "EMER" => 45_000,
            "HH" => 15_000,
            "VR" => 7_500,
            _ => 12_500,
        };
        let mut items = vec![json!({
            "sequence": 1,
            "productOrService": concept(&v.kind),
            "encounter": [reference(v.id)],
            "net": money(base, self.currency),
        })];
        let mut total = base;
        for (i, p) in v.procedures.iter().enumerate() {
            let price = self.rng.between(40, 900) * 100;
            total += price;
            items.push(json!({
                "sequence": i + 2,
                "productOrService": concept(p),
                "encounter": [reference(v.id)],
                "net": money(price, self.currency),
            }));
        }
        let id = self.rng.uuid();
        let r = json!({
            "resourceType": "Claim",
            "status": "active",
            "type": { "coding": [{
                "system": codes::CLAIM_TYPE,
                "code": if v.class.code == "IMP" { "institutional" } else { "professional" },
            }] },
            "use": "claim",
            "patient": reference(self.patient),
            "billablePeriod": { "start": date_time(v.start), "end": date_time(v.end) },
            "created": date_time(v.end),
            "provider": { "display": CLINIC },
            "priority": { "coding": [{ "system": codes::PROCESS_PRIORITY, "code": "normal" }] },
            "insurance": [{ "sequence": 1, "focal": true, "coverage": reference(self.coverage) }],
            "item": items,
            "total": money(total, self.currency),
        });
        self.push(id, "Claim", r);
    }

    fn procedure(&mut self, v: &mut Visit, code: Code, start: NaiveDateTime, reason: Option<Uuid>) {
        let id = self.rng.uuid();
        let minutes = self.rng.between(10, 45);
        let end = (start + Duration::minutes(minutes)).min(v.end.max(start));
        let mut r = json!({
            "resourceType": "Procedure",
            "status": "completed",
            "code": concept(&code),
            "subject": reference(self.patient),
            "encounter": reference(v.id),
            "performedPeriod": { "start": date_time(start), "end": date_time(end) },
        });
        if let Some(c) = reason {
            r["reasonReference"] = json!([reference(c)]);
        }
        r["performer"] = json!([{ "actor": self.clinician() }]);
        self.push(id, "Procedure", r);
        v.procedures.push(code);
    }

    fn has(&self, code: &Code, d: NaiveDate) -> bool {
        self.conditions
            .iter()
            .any(|c| c.chronic.code == *code && c.onset <= d)
    }

    fn observation(
        &mut self,
        v: &Visit,
        t: NaiveDateTime,
        issued: NaiveDateTime,
        category: (&str, &str),
        code: &Code,
        value: Value,
    ) -> Uuid {
        let id = self.rng.uuid();
        let mut r = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{ "coding": [{
                "system": codes::OBSERVATION_CATEGORY, "code": category.0, "display": category.1,
            }] }],
            "code": concept(code),
            "subject": reference(self.patient),
            "encounter": reference(v.id),
            "effectiveDateTime": date_time(t),
            "issued": instant(issued),
        });
        if let (Some(obj), Some(extra)) = (r.as_object_mut(), value.as_object()) {
            for (k, x) in extra {
                obj.insert(k.clone(), x.clone());
            }
        }
        self.push(id, "Observation", r);
        id
    }

    fn vital(&mut self, v: &Visit, t: NaiveDateTime, m: &Measure, scaled: i64) {
        self.observation(
            v,
            t,
            t,
            ("vital-signs", "Vital Signs"),
            &m.code,
            json!({ "valueQuantity": quantity(m, scaled) }),
        );
    }

    fn vitals(&mut self, v: &Visit, t: NaiveDateTime, set: VitalSet) {
        let d = t.date();
        let age_months = {
            let b = self.person.birth_date;
            i64::from(d.year() - b.year()) * 12 + i64::from(d.month()) - i64::from(b.month())
        }
        .max(0);
        let age = age_months / 12;
        let child = age < 18;
        let hypertensive = self.has(&codes::HYPERTENSION, d);
        let fever = matches!(set, VitalSet::Acute(a) if a.fever);
        let pneumonia = matches!(set, VitalSet::Acute(a) if a.code == codes::PNEUMONIA);

        if matches!(set, VitalSet::Full | VitalSet::FollowUp | VitalSet::Home) {
            // Height: a growth curve for children, the adult height after 18.
            let height_mm = if child {
                let adult = self.height_mm;
                let fraction = match age_months {
                    m if m < 24 => 290 + m * 9,
                    m => (506 + (m - 24) * 257 / 100).min(1000),
                };
                adult * fraction / 1000
            } else {
                self.height_mm
            };
            let bmi = if child {
                self.rng.normal(165, 12, 130, 210)
            } else {
                let obese = self.bmi.max(if self.has(&codes::DIABETES, d) {
                    305
                } else {
                    0
                });
                obese + self.rng.between(-8, 8)
            };
            // Tenths of a centimetre are millimetres; weight = BMI × height².
            let height_cm10 = height_mm + self.rng.between(-3, 3);
            let weight_kg10 = bmi * height_mm * height_mm / 1_000_000;
            if matches!(set, VitalSet::Full) {
                self.vital(v, t, &codes::HEIGHT, height_cm10.max(450));
            }
            self.vital(v, t, &codes::WEIGHT, weight_kg10.max(20));
            if matches!(set, VitalSet::Full) && age >= 2 {
                self.vital(v, t, &codes::BMI, bmi);
            }
        }
        if age >= 3 {
            let (s, dia) = if hypertensive {
                (
                    self.systolic + 18 + self.rng.between(-8, 12),
                    self.diastolic + 9 + self.rng.between(-5, 6),
                )
            } else if child {
                (100 + self.rng.between(-8, 10), 62 + self.rng.between(-6, 6))
            } else {
                (
                    self.systolic + self.rng.between(-6, 6),
                    self.diastolic + self.rng.between(-4, 4),
                )
            };
            // Systolic and diastolic as Observations of their own, each with its value
            // (Salus keeps one value per observation; a panel of components has none).
            self.vital(v, t, &codes::SYSTOLIC, s);
            self.vital(v, t, &codes::DIASTOLIC, dia);
        }
        let hr = if child {
            (130 - age * 3) + self.rng.between(-10, 10)
        } else {
            self.heart_rate + self.rng.between(-5, 5) + if fever { 14 } else { 0 }
        };
        self.vital(v, t, &codes::HEART_RATE, hr);
        if matches!(set, VitalSet::FollowUp) {
            return;
        }
        let rr = if child {
            (34 - age).max(16) + self.rng.between(-2, 2)
        } else {
            16 + self.rng.between(-2, 2) + if pneumonia { 6 } else { 0 }
        };
        self.vital(v, t, &codes::RESPIRATORY_RATE, rr);
        let temp = if fever {
            self.rng.normal(384, 4, 375, 401)
        } else {
            self.rng.normal(368, 2, 362, 374)
        };
        self.vital(v, t, &codes::TEMPERATURE, temp);
        let spo2 = if pneumonia {
            self.rng.between(88, 94)
        } else {
            self.rng.between(95, 100)
        };
        self.vital(v, t, &codes::OXYGEN_SATURATION, spo2);
        if age >= 8 && matches!(set, VitalSet::Acute(_) | VitalSet::Full) {
            let pain = match set {
                VitalSet::Acute(_) => self.rng.between(3, 8),
                _ => self.rng.between(0, 2),
            };
            self.vital(v, t, &codes::PAIN, pain);
        }
    }

    /// A laboratory panel: each test an Observation, and the DiagnosticReport of them.
    fn panel(&mut self, v: &Visit, t: NaiveDateTime, panel: &Panel) {
        let d = t.date();
        let collected = t + Duration::minutes(10);
        let issued =
            (collected + Duration::hours(self.rng.between(2, 30))).min(at(self.as_of, 23, 59));
        let mut results = Vec::with_capacity(panel.tests.len());
        for lab in panel.tests {
            let x = self.lab_value(lab, d);
            let interpretation = if x < lab.low {
                ("L", "Low")
            } else if x > lab.high {
                ("H", "High")
            } else {
                ("N", "Normal")
            };
            let m = &lab.measure;
            let mut range = Map::new();
            if lab.low > 0 {
                range.insert("low".into(), quantity(m, lab.low));
            }
            range.insert("high".into(), quantity(m, lab.high));
            let id = self.observation(
                v,
                collected,
                issued,
                ("laboratory", "Laboratory"),
                &m.code,
                json!({
                    "valueQuantity": quantity(m, x),
                    "interpretation": [{ "coding": [{
                        "system": codes::INTERPRETATION,
                        "code": interpretation.0,
                        "display": interpretation.1,
                    }] }],
                    "referenceRange": [Value::Object(range)],
                }),
            );
            results.push(reference(id));
        }
        let id = self.rng.uuid();
        let r = json!({
            "resourceType": "DiagnosticReport",
            "status": "final",
            "category": [{ "coding": [{
                "system": codes::DIAGNOSTIC_SERVICE, "code": "LAB", "display": "Laboratory",
            }] }],
            "code": concept(&panel.code),
            "subject": reference(self.patient),
            "encounter": reference(v.id),
            "effectiveDateTime": date_time(collected),
            "issued": instant(issued),
            "result": results,
        });
        self.push(id, "DiagnosticReport", r);
    }

    /// A result of `lab` for this patient on `d`, in the lab's scaled units: healthy,
    /// or shifted by the conditions that move it.
    fn lab_value(&mut self, lab: &Lab, d: NaiveDate) -> i64 {
        let diabetic = self.has(&codes::DIABETES, d);
        let prediabetic = self.has(&codes::PREDIABETES, d);
        let (mean, sd) = match lab.measure.code.code {
            "4548-4" if diabetic => (74, 9),
            "4548-4" if prediabetic => (60, 2),
            "2339-0" if diabetic => (150, 30),
            "2339-0" if prediabetic => (108, 8),
            "2160-0" if self.has(&codes::CKD_STAGE_3, d) => (180, 30),
            "2093-3" | "18262-6" if self.has(&codes::HYPERLIPIDEMIA, d) => (lab.mean + 50, lab.sd),
            _ => (lab.mean, lab.sd),
        };
        self.rng
            .normal(mean, sd, (mean - 4 * sd).max(1), mean + 4 * sd)
    }

    fn vaccines(&mut self, v: &Visit, t: NaiveDateTime) {
        let d = t.date();
        let b = self.person.birth_date;
        let months = i64::from(d.year() - b.year()) * 12 + i64::from(d.month())
            - i64::from(b.month())
            - i64::from(d.day() < b.day());
        let months = months.max(0);
        let age = months / 12;
        let mut given: Vec<Code> = Vec::new();
        if age < 18 {
            for (vaccine, doses) in codes::CHILDHOOD_VACCINES {
                for m in *doses {
                    if *m > self.last_vaccine_month && *m <= months {
                        given.push(*vaccine);
                        break;
                    }
                }
            }
            self.last_vaccine_month = months;
        } else {
            let (zoster, pneumococcal, last_td) = self.adult_vaccines;
            if last_td.is_none_or(|l| (d - l).num_days() > 3650) && self.rng.chance(150) {
                given.push(codes::TD);
                self.adult_vaccines.2 = Some(d);
            }
            if age >= 60 && !zoster && self.rng.chance(400) {
                given.push(codes::ZOSTER);
                self.adult_vaccines.0 = true;
            }
            if age >= 65 && !pneumococcal && self.rng.chance(500) {
                given.push(codes::PNEUMOCOCCAL_23);
                self.adult_vaccines.1 = true;
            }
        }
        if months >= 6 && (d.month() >= 9 || d.month() == 1) && self.rng.chance(650) {
            given.push(codes::INFLUENZA);
        }
        for vaccine in given {
            let id = self.rng.uuid();
            let lot = format!(
                "{}{:05}",
                char::from(b'A' + self.rng.below(26) as u8),
                self.rng.below(100_000)
            );
            let r = json!({
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": concept(&vaccine),
                "patient": reference(self.patient),
                "encounter": reference(v.id),
                "occurrenceDateTime": date_time(t),
                "primarySource": true,
                "lotNumber": lot,
            });
            self.push(id, "Immunization", r);
        }
    }
}

/// Which vital signs a visit takes.
#[derive(Clone, Copy)]
enum VitalSet {
    Full,
    Problem,
    FollowUp,
    Home,
    Acute(&'static codes::Acute),
}

/// An encounter under way: what its claim needs.
struct Visit {
    id: Uuid,
    class: Code,
    kind: Code,
    start: NaiveDateTime,
    end: NaiveDateTime,
    procedures: Vec<Code>,
}
