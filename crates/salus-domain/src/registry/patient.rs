//! The Patient aggregate (DESIGN.md §7): identifiers, demographics kept to what care needs,
//! contact details, the lifecycle `registered → active → suspended → retired`, vital status,
//! and the persona profile and shard it belongs to.

use super::values::{Address, E164Phone, Email, Gender, HumanName, Identifier};
use crate::service::Projected;
use chrono::NaiveDate;
use salus_kernel::text::fold;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatientStatus {
    Registered,
    Active,
    Suspended,
    Retired,
}

impl PatientStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            PatientStatus::Registered => "registered",
            PatientStatus::Active => "active",
            PatientStatus::Suspended => "suspended",
            PatientStatus::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registered" => Some(Self::Registered),
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

/// The lifecycle actions and the transition table: (action, allowed from, to).
pub const TRANSITIONS: &[(&str, &[PatientStatus], PatientStatus)] = &[
    (
        "activate",
        &[PatientStatus::Registered],
        PatientStatus::Active,
    ),
    (
        "suspend",
        &[PatientStatus::Active],
        PatientStatus::Suspended,
    ),
    (
        "reactivate",
        &[PatientStatus::Suspended],
        PatientStatus::Active,
    ),
    (
        "retire",
        &[
            PatientStatus::Registered,
            PatientStatus::Active,
            PatientStatus::Suspended,
        ],
        PatientStatus::Retired,
    ),
];

/// The actions `POST /patients/{id}/{action}` accepts.
pub const ACTIONS: &[&str] = &[
    "activate",
    "suspend",
    "reactivate",
    "retire",
    "record-death",
    "merge",
    "unmerge",
];

/// What a client sends to register or (after a merge patch) update a patient. Unknown
/// fields are refused so that a typo is an error, not silently dropped data.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientInput {
    #[serde(default)]
    pub identifiers: Vec<IdentifierInput>,
    #[serde(default)]
    pub name: Vec<NameInput>,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub persona_profile_id: Option<Uuid>,
    #[serde(default)]
    pub shard_id: Option<Uuid>,
    /// FHIR elements the patient's fields do not hold (extensions, `communication`,
    /// `maritalStatus`, what else an identifier or name says, …), kept as the FHIR API
    /// received them and given back on its reads: a JSON object, at most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifierInput {
    pub system: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameInput {
    pub family: String,
    #[serde(default)]
    pub given: Vec<String>,
}

/// Demographics and contact details, every field valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PatientDetails {
    pub identifiers: Vec<Identifier>,
    pub name: Vec<HumanName>,
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
    #[serde(default)]
    pub gender: Option<Gender>,
    #[serde(default)]
    pub phones: Vec<E164Phone>,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub persona_profile_id: Option<Uuid>,
    #[serde(default)]
    pub shard_id: Option<Uuid>,
    /// See [`PatientInput::fhir_elements`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

pub fn parse_date(field: &str, s: &str) -> Result<NaiveDate, DomainError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        DomainError::invalid(
            field,
            format!("{field} '{s}' is not a date like 1980-04-23"),
        )
    })
}

