//! Care relationships: who has a reason to read a patient's record.
//!
//! A user has a care relationship with a patient when either
//! - they are the clinician of one of the patient's encounters that is not cancelled
//!   (the clinician record names the user: `clinician.user_id`), or
//! - they are on the patient's care team: a [`CareAssignment`] (made by a holder of
//!   `care_team:write`) that has not ended and whose `valid_until` has not passed.
//!
//! Whether reads need one is the tenant's [`CarePolicy`]: off by default; when on, it binds
//! the users holding one of its roles (`provider` unless the policy names others). A bound
//! user without a relationship reads a patient only with `X-Break-Glass: <reason>`: the
//! read is allowed, flagged in the data-access log and shown in the break-glass report.
//! The policy, its changes and every assignment are events, so the audit trail shows who
//! gave whom access to whom, and when.
//!
//! This module decides and looks up; it never reads the clock (the caller passes `now`).

use crate::service::{Projected, ServiceError, Services};
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, TenantContext, domain_events};
use salus_store::{Filter, FilterOp, SearchQuery, SearchRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The resource (and stream) type of care-team assignments.
pub const ASSIGNMENT_TYPE: &str = "care_assignment";
/// The resource (and stream) type of the tenant's care-relationship policy.
pub const POLICY_TYPE: &str = "care_policy";
/// The role a policy binds when it names none.
pub const DEFAULT_BOUND_ROLE: &str = "provider";

/// How an assignment ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ending {
    pub by: Uuid,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// A user on a patient's care team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CareAssignment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub user_id: Uuid,
    /// The user's part in the patient's care ("attending", "nurse", "gp"...).
    pub role: String,
    pub assigned_by: Uuid,
    pub assigned_at: DateTime<Utc>,
    /// Counts until this instant, exclusive (open when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
}

impl CareAssignment {
    /// Whether it gives a relationship at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.ended.is_none() && self.valid_until.is_none_or(|u| now < u)
    }

    /// `active`, `expired` or `ended` at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> &'static str {
        if self.ended.is_some() {
            "ended"
        } else if self.active_at(now) {
            "active"
        } else {
            "expired"
        }
    }
}

#[derive(Debug, Clone)]
pub enum CareAssignmentCommand {
    Assign {
        id: Uuid,
        patient_id: Uuid,
        user_id: Uuid,
        role: String,
        valid_until: Option<DateTime<Utc>>,
        by: Uuid,
        now: DateTime<Utc>,
    },
    End {
        reason: String,
        by: Uuid,
        now: DateTime<Utc>,
    },
}

domain_events! {
    pub enum CareAssignmentEvent {
        Assigned(CareAssignment) = "care_team.assigned",
        Ended(Ending) = "care_team.ended",
    }
}

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

impl Aggregate for CareAssignment {
    const STREAM_TYPE: &'static str = ASSIGNMENT_TYPE;
    type Command = CareAssignmentCommand;
    type Event = CareAssignmentEvent;

