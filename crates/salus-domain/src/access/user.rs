//! The User aggregate: a person or system that signs in to Salus, and the roles it holds
//! through [`Assignment`]s.
//!
//! An assignment counts from `valid_from` until `valid_until` (either open) and stops on
//! its own: [`User::active_roles`] decides at the instant it is given, so no job expires
//! anything. Revocation (who, why, when) is final: `active → revoked` has no way back, a
//! reactivation is a 409 and the way forward is a new grant. A grant is checked against
//! the granter ([`Granter`]): only roles whose permissions it holds, and `admin` only by an
//! admin.

use super::{ADMIN, PermissionSet};
use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "StoredUser")]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub assignments: Vec<Assignment>,
    pub active: bool,
}

/// A user document as stored: documents written before assignments carry `roles`.
#[derive(Deserialize)]
struct StoredUser {
    id: Uuid,
    username: String,
    display_name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    assignments: Vec<Assignment>,
    active: bool,
}

impl From<StoredUser> for User {
    fn from(s: StoredUser) -> Self {
        let mut assignments = s.assignments;
        assignments.extend(standing(s.id, &s.roles));
        User {
            id: s.id,
            username: s.username,
            display_name: s.display_name,
            assignments,
            active: s.active,
        }
    }
}

/// Assignments for roles given before assignments existed (`user.created` and
/// `user.roles_set` with `roles`): open-ended, by the system, each under an id derived from
/// the user and the role so that every fold finds the same one.
fn standing(user: Uuid, roles: &[String]) -> Vec<Assignment> {
    use sha2::{Digest, Sha256};
    roles
        .iter()
        .map(|role| {
            let digest = Sha256::digest(format!("{user}/{role}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            Assignment {
                id: uuid::Builder::from_custom_bytes(bytes).into_uuid(),
                role: role.clone(),
                valid_from: None,
                valid_until: None,
                granted_by: Uuid::nil(),
                granted_at: DateTime::<Utc>::UNIX_EPOCH,
                reason: None,
                revoked: None,
                status: None,
            }
        })
        .collect()
}

/// A role held by a user for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    pub id: Uuid,
    /// The role's name (built-in or the tenant's).
    pub role: String,
    /// Counts from this instant (open when absent).
    pub valid_from: Option<DateTime<Utc>>,
    /// Counts until this instant, exclusive (open when absent).
    pub valid_until: Option<DateTime<Utc>>,
    pub granted_by: Uuid,
    pub granted_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub revoked: Option<Revocation>,
    /// Where it stands at the time of the request (set by the API's views, never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AssignmentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revocation {
    pub by: Uuid,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// Where an assignment stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentStatus {
    /// Not yet valid.
    Pending,
    Active,
    Expired,
    Revoked,
}

impl Assignment {
    pub fn status_at(&self, now: DateTime<Utc>) -> AssignmentStatus {
        if self.revoked.is_some() {
            AssignmentStatus::Revoked
        } else if self.valid_from.is_some_and(|f| now < f) {
            AssignmentStatus::Pending
        } else if self.valid_until.is_some_and(|u| now >= u) {
            AssignmentStatus::Expired
        } else {
            AssignmentStatus::Active
        }
    }
}

/// Who grants or revokes, as the service found them: the permissions they hold now and
/// whether they hold `admin`.
#[derive(Debug, Clone, Copy)]
pub struct Granter {
    pub id: Uuid,
    pub permissions: PermissionSet,
    pub is_admin: bool,
}

impl Granter {
    /// The tenant's system actor (CLI, bootstrap): holds everything.
    pub fn system() -> Self {
        Granter {
            id: Uuid::nil(),
            permissions: PermissionSet::all(),
            is_admin: true,
        }
    }

