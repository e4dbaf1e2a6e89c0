//! `/api/v1/users`: create, list, read and disable users; grant and revoke their role
//! assignments. A user's view shows each assignment's status at the time of the request
//! (pending, active, expired, revoked). Every change here clears the server's cache of
//! users and roles, so it takes effect on the next request.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, eq};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use salus_domain::access::user::Grant;
use salus_domain::access::{self, User, UserCommand};
use salus_store::{Filter, FilterOp, ResourceRow};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

const BASE: &str = "/api/v1/users";

/// The body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    /// Roles granted at once (open-ended); needs `roles:grant` as well.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The body of `POST /api/v1/users/{id}/assignments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    pub role: String,
    /// RFC 3339; counts from now when absent.
    pub valid_from: Option<String>,
    /// RFC 3339, exclusive; open-ended when absent.
    pub valid_until: Option<String>,
    pub reason: Option<String>,
}

/// The body of a revocation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeInput {
    pub reason: String,
}

/// The user as the API shows it: the resource, each assignment with its status at `now`.
fn user_view(row: &ResourceRow, now: DateTime<Utc>) -> Value {
    let mut v = http::resource_json(row);
    if let Ok(user) = serde_json::from_value::<User>(row.doc.clone()) {
        v["assignments"] = Value::Array(
            user.assignments
                .iter()
                .map(|a| assignment_view(a, now))
                .collect(),
        );
    }
    v
}

fn assignment_view(a: &access::Assignment, now: DateTime<Utc>) -> Value {
    let mut a = a.clone();
    a.status = Some(a.status_at(now));
    serde_json::to_value(&a).unwrap_or(Value::Null)
}

