//! Departments and locations: where care happens. A department has a unique code; a
//! location (ward, room, theatre, clinic, …) belongs to a department. Both are
//! `active ⇄ inactive`, never deleted.
//!
//! Both keep beside them the FHIR elements Salus does not model (`fhir_elements`: an
//! Organization's type, telecom, partOf, a Location's address, position, …) as a FHIR
//! client sent them. A revision ([`PlaceCommand::Revise`], what a FHIR update becomes)
//! changes the name (a department's code, a location's kind), the activity (through the
//! same table as the actions) and those kept elements in one event; a location's
//! department never changes.

use crate::service::Projected;
use salus_kernel::text::fold;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const LOCATION_KINDS: &[&str] = &["ward", "room", "bed", "theatre", "clinic", "other"];
pub const ACTIONS: &[&str] = &["deactivate", "reactivate"];
pub const DEPARTMENT_CODE_SCOPE: &str = "department.code";

fn text(field: &str, s: &str, max: usize) -> Result<String, DomainError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("{field} must be 1-{max} printable characters"),
        ));
    }
    Ok(t.to_owned())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub active: bool,
}

fn toggle(active: bool, action: &str) -> Result<Activity, DomainError> {
    let (want_from, to) = match action {
        "deactivate" => (true, false),
        "reactivate" => (false, true),
        other => {
            return Err(DomainError::invalid(
                "action",
                format!(
                    "unknown action '{other}'; actions are: {}",
                    ACTIONS.join(", ")
                ),
            ));
        }
    };
    if active != want_from {
        let name = |a: bool| if a { "active" } else { "inactive" };
        return Err(DomainError::IllegalTransition {
            action: action.into(),
            from: name(active).into(),
            allowed: name(want_from).into(),
        });
    }
    Ok(Activity { active: to })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Department {
    pub id: Uuid,
    /// Short unique code (e.g. `CARD`).
    pub code: String,
    pub name: String,
    pub active: bool,
    /// The FHIR elements of the Organization that Salus does not model, kept as a FHIR
    /// client sent them (since schema version 2 of `department.created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartmentInput {
    pub code: String,
    pub name: String,
    /// FHIR elements Salus does not model, kept with the department (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
    /// Created active unless `false` (a FHIR Organization sent with `active: false`).
    #[serde(default)]
    pub active: Option<bool>,
}

/// What a revision of a department or a location changes; `None`: unchanged (for
/// `fhir_elements`, an empty object: none any more). `code` is a department's, `kind` a
/// location's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlaceRevision {
    pub code: Option<String>,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub active: Option<bool>,
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum PlaceCommand<I> {
    Create {
        id: Uuid,
        input: I,
        facts: bool,
    },
    Toggle(String),
    /// Several changes as one event; no change at all is no event.
    Revise(PlaceRevision),
}

/// A department's or a location's revisable parts after a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceRevised {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub active: bool,
    /// The kept FHIR elements after the revision (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

domain_events! {
    pub enum DepartmentEvent {
        Created(Department) = "department.created" @ 2,
        Toggled(Activity) = "department.status_set",
        Revised(PlaceRevised) = "department.revised",
    }
}

fn department_code(s: &str) -> Result<String, DomainError> {
    let code = text("code", s, 32)?.to_ascii_uppercase();
    if !code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(DomainError::invalid(
            "code",
            "code is letters, digits, '-' or '_'",
        ));
    }
    Ok(code)
}

fn location_kind(s: &str) -> Result<String, DomainError> {
    let kind = s.trim();
    if !LOCATION_KINDS.contains(&kind) {
        return Err(DomainError::invalid(
            "kind",
            format!("kind '{kind}' is not one of {}", LOCATION_KINDS.join(", ")),
        ));
    }
    Ok(kind.to_owned())
}

/// The revised parts of a place now `now`; `None`: the revision changes nothing. An
/// activity change is checked against the same table as the actions.
fn revise_place(now: PlaceRevised, r: &PlaceRevision) -> Result<Option<PlaceRevised>, DomainError> {
    let next = PlaceRevised {
        code: match (&r.code, &now.code) {
            (Some(c), Some(_)) => Some(department_code(c)?),
            (Some(_), None) => {
                return Err(DomainError::invalid("code", "a location has no code"));
            }
            (None, c) => c.clone(),
        },
        name: match &r.name {
            Some(n) => text("name", n, 200)?,
            None => now.name.clone(),
        },
        kind: match (&r.kind, &now.kind) {
            (Some(k), Some(_)) => Some(location_kind(k)?),
            (Some(_), None) => {
                return Err(DomainError::invalid("kind", "a department has no kind"));
            }
            (None, k) => k.clone(),
        },
        active: r.active.unwrap_or(now.active),
        fhir_elements: match &r.fhir_elements {
            None => now.fhir_elements.clone(),
            Some(f) => crate::clinical::fhir_elements(Some(f))?,
        },
    };
    if next == now {
        return Ok(None);
    }
    if next.active != now.active {
        toggle(
            now.active,
            if next.active {
                "reactivate"
            } else {
                "deactivate"
            },
        )?;
    }
    Ok(Some(next))
}