    /// Refuse (403) unless this granter may hand out `role` with `permissions`.
    pub fn may_grant(&self, role: &str, permissions: PermissionSet) -> Result<(), DomainError> {
        if role == ADMIN && !self.is_admin {
            return Err(DomainError::Forbidden(
                "only an admin may grant or revoke the admin role".into(),
            ));
        }
        if !permissions.is_subset(self.permissions) {
            let missing: Vec<&str> = permissions
                .iter()
                .filter(|p| !self.permissions.contains(*p))
                .map(|p| p.as_str())
                .collect();
            return Err(DomainError::Forbidden(format!(
                "role '{role}' grants permissions you do not hold: {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

/// A role to grant, with what the service found out about it.
#[derive(Debug, Clone)]
pub struct Grant {
    pub assignment_id: Uuid,
    pub role: String,
    /// The role's permissions; `None` when no such role exists in the tenant.
    pub role_permissions: Option<PermissionSet>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum UserCommand {
    Create {
        id: Uuid,
        username: String,
        display_name: String,
        grants: Vec<Grant>,
        granter: Granter,
        now: DateTime<Utc>,
    },
    Grant {
        grant: Grant,
        granter: Granter,
        now: DateTime<Utc>,
    },
    Revoke {
        assignment_id: Uuid,
        reason: String,
        /// The revoked role's permissions (`None`: the role no longer exists).
        role_permissions: Option<PermissionSet>,
        granter: Granter,
        now: DateTime<Utc>,
    },
    /// Always refused: a revoked assignment stays revoked.
    Reactivate {
        assignment_id: Uuid,
    },
    Disable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// Roles of users created before assignments (read only, never written now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Written before assignments: replaced every role with these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolesSet {
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleGranted {
    pub assignment_id: Uuid,
    pub role: String,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub granted_by: Uuid,
    pub granted_at: DateTime<Utc>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRevoked {
    pub assignment_id: Uuid,
    pub revoked_by: Uuid,
    pub revoked_at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {}

domain_events! {
    pub enum UserEvent {
        Created(Created) = "user.created",
        RolesSet(RolesSet) = "user.roles_set",
        RoleGranted(RoleGranted) = "user.role_granted",
        RoleRevoked(RoleRevoked) = "user.role_revoked",
        Disabled(Disabled) = "user.disabled",
    }
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

fn decide_grant(
    grant: &Grant,
    granter: &Granter,
    now: DateTime<Utc>,
) -> Result<RoleGranted, DomainError> {
    let Some(perms) = grant.role_permissions else {
        return Err(DomainError::invalid(
            "role",
            format!("unknown role '{}'", grant.role),
        ));
    };
    if let (Some(f), Some(u)) = (grant.valid_from, grant.valid_until)
        && u <= f
    {
        return Err(DomainError::invalid(
            "valid_until",
            "valid_until must be after valid_from",
        ));
    }
    if grant.valid_until.is_some_and(|u| u <= now) {
        return Err(DomainError::invalid(
            "valid_until",
            "valid_until is already past: the assignment would never count",
        ));
    }
    granter.may_grant(&grant.role, perms)?;
    Ok(RoleGranted {
        assignment_id: grant.assignment_id,
        role: grant.role.clone(),
        valid_from: grant.valid_from,
        valid_until: grant.valid_until,
        granted_by: granter.id,
        granted_at: now,
        reason: grant
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    })
}

impl User {
    /// The names of the roles whose assignments count at `now`.
    pub fn active_roles(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        self.assignments
            .iter()
            .filter(move |a| a.status_at(now) == AssignmentStatus::Active)
            .map(|a| a.role.as_str())
    }

    pub fn assignment(&self, id: Uuid) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.id == id)
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
                    grants,
                    granter,
                    now,
                },
            ) => {
                let username = parse_username(username)?;
                let display_name = display_name.trim();
                let mut events = vec![UserEvent::Created(Created {
                    id: *id,
                    username: username.clone(),
                    display_name: if display_name.is_empty() {
                        username
                    } else {
                        display_name.to_owned()
                    },
                    roles: Vec::new(),
                })];
                for g in grants {
                    events.push(UserEvent::RoleGranted(decide_grant(g, granter, *now)?));
                }
                Ok(events)
            }
            (Some(_), UserCommand::Create { .. }) => {
                Err(DomainError::Rule("user already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("user".into())),
            (
                Some(u),
                UserCommand::Grant {
                    grant,
                    granter,
                    now,
                },
            ) => {
                if !u.active {
                    return Err(DomainError::Rule("the user is disabled".into()));
                }
                if u.assignment(grant.assignment_id).is_some() {
                    return Err(DomainError::Conflict("the assignment exists".into()));
                }
                Ok(vec![UserEvent::RoleGranted(decide_grant(
                    grant, granter, *now,
                )?)])
            }
            (
                Some(u),
                UserCommand::Revoke {
                    assignment_id,
                    reason,
                    role_permissions,
                    granter,
                    now,
                },
            ) => {
                let a = u
                    .assignment(*assignment_id)
                    .ok_or_else(|| DomainError::NotFound("assignment".into()))?;
                if a.revoked.is_some() {
                    return Err(DomainError::Conflict(
                        "the assignment is already revoked".into(),
                    ));
                }
                let reason = reason.trim();
                if reason.is_empty() {
                    return Err(DomainError::invalid("reason", "say why it is revoked"));
                }
                granter.may_grant(&a.role, role_permissions.unwrap_or_default())?;
                Ok(vec![UserEvent::RoleRevoked(RoleRevoked {
                    assignment_id: a.id,
                    revoked_by: granter.id,
                    revoked_at: *now,
                    reason: reason.to_owned(),
                })])
            }
            (Some(u), UserCommand::Reactivate { assignment_id }) => {
                let a = u
                    .assignment(*assignment_id)
                    .ok_or_else(|| DomainError::NotFound("assignment".into()))?;
                Err(DomainError::Conflict(if a.revoked.is_some() {
                    "a revoked assignment is never reactivated; grant the role again (a new assignment)".into()
                } else {
                    "the assignment is not revoked".into()
                }))
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
                assignments: standing(c.id, &c.roles),
                active: true,
            }),
            (Some(mut u), UserEvent::RolesSet(r)) => {
                // Before assignments, a role change replaced the set: the standing roles
                // not kept end, the new ones start.
                let kept = standing(u.id, &r.roles);
                for a in u.assignments.iter_mut() {
                    if a.granted_by.is_nil()
                        && a.revoked.is_none()
                        && !kept.iter().any(|k| k.id == a.id)
                    {
                        a.revoked = Some(Revocation {
                            by: Uuid::nil(),
                            at: DateTime::<Utc>::UNIX_EPOCH,
                            reason: "roles replaced".into(),
                        });
                    }
                }
                for k in kept {
                    if u.assignment(k.id).is_none() {
                        u.assignments.push(k);
                    }
                }
                Some(u)
            }
            (Some(mut u), UserEvent::RoleGranted(g)) => {
                u.assignments.push(Assignment {
                    id: g.assignment_id,
                    role: g.role.clone(),
                    valid_from: g.valid_from,
                    valid_until: g.valid_until,
                    granted_by: g.granted_by,
                    granted_at: g.granted_at,
                    reason: g.reason.clone(),
                    revoked: None,
                    status: None,
                });
                Some(u)
            }
            (Some(mut u), UserEvent::RoleRevoked(r)) => {
                if let Some(a) = u.assignments.iter_mut().find(|a| a.id == r.assignment_id) {
                    a.revoked = Some(Revocation {
                        by: r.revoked_by,
                        at: r.revoked_at,
                        reason: r.reason.clone(),
                    });
                }
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
        let mut rows = vec![SearchRow::new("username", self.username.clone())];
        let mut roles: Vec<&str> = self.assignments.iter().map(|a| a.role.as_str()).collect();
        roles.sort_unstable();
        roles.dedup();
        rows.extend(roles.into_iter().map(|r| SearchRow::new("role", r)));
        rows.push(SearchRow::new(
            "status",
            if self.active { "active" } else { "disabled" },
        ));
        rows
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![UniqueKey::new(USERNAME_SCOPE, self.username.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Permission, builtin};
    use chrono::Duration;

    fn perms(role: &str) -> Option<PermissionSet> {
        builtin(role).map(|r| r.permissions())
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn grant(role: &str) -> Grant {
        Grant {
            assignment_id: Uuid::now_v7(),
            role: role.into(),
            role_permissions: perms(role),
            valid_from: None,
            valid_until: None,
            reason: None,
        }
    }

    fn run(state: Option<User>, cmd: UserCommand) -> Result<User, DomainError> {
        let events = User::decide(state.as_ref(), &cmd)?;
        let mut s = state;
        for e in &events {
            s = User::evolve(s, e);
        }
        Ok(s.unwrap())
    }

    fn user_with(roles: &[&str]) -> User {
        run(
            None,
            UserCommand::Create {
                id: Uuid::now_v7(),
                username: "nurse1".into(),
                display_name: "".into(),
                grants: roles.iter().map(|r| grant(r)).collect(),
                granter: Granter::system(),
                now: t0(),
            },
        )
        .unwrap()
    }

    fn granter(roles: &[&str]) -> Granter {
        Granter {
            id: Uuid::now_v7(),
            permissions: roles
                .iter()
                .filter_map(|r| perms(r))
                .fold(PermissionSet::EMPTY, PermissionSet::union),
            is_admin: roles.contains(&ADMIN),
        }
    }

    #[test]
    fn assignments_count_only_inside_their_window() {
        let u = user_with(&[]);
        let mut g = grant("viewer");
        g.valid_from = Some(t0() + Duration::hours(1));
        g.valid_until = Some(t0() + Duration::hours(2));
        let u = run(
            Some(u),
            UserCommand::Grant {
                grant: g,
                granter: Granter::system(),
                now: t0(),
            },
        )
        .unwrap();
        let at = |h: i64| u.active_roles(t0() + Duration::minutes(h)).count();
        assert_eq!(at(59), 0);
        assert_eq!(at(60), 1);
        assert_eq!(at(119), 1);
        assert_eq!(at(120), 0, "valid_until is exclusive");
        assert_eq!(
            u.assignments[0].status_at(t0() + Duration::hours(3)),
            AssignmentStatus::Expired
        );
    }

    #[test]
    fn a_revoked_assignment_never_counts_again_and_cannot_be_reactivated() {
        let u = user_with(&["provider"]);
        let id = u.assignments[0].id;
        let revoke = || UserCommand::Revoke {
            assignment_id: id,
            reason: "left the ward".into(),
            role_permissions: perms("provider"),
            granter: Granter::system(),
            now: t0(),
        };
        let u = run(Some(u), revoke()).unwrap();
        assert_eq!(u.active_roles(t0()).count(), 0);
        let r = u.assignments[0].revoked.as_ref().unwrap();
        assert_eq!(r.reason, "left the ward");
        for cmd in [revoke(), UserCommand::Reactivate { assignment_id: id }] {
            assert!(matches!(
                User::decide(Some(&u), &cmd),
                Err(DomainError::Conflict(_))
            ));
        }
    }

    #[test]
    fn granters_grant_only_what_they_hold_and_admin_only_as_admin() {
        let u = user_with(&["viewer"]);
        let try_grant = |by: Granter, role: &str| {
            User::decide(
                Some(&u),
                &UserCommand::Grant {
                    grant: grant(role),
                    granter: by,
                    now: t0(),
                },
            )
        };
        // A provider (with the grant permission) may hand out viewer, not admin or auditor.
        let mut manager = granter(&["provider"]);
        manager
            .permissions
            .insert(Permission::parse("roles:grant").unwrap());
        assert!(try_grant(manager, "viewer").is_ok());
        assert!(matches!(
            try_grant(manager, "admin"),
            Err(DomainError::Forbidden(_))
        ));
        let Err(DomainError::Forbidden(m)) = try_grant(manager, "auditor") else {
            panic!("auditor granted")
        };
        assert!(m.contains("audit:read"), "{m}");
        // Holding every permission is not enough for admin: it needs admin.
        let all = Granter {
            id: Uuid::now_v7(),
            permissions: PermissionSet::all(),
            is_admin: false,
        };
        assert!(matches!(
            try_grant(all, "admin"),
            Err(DomainError::Forbidden(_))
        ));
        assert!(try_grant(granter(&["admin"]), "admin").is_ok());
        // An unknown role is a 422 naming it.
        let mut unknown = grant("ward-nurse");
        unknown.role_permissions = None;
        let Err(DomainError::Invalid { message, .. }) = User::decide(
            Some(&u),
            &UserCommand::Grant {
                grant: unknown,
                granter: Granter::system(),
                now: t0(),
            },
        ) else {
            panic!("unknown role granted")
        };
        assert!(message.contains("ward-nurse"));
    }

    #[test]
    fn users_created_before_assignments_keep_their_roles() {
        let id = Uuid::now_v7();
        let doc = serde_json::json!({"id": id, "username": "old", "display_name": "Old",
            "roles": ["provider"], "active": true});
        let u: User = serde_json::from_value(doc).unwrap();
        assert_eq!(u.active_roles(t0()).collect::<Vec<_>>(), ["provider"]);
        let created = UserEvent::decode(
            "user.created",
            &serde_json::json!({"id": id, "username": "old", "display_name": "Old", "roles": ["viewer", "auditor"]}),
        )
        .unwrap();
        let u = User::evolve(None, &created).unwrap();
        let replaced =
            UserEvent::decode("user.roles_set", &serde_json::json!({"roles": ["auditor"]}))
                .unwrap();
        let u = User::evolve(Some(u), &replaced).unwrap();
        assert_eq!(u.active_roles(t0()).collect::<Vec<_>>(), ["auditor"]);
        // The fold and the stored document agree.
        let again: User = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(again, u);
    }
}