fn respond_user(status: StatusCode, row: &ResourceRow, now: DateTime<Utc>) -> Response {
    let mut resp = http::with_etag(status, row.version, user_view(row, now));
    if status == StatusCode::CREATED
        && let Ok(loc) = header::HeaderValue::from_str(&format!("{BASE}/{}", row.id))
    {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

fn parse_opt_instant(field: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(t) => salus_domain::clinical::interaction::parse_instant(field, t)
            .map(Some)
            .map_err(ApiError::from),
        None => Ok(None),
    }
}

/// The grant of `role`, with the role's permissions as the tenant has them.
async fn grant_of(
    state: &AppState,
    actor: &Actor,
    role: &str,
    valid_from: Option<DateTime<Utc>>,
    valid_until: Option<DateTime<Utc>>,
    reason: Option<String>,
) -> Result<Grant, ApiError> {
    let role = role.trim().to_ascii_lowercase();
    let role_permissions = access::role_permissions(&state.services, &actor.ctx, &role).await?;
    Ok(Grant {
        assignment_id: Uuid::now_v7(),
        role,
        role_permissions,
        valid_from,
        valid_until,
        reason,
    })
}

/// A user command, made from the current state and instant.
type MakeCommand = Box<
    dyn FnOnce(Option<&User>, DateTime<Utc>) -> Result<UserCommand, salus_kernel::DomainError>
        + Send,
>;

/// Run an idempotent user command and answer with the user's view.
#[allow(clippy::too_many_arguments)]
async fn run_user_command<F>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    path: &str,
    raw_body: &[u8],
    id: Uuid,
    if_match: Option<i64>,
    (status, new_stream): (StatusCode, bool),
    make: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<&User>, DateTime<Utc>) -> Result<UserCommand, salus_kernel::DomainError>,
{
    let key = match http::idempotency_start(state, actor, headers, "POST", path, raw_body).await? {
        http::IdemStart::Replay(r) => return Ok(r),
        http::IdemStart::Run(k) => k,
    };
    let now = state.services.now();
    let render = move |row: &ResourceRow| (status.as_u16(), user_view(row, now));
    let spec = http::idempotency_spec(state, key.as_ref(), &render);
    let result = if new_stream {
        state
            .services
            .create::<User, _>(&actor.ctx, id, make, spec)
            .await
    } else {
        state
            .services
            .execute::<User, _>(&actor.ctx, id, if_match, make, spec)
            .await
    };
    state.users.forget_all();
    match result {
        Ok(c) => Ok(respond_user(status, &c.row, now)),
        Err(salus_domain::service::ServiceError::IdempotencyKeyTaken) => match key {
            Some(k) => http::idempotency_settle(state, actor, &k, BASE).await,
            None => Err(salus_domain::service::ServiceError::IdempotencyKeyTaken.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Create a user (optionally with roles, which needs `roles:grant` too).
#[utoipa::path(post, path = "/api/v1/users", tag = "access", request_body = UserInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Created", body = User), (status = 403, description = "A role grants permissions the caller lacks"),
               (status = 409, description = "The username is taken"), (status = 422, description = "Invalid username or unknown role")),
    security(("bearer" = ["users:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<UserInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    if !input.roles.is_empty() {
        actor.require("roles:grant")?;
    }
    let mut grants = Vec::with_capacity(input.roles.len());
    for r in &input.roles {
        grants.push(grant_of(&state, &actor, r, None, None, None).await?);
    }
    let id = Uuid::now_v7();
    let granter = actor.granter();
    run_user_command(
        &state,
        &actor,
        &headers,
        BASE,
        &body.raw,
        id,
        None,
        (StatusCode::CREATED, true),
        move |_, now| {
            Ok(UserCommand::Create {
                id,
                username: input.username,
                display_name: input.display_name,
                grants,
                granter,
                now,
            })
        },
    )
    .await
}

/// Users in creation order: `username` (prefix), `role` (holds an assignment of it, in any
/// status), `status` (active | disabled).
#[utoipa::path(get, path = "/api/v1/users", tag = "access",
    params(("username" = Option<String>, Query, description = "Username prefix"), ("role" = Option<String>, Query, description = "Role name"),
           ("status" = Option<String>, Query, description = "active | disabled"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["users:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["username", "role", "status"])?;
    let mut filters = Vec::new();
    if let Some(u) = p.get("username") {
        filters.push(Filter {
            also: Vec::new(),
            param: "username".into(),
            system: None,
            op: FilterOp::Prefix,
            value: u.to_ascii_lowercase(),
        });
    }
    if let Some(r) = p.get("role") {
        filters.push(eq("role", r.to_ascii_lowercase()));
    }
    if let Some(s) = p.get("status") {
        if s != "active" && s != "disabled" {
            return Err(ApiError::bad_request(format!(
                "status '{s}' is not active or disabled"
            )));
        }
        filters.push(eq("status", s));
    }
    let mut rows = state
        .services
        .store
        .search(&actor.ctx, &p.query(User::RESOURCE_TYPE, filters, false))
        .await?;
    let now = state.services.now();
    let more = rows.len() > p.limit as usize;
    rows.truncate(p.limit as usize);
    let next = if more {
        rows.last().map(|r| http::encode_cursor(r.id))
    } else {
        None
    };
    let items: Vec<Value> = rows.iter().map(|r| user_view(r, now)).collect();
    Ok(axum::Json(serde_json::json!({ "items": items, "next_cursor": next })).into_response())
}

use salus_domain::service::Projected;

/// One user with its assignments and their status now.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "access",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User), (status = 404, description = "No such user")),
    security(("bearer" = ["users:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = http::load_row::<User>(&state, &actor, "user", &id, None).await?;
    Ok(respond_user(StatusCode::OK, &row, state.services.now()))
}

/// Every event of the user, oldest first (grants and revocations with who, why, when).
#[utoipa::path(get, path = "/api/v1/users/{id}/history", tag = "access",
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such user")),
    security(("bearer" = ["users:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<User>(&state, &actor, "user", &id).await
}

/// `disable`: the user's tokens stop working. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/users/{id}/{action}", tag = "access",
    params(("id" = Uuid, Path, description = "User id"), ("action" = String, Path, description = "disable"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 200, description = "Done", body = User), (status = 404, description = "No such user or action")),
    security(("bearer" = ["users:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let uid = http::parse_uuid("user", &id)?;
    if action != "disable" {
        return Err(ApiError::not_found(format!(
            "no action '{action}'; actions are: disable"
        )));
    }
    let expected = http::if_match(&headers)?;
    let path = format!("{BASE}/{uid}/{action}");
    run_user_command(
        &state,
        &actor,
        &headers,
        &path,
        &[],
        uid,
        expected,
        (StatusCode::OK, false),
        |_, _| Ok(UserCommand::Disable),
    )
    .await
}

/// Grant a role to the user, from `valid_from` until `valid_until` (either open). The
/// caller must hold every permission of the role, and `admin` to grant `admin` (403).
#[utoipa::path(post, path = "/api/v1/users/{id}/assignments", tag = "access", request_body = GrantInput,
    params(("id" = Uuid, Path, description = "User id"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Granted: the user with the new assignment", body = User), (status = 403, description = "The role grants permissions the caller lacks"),
               (status = 422, description = "Unknown role, or a window that never counts")),
    security(("bearer" = ["roles:grant"])))]
pub async fn grant(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<GrantInput>,
) -> Result<Response, ApiError> {
    let uid = http::parse_uuid("user", &id)?;
    let input = body.value;
    let g = grant_of(
        &state,
        &actor,
        &input.role,
        parse_opt_instant("valid_from", &input.valid_from)?,
        parse_opt_instant("valid_until", &input.valid_until)?,
        input.reason,
    )
    .await?;
    let granter = actor.granter();
    let path = format!("{BASE}/{uid}/assignments");
    // Granting appends: it needs no If-Match (a stale one is still refused with 412).
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(&headers)?,
        None => None,
    };
    run_user_command(
        &state,
        &actor,
        &headers,
        &path,
        &body.raw,
        uid,
        expected,
        (StatusCode::CREATED, false),
        move |_, now| {
            Ok(UserCommand::Grant {
                grant: g,
                granter,
                now,
            })
        },
    )
    .await
}

/// `revoke` (body `{ "reason": … }`) or `reactivate` an assignment. A revoked assignment
/// is never reactivated (409): grant the role again. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/users/{id}/assignments/{assignment_id}/{action}", tag = "access",
    request_body(content = Option<RevokeInput>),
    params(("id" = Uuid, Path, description = "User id"), ("assignment_id" = Uuid, Path, description = "Assignment id"),
           ("action" = String, Path, description = "revoke | reactivate"), ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 200, description = "Revoked", body = User), (status = 403, description = "The role grants permissions the caller lacks"),
               (status = 409, description = "Already revoked, or a reactivation")),
    security(("bearer" = ["roles:grant"])))]
pub async fn assignment_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, assignment, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: OptionalJson<Value>,
) -> Result<Response, ApiError> {
    let uid = http::parse_uuid("user", &id)?;
    let aid = http::parse_uuid("assignment", &assignment)?;
    let expected = http::if_match(&headers)?;
    let path = format!("{BASE}/{uid}/assignments/{aid}/{action}");
    let command: MakeCommand = match action.as_str() {
        "revoke" => {
            let reason = body
                .value
                .and_then(|b| serde_json::from_value::<RevokeInput>(b).ok())
                .map(|b| b.reason)
                .ok_or_else(|| {
                    ApiError::validation("send { \"reason\": … }: say why it is revoked")
                        .with("field", "reason")
                })?;
            // The revoked role's permissions, as the tenant has them now.
            let user = state
                .services
                .load::<User>(&actor.ctx, uid)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no user with id {uid}")))?;
            let role = user
                .state
                .assignment(aid)
                .map(|a| a.role.clone())
                .ok_or_else(|| ApiError::not_found(format!("no assignment with id {aid}")))?;
            let role_permissions =
                access::role_permissions(&state.services, &actor.ctx, &role).await?;
            let granter = actor.granter();
            Box::new(move |_, now| {
                Ok(UserCommand::Revoke {
                    assignment_id: aid,
                    reason,
                    role_permissions,
                    granter,
                    now,
                })
            })
        }
        "reactivate" => Box::new(move |_, _| Ok(UserCommand::Reactivate { assignment_id: aid })),
        other => {
            return Err(ApiError::not_found(format!(
                "no action '{other}'; actions are: revoke, reactivate"
            )));
        }
    };
    run_user_command(
        &state,
        &actor,
        &headers,
        &path,
        &body.raw,
        uid,
        expected,
        (StatusCode::OK, false),
        command,
    )
    .await
}
