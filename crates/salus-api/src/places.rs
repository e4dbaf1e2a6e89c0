//! `/api/v1/departments` and `/api/v1/locations`: where care happens.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::staff::place::{
    self, Department, DepartmentInput, Location, LocationInput, PlaceCommand,
};
use salus_kernel::text::fold;
use salus_store::{Filter, FilterOp};
use std::collections::HashMap;
use uuid::Uuid;

const DEPARTMENTS: &str = "/api/v1/departments";
const LOCATIONS: &str = "/api/v1/locations";

fn active_filter(p: &ListParams) -> Result<Option<Filter>, ApiError> {
    match p.get("active").as_deref() {
        None => Ok(None),
        Some(v @ ("true" | "false")) => Ok(Some(eq("active", v))),
        Some(other) => Err(ApiError::bad_request(format!(
            "active '{other}' is not true or false"
        ))),
    }
}

/// Create a department (its code is unique in the tenant).
#[utoipa::path(post, path = "/api/v1/departments", tag = "places", request_body = DepartmentInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Created", body = Department), (status = 409, description = "The code is taken")), security(("bearer" = ["places:write"])))]
pub async fn create_department(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<DepartmentInput>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let input = body.value;
    http::create_resource(&state, &actor, &headers, DEPARTMENTS, &body.raw, |spec| {
        state.services.create::<Department, _>(
            &actor.ctx,
            id,
            move |_, _| {
                Ok(PlaceCommand::Create {
                    id,
                    input,
                    facts: true,
                })
            },
            spec,
        )
    })
    .await
}

/// Departments in creation order: by `code`, `name` (prefix), `active`.
#[utoipa::path(get, path = "/api/v1/departments", tag = "places",
    params(("code" = Option<String>, Query, description = "Code"), ("name" = Option<String>, Query, description = "Name prefix"), ("active" = Option<bool>, Query, description = "true | false"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["places:read"])))]
pub async fn search_departments(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["code", "name", "active"])?;
    let mut filters = Vec::new();
    if let Some(c) = p.get("code") {
        filters.push(eq("code", c.to_ascii_uppercase()));
    }
    if let Some(n) = p.get("name") {
        filters.push(Filter {
            also: Vec::new(),
            param: "name".into(),
            system: None,
            op: FilterOp::Prefix,
            value: fold(&n),
        });
    }
    filters.extend(active_filter(&p)?);
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query("department", filters, false))
        .await?;
    p.page(&state, &actor, rows).await
}

/// One department, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/departments/{id}", tag = "places", params(("id" = Uuid, Path, description = "Department id"), http::ReadParams),
    responses((status = 200, description = "The department", body = Department), (status = 404, description = "No such department")), security(("bearer" = ["places:read"])))]
pub async fn read_department(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Department>(
        &state,
        &actor,
        "department",
        &id,
        DEPARTMENTS,
        params.as_of.as_deref(),
    )
    .await
}

/// `deactivate` or `reactivate`. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/departments/{id}/{action}", tag = "places",
    params(("id" = Uuid, Path, description = "Department id"), ("action" = String, Path, description = "deactivate | reactivate"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Done", body = Department), (status = 422, description = "Not allowed in the current state")), security(("bearer" = ["places:write"])))]
pub async fn department_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "department",
        collection: DEPARTMENTS,
        actions: place::ACTIONS,
    };
    http::act_on_resource::<Department, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &[],
        |action, _| Ok(PlaceCommand::Toggle(action)),
    )
    .await
}

/// Create a location in an active department.
#[utoipa::path(post, path = "/api/v1/locations", tag = "places", request_body = LocationInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Created", body = Location), (status = 422, description = "Unknown department or kind")), security(("bearer" = ["places:write"])))]
pub async fn create_location(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<LocationInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, LOCATIONS, &body.raw, |spec| {
        place::create_location(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// Locations in creation order: by `department_id`, `kind`, `active`.
#[utoipa::path(get, path = "/api/v1/locations", tag = "places",
    params(("department_id" = Option<Uuid>, Query, description = "Department"), ("kind" = Option<String>, Query, description = "ward | room | bed | theatre | clinic | other"),
           ("active" = Option<bool>, Query, description = "true | false"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["places:read"])))]
pub async fn search_locations(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["department_id", "kind", "active"])?;
    let mut filters = Vec::new();
    if let Some(d) = p.get("department_id") {
        let id = Uuid::parse_str(&d)
            .map_err(|_| ApiError::bad_request("department_id must be a UUID"))?;
        filters.push(eq("department", id.to_string()));
    }
    if let Some(k) = p.get("kind") {
        filters.push(eq("kind", k));
    }
    filters.extend(active_filter(&p)?);
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query("location", filters, false))
        .await?;
    p.page(&state, &actor, rows).await
}

/// One location, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/locations/{id}", tag = "places", params(("id" = Uuid, Path, description = "Location id"), http::ReadParams),
    responses((status = 200, description = "The location", body = Location), (status = 404, description = "No such location")), security(("bearer" = ["places:read"])))]
pub async fn read_location(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Location>(
        &state,
        &actor,
        "location",
        &id,
        LOCATIONS,
        params.as_of.as_deref(),
    )
    .await
}

/// `deactivate` or `reactivate`. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/locations/{id}/{action}", tag = "places",
    params(("id" = Uuid, Path, description = "Location id"), ("action" = String, Path, description = "deactivate | reactivate"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Done", body = Location), (status = 422, description = "Not allowed in the current state")), security(("bearer" = ["places:write"])))]
pub async fn location_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "location",
        collection: LOCATIONS,
        actions: place::ACTIONS,
    };
    http::act_on_resource::<Location, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &[],
        |action, _| Ok(PlaceCommand::Toggle(action)),
    )
    .await
}
