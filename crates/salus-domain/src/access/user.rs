//! The User aggregate: a person or system that signs in to Salus.

use crate::service::Projected;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub active: bool,
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Create {
        id: Uuid,
        username: String,
        display_name: String,
        roles: Vec<String>,
    },
    SetRoles(Vec<String>),
    Disable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolesSet {
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {}

domain_events! {
    pub enum UserEvent {
        Created(Created) = "user.created",
        RolesSet(RolesSet) = "user.roles_set",
        Disabled(Disabled) = "user.disabled",
    }
}

fn check_roles(roles: &[String]) -> Result<(), DomainError> {
    for r in roles {
        if !super::role_exists(r) {
            let known: Vec<&str> = super::ROLES.iter().map(|(n, _)| *n).collect();
            return Err(DomainError::invalid(
                "roles",
                format!("unknown role '{r}'; roles are: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// A username: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn parse_username(s: &str) -> Result<String, DomainError> {
    let u = s.trim().to_ascii_lowercase();
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && u.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(u)
    } else {
        Err(DomainError::invalid(
            "username",
            "username must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;

    fn decide(state: Option<&Self>, command: &UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        match (state, command) {
            (
                None,
                UserCommand::Create {
                    id,
                    username,
                    display_name,
                    roles,
                },
            ) => {
                let username = parse_username(username)?;
                check_roles(roles)?;
                Ok(vec![UserEvent::Created(Created {
                    id: *id,
                    username,
                    display_name: display_name.trim().to_owned(),
                    roles: roles.clone(),
                })])
            }
            (Some(_), UserCommand::Create { .. }) => {
                Err(DomainError::Rule("user already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("user".into())),
            (Some(u), UserCommand::SetRoles(roles)) => {
                if !u.active {
                    return Err(DomainError::Rule("user is disabled".into()));
                }
                check_roles(roles)?;
                Ok(vec![UserEvent::RolesSet(RolesSet {
                    roles: roles.clone(),
                })])
            }
            (Some(u), UserCommand::Disable) => {
                if !u.active {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::Disabled(Disabled {})])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &UserEvent) -> Option<Self> {
        match (state, event) {
            (_, UserEvent::Created(c)) => Some(User {
                id: c.id,
                username: c.username.clone(),
                display_name: c.display_name.clone(),
                roles: c.roles.clone(),
                active: true,
            }),
            (Some(mut u), UserEvent::RolesSet(r)) => {
                u.roles = r.roles.clone();
                Some(u)
            }
            (Some(mut u), UserEvent::Disabled(_)) => {
                u.active = false;
                Some(u)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<UserEvent, serde_json::Error> {
        UserEvent::decode(event_type, payload)
    }
}

pub const USERNAME_SCOPE: &str = "user.username";

impl Projected for User {
    const RESOURCE_TYPE: &'static str = "user";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![SearchRow::new("username", self.username.clone())]
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![UniqueKey::new(USERNAME_SCOPE, self.username.clone())]
    }
}
