//! The Role aggregate: a role a tenant defines for itself, holding permissions from
//! [`super::PERMISSIONS`]. Its name is unique in the tenant and can never be a built-in
//! role's (those are fixed, see [`super::BUILTIN_ROLES`]). Changing a role's permissions
//! changes what every holder may do from the next request on.

use super::{Permission, PermissionSet, builtin, parse_role_name, user::Granter};
use crate::service::Projected;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<Permission>,
}

impl Role {
    pub fn permission_set(&self) -> PermissionSet {
        self.permissions.iter().copied().collect()
    }
}

/// The body of `POST /api/v1/roles`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
}

/// The body of `PATCH /api/v1/roles/{name}`: what to change.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum RoleCommand {
    Define {
        id: Uuid,
        input: RoleInput,
        granter: Granter,
    },
    Change {
        change: RoleChange,
        granter: Granter,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    pub description: String,
    pub permissions: Vec<Permission>,
}

domain_events! {
    pub enum RoleEvent {
        Defined(Role) = "role.defined",
        Changed(Changed) = "role.changed",
    }
}

pub const NAME_SCOPE: &str = "role.name";

/// Permission names to permissions; the first unknown one is a 422 naming it.
pub fn parse_permissions(names: &[String]) -> Result<Vec<Permission>, DomainError> {
    let mut out: Vec<Permission> = Vec::with_capacity(names.len());
    for n in names {
        let p = Permission::parse(n.trim()).map_err(|e| {
            DomainError::invalid(
                "permissions",
                format!("{e}; the permissions are listed at GET /api/v1/permissions"),
            )
        })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// A role may only hold what its definer holds.
fn check_granter(granter: &Granter, name: &str, perms: &[Permission]) -> Result<(), DomainError> {
    granter.may_grant(name, perms.iter().copied().collect())
}

impl Aggregate for Role {
    const STREAM_TYPE: &'static str = "role";
    type Command = RoleCommand;
    type Event = RoleEvent;

    fn decide(state: Option<&Self>, command: &RoleCommand) -> Result<Vec<RoleEvent>, DomainError> {
        match (state, command) {
            (None, RoleCommand::Define { id, input, granter }) => {
                let name = parse_role_name(&input.name)?;
                if builtin(&name).is_some() {
                    return Err(DomainError::Conflict(format!(
                        "'{name}' is a built-in role; choose another name"
                    )));
                }
                let permissions = parse_permissions(&input.permissions)?;
                check_granter(granter, &name, &permissions)?;
                Ok(vec![RoleEvent::Defined(Role {
                    id: *id,
                    name,
                    description: input.description.trim().to_owned(),
                    permissions,
                })])
            }
            (Some(_), RoleCommand::Define { .. }) => {
                Err(DomainError::Conflict("the role exists".into()))
            }
            (None, RoleCommand::Change { .. }) => Err(DomainError::NotFound("role".into())),
            (Some(r), RoleCommand::Change { change, granter }) => {
                let permissions = match &change.permissions {
                    Some(p) => parse_permissions(p)?,
                    None => r.permissions.clone(),
                };
                // Both what it held and what it will hold: no one takes from a role, or
                // gives it, permissions they lack.
                check_granter(granter, &r.name, &permissions)?;
                check_granter(granter, &r.name, &r.permissions)?;
                let description = change
                    .description
                    .as_deref()
                    .map(|d| d.trim().to_owned())
                    .unwrap_or_else(|| r.description.clone());
                if description == r.description && permissions == r.permissions {
                    return Ok(vec![]);
                }
                Ok(vec![RoleEvent::Changed(Changed {
                    description,
                    permissions,
                })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &RoleEvent) -> Option<Self> {
        match (state, event) {
            (_, RoleEvent::Defined(r)) => Some(r.clone()),
            (Some(mut r), RoleEvent::Changed(c)) => {
                r.description = c.description.clone();
                r.permissions = c.permissions.clone();
                Some(r)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<RoleEvent, serde_json::Error> {
        RoleEvent::decode(event_type, payload)
    }
}

impl Projected for Role {
    const RESOURCE_TYPE: &'static str = "role";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![SearchRow::new("name", self.name.clone())]
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![UniqueKey::new(NAME_SCOPE, self.name.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(name: &str, perms: &[&str], granter: Granter) -> Result<Vec<RoleEvent>, DomainError> {
        Role::decide(
            None,
            &RoleCommand::Define {
                id: Uuid::now_v7(),
                input: RoleInput {
                    name: name.into(),
                    description: "d".into(),
                    permissions: perms.iter().map(|p| p.to_string()).collect(),
                },
                granter,
            },
        )
    }

    #[test]
    fn an_unknown_permission_is_refused_by_name() {
        let Err(DomainError::Invalid { message, field }) = define(
            "ward-nurse",
            &["patients:read", "patients:delete"],
            Granter::system(),
        ) else {
            panic!("accepted")
        };
        assert!(message.contains("'patients:delete'"), "{message}");
        assert_eq!(field.as_deref(), Some("permissions"));
    }

    #[test]
    fn built_in_names_are_taken_and_definers_give_only_what_they_hold() {
        assert!(matches!(
            define("Admin", &[], Granter::system()),
            Err(DomainError::Conflict(_))
        ));
        let viewer = Granter {
            id: Uuid::now_v7(),
            permissions: builtin("viewer").unwrap().permissions(),
            is_admin: false,
        };
        assert!(define("reader", &["patients:read"], viewer).is_ok());
        assert!(matches!(
            define("writer", &["patients:write"], viewer),
            Err(DomainError::Forbidden(_))
        ));
    }
}
