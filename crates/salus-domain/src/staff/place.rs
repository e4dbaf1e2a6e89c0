//! Departments and locations: where care happens. A department has a unique code; a
//! location (ward, room, theatre, clinic, …) belongs to a department. Both are
//! `active ⇄ inactive`, never deleted.

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
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartmentInput {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub enum PlaceCommand<I> {
    Create { id: Uuid, input: I, facts: bool },
    Toggle(String),
}

domain_events! {
    pub enum DepartmentEvent {
        Created(Department) = "department.created",
        Toggled(Activity) = "department.status_set",
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
                let code = text("code", &input.code, 32)?.to_ascii_uppercase();
                if !code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(DomainError::invalid(
                        "code",
                        "code is letters, digits, '-' or '_'",
                    ));
                }
                Ok(vec![DepartmentEvent::Created(Department {
                    id: *id,
                    code,
                    name: text("name", &input.name, 200)?,
                    active: true,
                })])
            }
            (Some(_), PlaceCommand::Create { .. }) => {
                Err(DomainError::Rule("department already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("department".into())),
            (Some(d), PlaceCommand::Toggle(action)) => {
                Ok(vec![DepartmentEvent::Toggled(toggle(d.active, action)?)])
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
            (None, _) => None,
        }
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
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationInput {
    pub department_id: Uuid,
    pub name: String,
    pub kind: String,
}

domain_events! {
    pub enum LocationEvent {
        Created(Location) = "location.created",
        Toggled(Activity) = "location.status_set",
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
                let kind = input.kind.trim();
                if !LOCATION_KINDS.contains(&kind) {
                    return Err(DomainError::invalid(
                        "kind",
                        format!("kind '{kind}' is not one of {}", LOCATION_KINDS.join(", ")),
                    ));
                }
                Ok(vec![LocationEvent::Created(Location {
                    id: *id,
                    department_id: input.department_id,
                    name: text("name", &input.name, 200)?,
                    kind: kind.to_owned(),
                    active: true,
                })])
            }
            (Some(_), PlaceCommand::Create { .. }) => {
                Err(DomainError::Rule("location already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("location".into())),
            (Some(l), PlaceCommand::Toggle(action)) => {
                Ok(vec![LocationEvent::Toggled(toggle(l.active, action)?)])
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
            (None, _) => None,
        }
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
