//! `/api/v1/roles` and `/api/v1/permissions`: the built-in roles (read-only), the tenant's
//! own roles (define, change with If-Match, history), and the permission list. Roles are
//! addressed by name. Every change clears the server's cache of users and roles.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::access::role::{RoleChange, RoleInput};
use salus_domain::access::{self, BUILTIN_ROLES, PERMISSIONS, Role, RoleCommand};
use salus_domain::service::Projected;
use serde_json::{Value, json};
use uuid::Uuid;

const BASE: &str = "/api/v1/roles";

fn builtin_view(r: &access::BuiltinRole) -> Value {
    json!({"name": r.name, "description": r.description, "permissions": r.permissions().names(), "builtin": true})
}

/// Every role: the built-in ones first (`builtin: true`, not editable), then the tenant's.
#[utoipa::path(get, path = "/api/v1/roles", tag = "access",
    responses((status = 200, description = "{ items }")),
    security(("bearer" = ["roles:read"])))]
pub async fn list(State(state): State<AppState>, actor: Actor) -> Result<Response, ApiError> {
    let mut items: Vec<Value> = BUILTIN_ROLES.iter().map(builtin_view).collect();
    let query = salus_store::SearchQuery {
        resource_type: Role::RESOURCE_TYPE.into(),
        filters: Vec::new(),
        after: None,
        limit: 1000,
        newest_first: false,
        order_by: None,
    };
    for row in state.services.store.search(&actor.ctx, &query).await? {
        let mut v = http::resource_json(&row);
        v["builtin"] = Value::Bool(false);
        items.push(v);
    }
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// Define a tenant role from permissions of the list (an unknown one is a 422 naming it;
/// one the caller lacks is a 403).
#[utoipa::path(post, path = "/api/v1/roles", tag = "access", request_body = RoleInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Defined", body = Role), (status = 403, description = "A permission the caller lacks"),
               (status = 409, description = "The name is taken (or built in)"), (status = 422, description = "Unknown permission or bad name")),
    security(("bearer" = ["roles:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<RoleInput>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let input = body.value;
    let granter = actor.granter();
    let resp = http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        state.services.create::<Role, _>(
            &actor.ctx,
            id,
            move |_, _| Ok(RoleCommand::Define { id, input, granter }),
            spec,
        )
    })
    .await;
    state.users.forget_all();
    resp
}

/// The tenant role named `name` (or with that id: the `Location` of a new role), or a 404.
async fn tenant_role(
    state: &AppState,
    actor: &Actor,
    name: &str,
) -> Result<salus_domain::service::Current<Role>, ApiError> {
    let found = match Uuid::parse_str(name) {
        Ok(id) => state.services.load::<Role>(&actor.ctx, id).await?,
        Err(_) => access::find_role(&state.services, &actor.ctx, name).await?,
    };
    found.ok_or_else(|| ApiError::not_found(format!("no role named '{name}'")))
}

/// One role by name.
#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "access",
    params(("name" = String, Path, description = "Role name (or id)")),
    responses((status = 200, description = "The role", body = Role), (status = 404, description = "No such role")),
    security(("bearer" = ["roles:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(b) = access::builtin(&name.to_ascii_lowercase()) {
        return Ok(axum::Json(builtin_view(b)).into_response());
    }
    let role = tenant_role(&state, &actor, &name).await?;
    let mut v = http::resource_json(&role.row);
    v["builtin"] = Value::Bool(false);
    Ok(http::with_etag(
        axum::http::StatusCode::OK,
        role.row.version,
        v,
    ))
}

/// Change a tenant role's description or permissions (built-in roles: 409). Needs If-Match.
#[utoipa::path(patch, path = "/api/v1/roles/{name}", tag = "access", request_body = RoleChange,
    params(("name" = String, Path, description = "Role name"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Changed", body = Role), (status = 403, description = "A permission the caller lacks"),
               (status = 409, description = "A built-in role"), (status = 412, description = "Stale If-Match"), (status = 422, description = "Unknown permission")),
    security(("bearer" = ["roles:write"])))]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: JsonBody<RoleChange>,
) -> Result<Response, ApiError> {
    if access::builtin(&name.to_ascii_lowercase()).is_some() {
        return Err(ApiError::new(
            "conflict",
            format!("'{name}' is a built-in role and cannot be changed; define a role of your own"),
        ));
    }
    let expected = http::if_match(&headers)?;
    let role = tenant_role(&state, &actor, &name).await?;
    let change = body.value;
    let granter = actor.granter();
    let result = state
        .services
        .execute::<Role, _>(
            &actor.ctx,
            role.row.id,
            expected,
            move |_, _| Ok(RoleCommand::Change { change, granter }),
            None,
        )
        .await;
    state.users.forget_all();
    let c = result?;
    Ok(http::respond(200, &c.row, BASE))
}

/// Every event of a tenant role, oldest first.
#[utoipa::path(get, path = "/api/v1/roles/{name}/history", tag = "access",
    params(("name" = String, Path, description = "Role name")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such tenant role")),
    security(("bearer" = ["roles:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let role = tenant_role(&state, &actor, &name).await?;
    http::history_resource::<Role>(&state, &actor, "role", &role.row.id.to_string()).await
}

/// Every permission Salus knows, and what it allows.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "access",
    responses((status = 200, description = "{ items: [{ name, description }] }")),
    security(("bearer" = ["roles:read"])))]
pub async fn permissions(actor: Actor) -> Response {
    let _ = actor;
    let items: Vec<Value> = PERMISSIONS
        .iter()
        .map(|(n, d)| json!({"name": n, "description": d}))
        .collect();
    axum::Json(json!({ "items": items })).into_response()
}