/// Version 2 of a `*.created` event added the optional `fhir_elements`: a version 1
/// payload is the same payload without it.
fn upcast_created(
    created: &str,
    event_type: &str,
    from: i32,
    payload: Value,
) -> Result<Value, String> {
    if from == 1 && event_type == created {
        Ok(payload)
    } else {
        Err(format!(
            "no upcaster from schema version {from} of '{event_type}'"
        ))
    }
}

impl Aggregate for Department {
    const STREAM_TYPE: &'static str = "department";
    type Command = PlaceCommand<DepartmentInput>;
    type Event = DepartmentEvent;

    fn decide(
        state: Option<&Self>,
        command: &Self::Command,
    ) -> Result<Vec<DepartmentEvent>, DomainError> {
        match (state, command) {
            (None, PlaceCommand::Create { id, input, .. }) => {
                Ok(vec![DepartmentEvent::Created(Department {
                    id: *id,
                    code: department_code(&input.code)?,
                    name: text("name", &input.name, 200)?,
                    active: input.active != Some(false),
                    fhir_elements: crate::clinical::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), PlaceCommand::Create { .. }) => {
                Err(DomainError::Rule("department already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("department".into())),
            (Some(d), PlaceCommand::Toggle(action)) => {
                Ok(vec![DepartmentEvent::Toggled(toggle(d.active, action)?)])
            }
            (Some(d), PlaceCommand::Revise(r)) => {
                let now = PlaceRevised {
                    code: Some(d.code.clone()),
                    name: d.name.clone(),
                    kind: None,
                    active: d.active,
                    fhir_elements: d.fhir_elements.clone(),
                };
                Ok(revise_place(now, r)?
                    .map(DepartmentEvent::Revised)
                    .into_iter()
                    .collect())
            }
        }
    }

    fn evolve(state: Option<Self>, event: &DepartmentEvent) -> Option<Self> {
        match (state, event) {
            (_, DepartmentEvent::Created(d)) => Some(d.clone()),
            (Some(mut d), DepartmentEvent::Toggled(a)) => {
                d.active = a.active;
                Some(d)
            }
            (Some(mut d), DepartmentEvent::Revised(r)) => {
                if let Some(c) = &r.code {
                    d.code = c.clone();
                }
                d.name = r.name.clone();
                d.active = r.active;
                d.fhir_elements = r.fhir_elements.clone();
                Some(d)
            }
            (None, _) => None,
        }
    }

    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        upcast_created("department.created", event_type, from, payload)
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<DepartmentEvent, serde_json::Error> {
        DepartmentEvent::decode(event_type, payload)
    }
}

impl Projected for Department {
    const RESOURCE_TYPE: &'static str = "department";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("code", self.code.clone()),
            SearchRow::new("name", fold(&self.name)),
            SearchRow::new("active", if self.active { "true" } else { "false" }),
        ]
        .into_iter()
        .chain(crate::clinical::fhir_view::rows(Self::STREAM_TYPE, self))
        .collect()
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![UniqueKey::new(DEPARTMENT_CODE_SCOPE, self.code.clone())]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Location {
    pub id: Uuid,
    pub department_id: Uuid,
    pub name: String,
    /// ward | room | bed | theatre | clinic | other
    pub kind: String,
    pub active: bool,
    /// The FHIR elements of the Location that Salus does not model, kept as a FHIR client
    /// sent them (since schema version 2 of `location.created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationInput {
    pub department_id: Uuid,
    pub name: String,
    pub kind: String,
    /// FHIR elements Salus does not model, kept with the location (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
    /// Created active unless `false` (a FHIR Location sent with status `inactive`).
    #[serde(default)]
    pub active: Option<bool>,
}

domain_events! {
    pub enum LocationEvent {
        Created(Location) = "location.created" @ 2,
        Toggled(Activity) = "location.status_set",
        Revised(PlaceRevised) = "location.revised",
    }
}

impl Aggregate for Location {
    const STREAM_TYPE: &'static str = "location";
    /// `facts` of `Create`: the department exists and is active.
    type Command = PlaceCommand<LocationInput>;
    type Event = LocationEvent;

    fn decide(
        state: Option<&Self>,
        command: &Self::Command,
    ) -> Result<Vec<LocationEvent>, DomainError> {
        match (state, command) {
            (
                None,
                PlaceCommand::Create {
                    id,
                    input,
                    facts: department_active,
                },
            ) => {
                if !department_active {
                    return Err(DomainError::invalid(
                        "department_id",
                        format!(
                            "department {} does not exist in this tenant or is inactive",
                            input.department_id
                        ),
                    ));
                }
                Ok(vec![LocationEvent::Created(Location {
                    id: *id,
                    department_id: input.department_id,
                    name: text("name", &input.name, 200)?,
                    kind: location_kind(&input.kind)?,
                    active: input.active != Some(false),
                    fhir_elements: crate::clinical::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), PlaceCommand::Create { .. }) => {
                Err(DomainError::Rule("location already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("location".into())),
            (Some(l), PlaceCommand::Toggle(action)) => {
                Ok(vec![LocationEvent::Toggled(toggle(l.active, action)?)])
            }
            (Some(l), PlaceCommand::Revise(r)) => {
                let now = PlaceRevised {
                    code: None,
                    name: l.name.clone(),
                    kind: Some(l.kind.clone()),
                    active: l.active,
                    fhir_elements: l.fhir_elements.clone(),
                };
                Ok(revise_place(now, r)?
                    .map(LocationEvent::Revised)
                    .into_iter()
                    .collect())
            }
        }
    }

    fn evolve(state: Option<Self>, event: &LocationEvent) -> Option<Self> {
        match (state, event) {
            (_, LocationEvent::Created(l)) => Some(l.clone()),
            (Some(mut l), LocationEvent::Toggled(a)) => {
                l.active = a.active;
                Some(l)
            }
            (Some(mut l), LocationEvent::Revised(r)) => {
                if let Some(k) = &r.kind {
                    l.kind = k.clone();
                }
                l.name = r.name.clone();
                l.active = r.active;
                l.fhir_elements = r.fhir_elements.clone();
                Some(l)
            }
            (None, _) => None,
        }
    }

    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        upcast_created("location.created", event_type, from, payload)
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<LocationEvent, serde_json::Error> {
        LocationEvent::decode(event_type, payload)
    }
}

impl Projected for Location {
    const RESOURCE_TYPE: &'static str = "location";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("department", self.department_id.to_string()),
            SearchRow::new("kind", self.kind.clone()),
            SearchRow::new("name", fold(&self.name)),
            SearchRow::new("active", if self.active { "true" } else { "false" }),
        ]
        .into_iter()
        .chain(crate::clinical::fhir_view::rows(Self::STREAM_TYPE, self))
        .collect()
    }
}

/// Create a location in an active department.
pub async fn create_location(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: LocationInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Location>, crate::service::ServiceError> {
    let department_active = services
        .load::<Department>(ctx, input.department_id)
        .await?
        .is_some_and(|d| d.state.active);
    let id = Uuid::now_v7();
    services
        .create::<Location, _>(
            ctx,
            id,
            move |_, _| {
                Ok(PlaceCommand::Create {
                    id,
                    input,
                    facts: department_active,
                })
            },
            idempotency,
        )
        .await
}

/// Whether `department_id`, when given, names an active department of the tenant (true when
/// none is given): the fact encounters and medical records check before they are written.
pub async fn department_active(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    department_id: Option<Uuid>,
) -> Result<bool, crate::service::ServiceError> {
    match department_id {
        None => Ok(true),
        Some(id) => Ok(services
            .load::<Department>(ctx, id)
            .await?
            .is_some_and(|d| d.state.active)),
    }
}

/// The refusal for a department that is unknown or inactive, naming `field`.
pub fn unknown_department(field: &str, id: Uuid) -> DomainError {
    DomainError::invalid(
        field,
        format!("department {id} does not exist in this tenant or is inactive"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created() -> Location {
        let input: LocationInput = serde_json::from_value(json!({
            "department_id": Uuid::nil(), "name": "Ward 7", "kind": "ward",
            "fhir_elements": {"alias": ["Seven"]},
        }))
        .unwrap();
        let cmd = PlaceCommand::Create {
            id: Uuid::nil(),
            input,
            facts: true,
        };
        let e = Location::decide(None, &cmd).unwrap();
        Location::evolve(None, &e[0]).unwrap()
    }

    #[test]
    fn version_1_places_decode_without_kept_elements() {
        let mut l = created();
        l.fhir_elements = None;
        let payload = serde_json::to_value(&l).unwrap();
        let e = Location::decode_stored("location.created", 1, &payload).unwrap();
        assert_eq!(e, LocationEvent::Created(l));
        let d = json!({"id": Uuid::nil(), "code": "CARD", "name": "Cardiology", "active": true});
        assert!(Department::decode_stored("department.created", 1, &d).is_ok());
    }

    #[test]
    fn a_place_revision_is_one_event_checked_by_the_lifecycle() {
        let l = created();
        let same = PlaceRevision {
            name: Some("Ward 7".into()),
            active: Some(true),
            ..Default::default()
        };
        assert!(
            Location::decide(Some(&l), &PlaceCommand::Revise(same))
                .unwrap()
                .is_empty()
        );
        let change = PlaceRevision {
            kind: Some("room".into()),
            active: Some(false),
            fhir_elements: Some(json!({})),
            ..Default::default()
        };
        let e = Location::decide(Some(&l), &PlaceCommand::Revise(change)).unwrap();
        let after = Location::evolve(Some(l.clone()), &e[0]).unwrap();
        assert_eq!((after.kind.as_str(), after.active), ("room", false));
        assert_eq!(after.fhir_elements, None);
        for bad in [
            PlaceRevision {
                kind: Some("garage".into()),
                ..Default::default()
            },
            PlaceRevision {
                code: Some("X".into()),
                ..Default::default()
            },
        ] {
            assert!(Location::decide(Some(&l), &PlaceCommand::Revise(bad)).is_err());
        }
    }
}