impl PatientDetails {
    /// Parse client input; `today` bounds dates that cannot lie in the future.
    pub fn parse(input: PatientInput, today: NaiveDate) -> Result<Self, DomainError> {
        let mut identifiers = Vec::with_capacity(input.identifiers.len());
        for i in &input.identifiers {
            let id = Identifier::parse(&i.system, &i.value)?;
            if identifiers
                .iter()
                .any(|x: &Identifier| x.system == id.system)
            {
                return Err(DomainError::invalid(
                    "identifiers",
                    format!(
                        "two identifiers in system '{}': a patient has one value per system",
                        id.system
                    ),
                ));
            }
            identifiers.push(id);
        }
        if input.name.is_empty() {
            return Err(DomainError::invalid(
                "name",
                "a patient needs at least one name with a family name",
            ));
        }
        let name = input
            .name
            .iter()
            .map(|n| HumanName::parse(&n.family, &n.given))
            .collect::<Result<Vec<_>, _>>()?;
        let birth_date = input
            .birth_date
            .as_deref()
            .map(|d| parse_date("birth_date", d))
            .transpose()?;
        if let Some(b) = birth_date
            && b > today
        {
            return Err(DomainError::invalid(
                "birth_date",
                "birth_date is in the future",
            ));
        }
        let gender = input.gender.as_deref().map(Gender::parse).transpose()?;
        let phones = input
            .phones
            .iter()
            .map(|p| E164Phone::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let email = input.email.as_deref().map(Email::parse).transpose()?;
        let address = input.address.map(Address::checked).transpose()?;
        Ok(Self {
            identifiers,
            name,
            birth_date,
            gender,
            phones,
            email,
            address,
            persona_profile_id: input.persona_profile_id,
            shard_id: input.shard_id,
            fhir_elements: crate::clinical::fhir_elements(input.fhir_elements.as_ref())?,
        })
    }

    /// Back to the input form (for JSON merge patch).
    pub fn to_input_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deceased {
    pub date: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Patient {
    pub id: Uuid,
    #[serde(flatten)]
    pub details: PatientDetails,
    pub status: PatientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deceased: Option<Deceased>,
    /// The surviving record this one was merged into (requirements/003 `mergedInto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub enum PatientCommand {
    Register {
        id: Uuid,
        details: PatientDetails,
    },
    Update {
        details: PatientDetails,
    },
    /// A lifecycle action from [`TRANSITIONS`].
    Transition {
        action: String,
        reason: Option<String>,
    },
    RecordDeath {
        date: NaiveDate,
        today: NaiveDate,
    },
    /// Merge this record into `survivor`; `survivor_ok` says the survivor exists in the
    /// tenant and is not itself merged (gathered by the service).
    Merge {
        survivor: Uuid,
        survivor_ok: bool,
    },
    Unmerge,
    /// A whole record as another system states it (a FHIR create or update): register or
    /// update the details, then bring the lifecycle to what it says, all in one write (each
    /// step its own event and version). `active: Some(true)` activates or reactivates,
    /// `Some(false)` suspends an active patient; `death` records a date of death. A death
    /// already recorded can be neither withdrawn (`death: None`) nor moved.
    Replace {
        id: Uuid,
        details: PatientDetails,
        active: Option<bool>,
        death: Option<NaiveDate>,
        today: NaiveDate,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    pub into: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub id: Uuid,
    #[serde(flatten)]
    pub details: PatientDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub from: PatientStatus,
    pub to: PatientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

domain_events! {
    pub enum PatientEvent {
        Registered(Registered) = "patient.registered",
        Updated(PatientDetails) = "patient.updated",
        Activated(StatusChanged) = "patient.activated",
        Suspended(StatusChanged) = "patient.suspended",
        Reactivated(StatusChanged) = "patient.reactivated",
        Retired(StatusChanged) = "patient.retired",
        DeathRecorded(Deceased) = "patient.death_recorded",
        Merged(Merged) = "patient.merged",
        Unmerged(Merged) = "patient.unmerged",
    }
}

fn transition_event(action: &str, change: StatusChanged) -> Option<PatientEvent> {
    Some(match action {
        "activate" => PatientEvent::Activated(change),
        "suspend" => PatientEvent::Suspended(change),
        "reactivate" => PatientEvent::Reactivated(change),
        "retire" => PatientEvent::Retired(change),
        _ => return None,
    })
}

impl Aggregate for Patient {
    const STREAM_TYPE: &'static str = "patient";
    type Command = PatientCommand;
    type Event = PatientEvent;

    fn decide(
        state: Option<&Self>,
        command: &PatientCommand,
    ) -> Result<Vec<PatientEvent>, DomainError> {
        match (state, command) {
            (None, PatientCommand::Register { id, details }) => {
                Ok(vec![PatientEvent::Registered(Registered {
                    id: *id,
                    details: details.clone(),
                })])
            }
            (Some(_), PatientCommand::Register { .. }) => {
                Err(DomainError::Rule("patient is already registered".into()))
            }
            (
                state,
                PatientCommand::Replace {
                    id,
                    details,
                    active,
                    death,
                    today,
                },
            ) => {
                let mut events = Vec::new();
                let mut cur: Option<Patient> = state.cloned();
                let mut step = |cur: &mut Option<Patient>, c: PatientCommand| {
                    let evs = Self::decide(cur.as_ref(), &c)?;
                    for e in &evs {
                        *cur = Self::evolve(cur.take(), e);
                    }
                    events.extend(evs);
                    Ok::<(), DomainError>(())
                };
                let first = match state {
                    None => PatientCommand::Register {
                        id: *id,
                        details: details.clone(),
                    },
                    Some(_) => PatientCommand::Update {
                        details: details.clone(),
                    },
                };
                step(&mut cur, first)?;
                let status = cur.as_ref().map(|p| p.status);
                let action = match (*active, status) {
                    (Some(true), Some(PatientStatus::Registered | PatientStatus::Retired)) => {
                        Some("activate")
                    }
                    (Some(true), Some(PatientStatus::Suspended)) => Some("reactivate"),
                    (Some(false), Some(PatientStatus::Active)) => Some("suspend"),
                    _ => None,
                };
                if let Some(action) = action {
                    step(
                        &mut cur,
                        PatientCommand::Transition {
                            action: action.to_owned(),
                            reason: None,
                        },
                    )?;
                }
                let recorded = cur
                    .as_ref()
                    .and_then(|p| p.deceased.as_ref().map(|d| d.date));
                match (recorded, death) {
                    (None, Some(date)) => step(
                        &mut cur,
                        PatientCommand::RecordDeath {
                            date: *date,
                            today: *today,
                        },
                    )?,
                    (Some(was), Some(date)) if was != *date => {
                        return Err(DomainError::invalid(
                            "date",
                            format!("the death is recorded on {was}; its date cannot be changed"),
                        ));
                    }
                    (Some(_), None) => {
                        return Err(DomainError::invalid(
                            "date",
                            "the patient's death is recorded; it cannot be withdrawn",
                        ));
                    }
                    _ => {}
                }
                Ok(events)
            }
            (None, _) => Err(DomainError::NotFound("patient".into())),
            (
                Some(p),
                PatientCommand::Merge {
                    survivor,
                    survivor_ok,
                },
            ) => {
                if let Some(into) = p.merged_into {
                    return Err(DomainError::Rule(format!(
                        "the patient is already merged into {into}"
                    )));
                }
                if *survivor == p.id {
                    return Err(DomainError::invalid(
                        "into",
                        "a patient cannot be merged into itself",
                    ));
                }
                if !survivor_ok {
                    return Err(DomainError::invalid(
                        "into",
                        format!(
                            "patient {survivor} does not exist in this tenant or is itself merged"
                        ),
                    ));
                }
                Ok(vec![PatientEvent::Merged(Merged { into: *survivor })])
            }
            (Some(p), PatientCommand::Unmerge) => match p.merged_into {
                Some(into) => Ok(vec![PatientEvent::Unmerged(Merged { into })]),
                None => Err(DomainError::Rule("the patient is not merged".into())),
            },
            (Some(p), _) if p.merged_into.is_some() => Err(DomainError::Rule(format!(
                "the patient is merged into {}; change the surviving record, or unmerge first",
                p.merged_into.unwrap_or_default()
            ))),
            (Some(p), PatientCommand::Update { details }) => {
                if p.status == PatientStatus::Retired {
                    return Err(DomainError::Rule(
                        "a retired patient's record is closed; it cannot be updated".into(),
                    ));
                }
                if *details == p.details {
                    return Ok(vec![]);
                }
                Ok(vec![PatientEvent::Updated(details.clone())])
            }
            (Some(p), PatientCommand::Transition { action, reason }) => {
                let Some((_, from, to)) = TRANSITIONS.iter().find(|(a, _, _)| a == action) else {
                    return Err(DomainError::invalid(
                        "action",
                        format!(
                            "unknown action '{action}'; actions are: {}",
                            ACTIONS.join(", ")
                        ),
                    ));
                };
                if !from.contains(&p.status) {
                    return Err(DomainError::IllegalTransition {
                        action: action.clone(),
                        from: p.status.as_str().into(),
                        allowed: from
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                if matches!(action.as_str(), "activate" | "reactivate") && p.deceased.is_some() {
                    return Err(DomainError::Rule(
                        "the patient is recorded as deceased".into(),
                    ));
                }
                let change = StatusChanged {
                    from: p.status,
                    to: *to,
                    reason: reason.clone(),
                };
                Ok(transition_event(action, change).into_iter().collect())
            }
            (Some(p), PatientCommand::RecordDeath { date, today }) => {
                if p.deceased.is_some() {
                    return Err(DomainError::Rule("death is already recorded".into()));
                }
                if date > today {
                    return Err(DomainError::invalid(
                        "date",
                        "date of death is in the future",
                    ));
                }
                if let Some(b) = p.details.birth_date
                    && *date < b
                {
                    return Err(DomainError::invalid(
                        "date",
                        "date of death is before the birth date",
                    ));
                }
                Ok(vec![PatientEvent::DeathRecorded(Deceased { date: *date })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &PatientEvent) -> Option<Self> {
        match (state, event) {
            (_, PatientEvent::Registered(r)) => Some(Patient {
                id: r.id,
                details: r.details.clone(),
                status: PatientStatus::Registered,
                status_reason: None,
                deceased: None,
                merged_into: None,
            }),
            (Some(mut p), PatientEvent::Updated(d)) => {
                p.details = d.clone();
                Some(p)
            }
            (
                Some(mut p),
                PatientEvent::Activated(c)
                | PatientEvent::Suspended(c)
                | PatientEvent::Reactivated(c)
                | PatientEvent::Retired(c),
            ) => {
                p.status = c.to;
                p.status_reason = c.reason.clone();
                Some(p)
            }
            (Some(mut p), PatientEvent::DeathRecorded(d)) => {
                p.deceased = Some(d.clone());
                Some(p)
            }
            (Some(mut p), PatientEvent::Merged(m)) => {
                p.merged_into = Some(m.into);
                Some(p)
            }
            (Some(mut p), PatientEvent::Unmerged(_)) => {
                p.merged_into = None;
                Some(p)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<PatientEvent, serde_json::Error> {
        PatientEvent::decode(event_type, payload)
    }
}

/// Unique-key scope of patient identifiers: one patient per (tenant, system, value).
pub const IDENTIFIER_SCOPE: &str = "patient.identifier";

impl Projected for Patient {
    const RESOURCE_TYPE: &'static str = "patient";

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = Vec::new();
        for i in &self.details.identifiers {
            rows.push(SearchRow::token("identifier", &i.system, i.value.clone()));
        }
        for n in &self.details.name {
            let mut names: Vec<String> = vec![fold(&n.family), fold(&n.text())];
            names.extend(n.given.iter().map(|g| fold(g)));
            names.sort();
            names.dedup();
            for v in names {
                rows.push(SearchRow::new("name", v));
            }
            // FHIR's `family` and `given` search on the parts alone.
            rows.push(SearchRow::new("family", fold(&n.family)));
            for g in &n.given {
                rows.push(SearchRow::new("given", fold(g)));
            }
        }
        if let Some(b) = self.details.birth_date {
            rows.push(SearchRow::new(
                "birth_date",
                b.format("%Y-%m-%d").to_string(),
            ));
        }
        if let Some(g) = self.details.gender {
            rows.push(SearchRow::new("gender", g.as_str()));
        }
        rows.push(SearchRow::new("status", self.status.as_str()));
        for p in &self.details.phones {
            rows.push(SearchRow::new("phone", p.as_str()));
        }
        if let Some(e) = &self.details.email {
            rows.push(SearchRow::new("email", e.as_str().to_lowercase()));
        }
        // Lets the records merged into a survivor be found from it (`merge_group`).
        if let Some(into) = self.merged_into {
            rows.push(SearchRow::new("merged_into", into.to_string()));
        }
        // Every R4 Patient search parameter, over the FHIR rendering (`Patient.<code>`).
        rows.extend(crate::clinical::fhir_view::rows(Self::RESOURCE_TYPE, self));
        rows
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        self.details
            .identifiers
            .iter()
            .map(|i| UniqueKey::new(IDENTIFIER_SCOPE, format!("{}|{}", i.system, i.value)))
            .collect()
    }
}

/// Whether `survivor` can take a merge: it exists in the tenant and is not merged itself
/// (so merges never form a cycle).
pub async fn can_survive(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    survivor: Uuid,
) -> Result<bool, crate::service::ServiceError> {
    Ok(services
        .load::<Patient>(ctx, survivor)
        .await?
        .is_some_and(|p| p.state.merged_into.is_none()))
}

/// Merges followed from one record to its survivor before giving up (merges never form a
/// cycle; this bounds the walk even over damaged data).
const MAX_MERGE_HOPS: usize = 64;
/// Records one merge group may hold before the walk stops.
const MAX_MERGE_GROUP: usize = 10_000;

/// The patient records that stand for the same person as `id`, following merges: the
/// survivor at the end of `id`'s `merged_into` chain first, then every record merged into it
/// (directly or through another merged record). A record that was never merged and has
/// nothing merged into it is a group of one; so is an id that names no patient. Unmerging
/// takes a record (and what was merged into it) out of the group again.
pub async fn merge_group(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    id: Uuid,
) -> Result<Vec<Uuid>, crate::service::ServiceError> {
    let mut survivor = id;
    let mut walked = vec![id];
    for _ in 0..MAX_MERGE_HOPS {
        let Some(p) = services.load::<Patient>(ctx, survivor).await? else {
            break;
        };
        match p.state.merged_into {
            Some(into) if !walked.contains(&into) => {
                walked.push(into);
                survivor = into;
            }
            _ => break,
        }
    }
    let mut group = vec![survivor];
    let mut seen: std::collections::HashSet<Uuid> = group.iter().copied().collect();
    let mut next = 0;
    while next < group.len() && group.len() < MAX_MERGE_GROUP {
        let into = group[next];
        next += 1;
        let mut after = None;
        loop {
            let query = salus_store::SearchQuery {
                resource_type: Patient::RESOURCE_TYPE.into(),
                filters: vec![salus_store::Filter {
                    also: Vec::new(),
                    param: "merged_into".into(),
                    system: None,
                    op: salus_store::FilterOp::Eq,
                    value: into.to_string(),
                }],
                after,
                limit: 200,
                newest_first: false,
                order_by: None,
            };
            let rows = services.store.search(ctx, &query).await?;
            let full = rows.len() == 200;
            after = rows.last().map(|r| r.id);
            for r in rows {
                if seen.insert(r.id) {
                    group.push(r.id);
                }
            }
            if !full || group.len() >= MAX_MERGE_GROUP {
                break;
            }
        }
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use salus_kernel::aggregate::DomainEvent;

    fn details() -> PatientDetails {
        let input: PatientInput = serde_json::from_value(serde_json::json!({
            "identifiers": [{"system": "urn:mrn", "value": "1"}],
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "birth_date": "1815-12-10"
        }))
        .unwrap();
        PatientDetails::parse(input, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()).unwrap()
    }

    fn registered() -> Patient {
        let evs = Patient::decide(
            None,
            &PatientCommand::Register {
                id: Uuid::nil(),
                details: details(),
            },
        )
        .unwrap();
        evs.iter().fold(None, Patient::evolve).unwrap()
    }

    fn act(p: &Patient, action: &str) -> Result<Patient, DomainError> {
        let evs = Patient::decide(
            Some(p),
            &PatientCommand::Transition {
                action: action.into(),
                reason: None,
            },
        )?;
        Ok(evs.iter().fold(Some(p.clone()), Patient::evolve).unwrap())
    }

    #[test]
    fn a_replace_is_one_write_of_each_step_or_nothing() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let replace = |active, death| PatientCommand::Replace {
            id: Uuid::nil(),
            details: details(),
            active,
            death,
            today,
        };
        let death = NaiveDate::from_ymd_opt(1852, 11, 27);
        let evs = Patient::decide(None, &replace(Some(true), death)).unwrap();
        let types: Vec<&str> = evs.iter().map(|e| e.event_type()).collect();
        assert_eq!(
            types,
            [
                "patient.registered",
                "patient.activated",
                "patient.death_recorded"
            ]
        );
        let p = evs.iter().fold(None, Patient::evolve).unwrap();
        assert_eq!(p.status, PatientStatus::Active);
        // Nothing to change: no event. A death before the birth: nothing at all.
        assert!(
            Patient::decide(Some(&p), &replace(Some(true), death))
                .unwrap()
                .is_empty()
        );
        assert!(
            Patient::decide(None, &replace(None, NaiveDate::from_ymd_opt(1800, 1, 1))).is_err()
        );
        // A recorded death is neither withdrawn nor moved; suspending an active patient works.
        assert!(Patient::decide(Some(&p), &replace(Some(true), None)).is_err());
        assert!(
            Patient::decide(
                Some(&p),
                &replace(Some(true), NaiveDate::from_ymd_opt(1852, 1, 1))
            )
            .is_err()
        );
        let evs = Patient::decide(Some(&p), &replace(Some(false), death)).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event_type(), "patient.suspended");
    }

    #[test]
    fn illegal_transition_names_the_allowed_states() {
        let p = registered();
        let err = act(&p, "suspend").unwrap_err();
        assert_eq!(
            err,
            DomainError::IllegalTransition {
                action: "suspend".into(),
                from: "registered".into(),
                allowed: "active".into()
            }
        );
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let p = registered();
        let evs = Patient::decide(
            Some(&p),
            &PatientCommand::Transition {
                action: "activate".into(),
                reason: Some("ok".into()),
            },
        )
        .unwrap();
        for e in evs {
            let ne = e.to_new_event().unwrap();
            assert_eq!(
                Patient::decode_event(&ne.event_type, &ne.payload).unwrap(),
                e
            );
        }
    }

    #[test]
    fn deceased_patient_cannot_be_reactivated() {
        let p = act(&act(&registered(), "activate").unwrap(), "suspend").unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let evs = Patient::decide(
            Some(&p),
            &PatientCommand::RecordDeath { date: today, today },
        )
        .unwrap();
        let dead = evs.iter().fold(Some(p), Patient::evolve).unwrap();
        assert!(matches!(
            act(&dead, "reactivate"),
            Err(DomainError::Rule(_))
        ));
    }

    proptest! {
        /// Whatever sequence of actions is attempted, the state only ever moves along the
        /// transition table, and retired is terminal.
        #[test]
        fn lifecycle_only_moves_along_the_table(actions in proptest::collection::vec(0usize..5, 0..20)) {
            let names = ["activate", "suspend", "reactivate", "retire", "bogus"];
            let mut p = registered();
            for a in actions {
                let before = p.status;
                match act(&p, names[a]) {
                    Ok(next) => {
                        let (_, from, to) = TRANSITIONS.iter().find(|t| t.0 == names[a]).unwrap();
                        prop_assert!(from.contains(&before));
                        prop_assert_eq!(next.status, *to);
                        p = next;
                    }
                    Err(_) => prop_assert!(
                        before == PatientStatus::Retired || names[a] == "bogus" ||
                        !TRANSITIONS.iter().find(|t| t.0 == names[a]).unwrap().1.contains(&before)
                    ),
                }
            }
        }
    }
}