    fn decide(
        state: Option<&Self>,
        command: &CareAssignmentCommand,
    ) -> Result<Vec<CareAssignmentEvent>, DomainError> {
        match (state, command) {
            (
                None,
                CareAssignmentCommand::Assign {
                    id,
                    patient_id,
                    user_id,
                    role,
                    valid_until,
                    by,
                    now,
                },
            ) => {
                if valid_until.is_some_and(|u| u <= *now) {
                    return Err(DomainError::invalid(
                        "valid_until",
                        "valid_until must be in the future",
                    ));
                }
                Ok(vec![CareAssignmentEvent::Assigned(CareAssignment {
                    id: *id,
                    patient_id: *patient_id,
                    user_id: *user_id,
                    role: text("role", role, 100)?,
                    assigned_by: *by,
                    assigned_at: *now,
                    valid_until: *valid_until,
                    ended: None,
                })])
            }
            (Some(_), CareAssignmentCommand::Assign { .. }) => {
                Err(DomainError::Rule("care assignment already made".into()))
            }
            (None, CareAssignmentCommand::End { .. }) => {
                Err(DomainError::NotFound("care assignment".into()))
            }
            (Some(a), CareAssignmentCommand::End { reason, by, now }) => {
                if a.ended.is_some() {
                    return Err(DomainError::Conflict(
                        "the assignment has already ended; make a new one".into(),
                    ));
                }
                Ok(vec![CareAssignmentEvent::Ended(Ending {
                    by: *by,
                    at: *now,
                    reason: text("reason", reason, 1000)?,
                })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &CareAssignmentEvent) -> Option<Self> {
        match event {
            CareAssignmentEvent::Assigned(a) => Some(a.clone()),
            CareAssignmentEvent::Ended(e) => state.map(|mut a| {
                a.ended = Some(e.clone());
                a
            }),
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<Self::Event, serde_json::Error> {
        CareAssignmentEvent::decode(event_type, payload)
    }
}

impl Projected for CareAssignment {
    const RESOURCE_TYPE: &'static str = ASSIGNMENT_TYPE;

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("user", self.user_id.to_string()),
        ]
    }
}

/// The tenant's care-relationship policy (one per tenant, at [`policy_id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CarePolicy {
    /// Whether reads by bound users need a care relationship (or break-glass).
    pub enforced: bool,
    /// The roles whose holders are bound.
    pub roles: Vec<String>,
}

impl Default for CarePolicy {
    /// What a tenant that never set one has: not enforced.
    fn default() -> Self {
        Self {
            enforced: false,
            roles: vec![DEFAULT_BOUND_ROLE.to_owned()],
        }
    }
}

impl CarePolicy {
    /// Whether a user holding `roles` is bound by the policy.
    pub fn binds<'a>(&self, mut roles: impl Iterator<Item = &'a str>) -> bool {
        self.enforced && roles.any(|r| self.roles.iter().any(|b| b == r))
    }
}

#[derive(Debug, Clone)]
pub struct SetPolicy {
    pub enforced: bool,
    /// `None`: [`DEFAULT_BOUND_ROLE`].
    pub roles: Option<Vec<String>>,
}

domain_events! {
    pub enum CarePolicyEvent {
        Set(CarePolicy) = "care_policy.set",
    }
}

impl Aggregate for CarePolicy {
    const STREAM_TYPE: &'static str = POLICY_TYPE;
    type Command = SetPolicy;
    type Event = CarePolicyEvent;

    fn decide(state: Option<&Self>, c: &SetPolicy) -> Result<Vec<CarePolicyEvent>, DomainError> {
        let mut roles = Vec::new();
        for r in c
            .roles
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_BOUND_ROLE.to_owned()])
        {
            let r = super::parse_role_name(&r)
                .map_err(|_| DomainError::invalid("roles", format!("'{r}' is not a role name")))?;
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        if roles.is_empty() {
            return Err(DomainError::invalid(
                "roles",
                "name at least one role for the policy to bind",
            ));
        }
        let next = CarePolicy {
            enforced: c.enforced,
            roles,
        };
        if state == Some(&next) {
            return Ok(Vec::new());
        }
        Ok(vec![CarePolicyEvent::Set(next)])
    }

    fn evolve(_: Option<Self>, event: &CarePolicyEvent) -> Option<Self> {
        match event {
            CarePolicyEvent::Set(p) => Some(p.clone()),
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<Self::Event, serde_json::Error> {
        CarePolicyEvent::decode(event_type, payload)
    }
}

impl Projected for CarePolicy {
    const RESOURCE_TYPE: &'static str = POLICY_TYPE;

    fn search_rows(&self) -> Vec<SearchRow> {
        Vec::new()
    }
}

/// The id of the tenant's policy stream.
pub fn policy_id(tenant: salus_kernel::TenantId) -> Uuid {
    crate::bulk::derived_id(tenant, POLICY_TYPE, Uuid::nil())
}

/// The tenant's policy (the default when it never set one).
pub async fn policy(services: &Services, ctx: &TenantContext) -> Result<CarePolicy, ServiceError> {
    Ok(services
        .load::<CarePolicy>(ctx, policy_id(ctx.tenant))
        .await?
        .map(|c| c.state)
        .unwrap_or_default())
}

fn filter(param: &str, op: FilterOp, value: &str) -> Filter {
    Filter {
        also: Vec::new(),
        param: param.into(),
        system: None,
        op,
        value: value.into(),
    }
}

fn ids_in(param: &str, ids: &[Uuid]) -> Filter {
    filter(
        param,
        FilterOp::In(ids.iter().map(Uuid::to_string).collect()),
        "",
    )
}

fn query(resource_type: &str, filters: Vec<Filter>, limit: u32) -> SearchQuery {
    SearchQuery {
        resource_type: resource_type.into(),
        filters,
        after: None,
        limit,
        newest_first: true,
        order_by: None,
    }
}

/// Most care-team assignments of one user to one patient looked at (newest first).
const ASSIGNMENTS_LOOKED_AT: u32 = 100;

/// Whether `user` has a care relationship at `now` with one of `patients` (a patient's
/// merge group).
pub async fn has_relationship(
    services: &Services,
    ctx: &TenantContext,
    user: Uuid,
    patients: &[Uuid],
    now: DateTime<Utc>,
) -> Result<bool, ServiceError> {
    let user_text = user.to_string();
    let assignments = services
        .search::<CareAssignment>(
            ctx,
            &query(
                ASSIGNMENT_TYPE,
                vec![
                    ids_in("patient", patients),
                    filter("user", FilterOp::Eq, &user_text),
                ],
                ASSIGNMENTS_LOOKED_AT,
            ),
        )
        .await?;
    if assignments.iter().any(|a| a.state.active_at(now)) {
        return Ok(true);
    }
    let clinicians = services
        .store
        .search(
            ctx,
            &query(
                crate::staff::Clinician::RESOURCE_TYPE,
                vec![filter("user", FilterOp::Eq, &user_text)],
                10,
            ),
        )
        .await?;
    if clinicians.is_empty() {
        return Ok(false);
    }
    let clinician_ids: Vec<Uuid> = clinicians.iter().map(|c| c.id).collect();
    let live = ["scheduled", "in_progress", "completed", "archived"];
    let encounters = services
        .store
        .search(
            ctx,
            &query(
                crate::clinical::encounter::Encounter::RESOURCE_TYPE,
                vec![
                    ids_in("patient", patients),
                    ids_in("clinician", &clinician_ids),
                    filter(
                        "status",
                        FilterOp::In(live.iter().map(|s| (*s).to_owned()).collect()),
                        "",
                    ),
                ],
                1,
            ),
        )
        .await?;
    Ok(!encounters.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn assign(valid_until: Option<DateTime<Utc>>) -> Result<Vec<CareAssignmentEvent>, DomainError> {
        CareAssignment::decide(
            None,
            &CareAssignmentCommand::Assign {
                id: Uuid::nil(),
                patient_id: Uuid::nil(),
                user_id: Uuid::nil(),
                role: " attending ".into(),
                valid_until,
                by: Uuid::nil(),
                now: t(0),
            },
        )
    }

    #[test]
    fn an_assignment_counts_until_it_expires_or_ends_and_ends_once() {
        assert!(matches!(
            assign(Some(t(0))),
            Err(DomainError::Invalid { field: Some(f), .. }) if f == "valid_until"
        ));
        let a = assign(Some(t(60)))
            .unwrap()
            .iter()
            .fold(None, CareAssignment::evolve)
            .unwrap();
        assert_eq!(a.role, "attending");
        assert!(a.active_at(t(59)));
        assert_eq!(a.status_at(t(60)), "expired");
        let end = |a: &CareAssignment, reason: &str| {
            CareAssignment::decide(
                Some(a),
                &CareAssignmentCommand::End {
                    reason: reason.into(),
                    by: Uuid::nil(),
                    now: t(1),
                },
            )
        };
        assert!(end(&a, " ").is_err());
        let ended = end(&a, "discharged")
            .unwrap()
            .iter()
            .fold(Some(a), CareAssignment::evolve)
            .unwrap();
        assert_eq!(ended.status_at(t(2)), "ended");
        assert!(matches!(
            end(&ended, "again"),
            Err(DomainError::Conflict(_))
        ));
    }

    #[test]
    fn the_policy_binds_only_its_roles_and_only_when_enforced() {
        let set = |enforced, roles: Option<Vec<&str>>| {
            CarePolicy::decide(
                None,
                &SetPolicy {
                    enforced,
                    roles: roles.map(|r| r.into_iter().map(String::from).collect()),
                },
            )
            .map(|evs| evs.iter().fold(None, CarePolicy::evolve).unwrap())
        };
        let p = set(true, None).unwrap();
        assert_eq!(p.roles, ["provider"]);
        assert!(p.binds(["viewer", "provider"].into_iter()));
        assert!(!p.binds(["admin"].into_iter()));
        assert!(!CarePolicy::default().binds(["provider"].into_iter()));
        assert!(!set(false, None).unwrap().binds(["provider"].into_iter()));
        assert!(set(true, Some(vec![])).is_err());
        assert!(set(true, Some(vec!["Not a role!"])).is_err());
        let p = set(true, Some(vec!["Viewer", "viewer", "locum"])).unwrap();
        assert_eq!(p.roles, ["viewer", "locum"]);
    }
}
