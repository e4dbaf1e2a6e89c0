//! `/api/v1/outcomes` and `/api/v1/interactions` (requirements/004): the tenant's
//! configurable outcomes, and interactions recorded against patients with one of them,
//! corrected by `amend` and withdrawn by `enter-in-error`.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, finish};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::clinical::interaction::{self, InteractionAmendment, InteractionInput};
use salus_domain::clinical::outcome::{self, OutcomeInput};
use salus_domain::clinical::{
    Interaction, InteractionCommand, InteractionKind, InteractionStatus, Outcome, OutcomeCommand,
};
use salus_store::{Filter, FilterOp};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

const OUTCOMES: &str = "/api/v1/outcomes";
const INTERACTIONS: &str = "/api/v1/interactions";

/// The tenant's outcomes, least severe first. Retired ones only with `include_retired=true`.
#[utoipa::path(get, path = "/api/v1/outcomes", tag = "interactions",
    params(("include_retired" = Option<bool>, Query, description = "Also list retired outcomes")),
    responses((status = 200, description = "{ items: [Outcome] }")),
    security(("bearer" = ["interactions:read"])))]
pub async fn list_outcomes(
    State(state): State<AppState>,
    actor: Actor,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let include_retired = match q.get("include_retired").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "include_retired '{other}' is not true or false"
            )));
        }
    };
    let items: Vec<Outcome> = outcome::list(&state.services, &actor.ctx)
        .await?
        .into_iter()
        .filter(|o| include_retired || o.active)
        .collect();
    // The tenant's outcomes are no patient's data: nothing to log.
    crate::access_log::record(
        &state,
        &actor,
        salus_store::access::AccessAction::Search,
        "outcome",
        [],
    )
    .await?;
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// Define a new outcome.
#[utoipa::path(post, path = "/api/v1/outcomes", tag = "interactions",
    request_body = OutcomeInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Defined", body = Outcome), (status = 409, description = "The code is taken")),
    security(("bearer" = ["outcomes:write"])))]
pub async fn define_outcome(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<OutcomeInput>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let input = body.value;
    http::create_resource(&state, &actor, &headers, OUTCOMES, &body.raw, |spec| {
        state.services.create::<Outcome, _>(
            &actor.ctx,
            id,
            move |_, _| Ok(OutcomeCommand::Define { id, input }),
            spec,
        )
    })
    .await
}

/// Retire an outcome: interactions already recorded keep it; new ones may not use it.
#[utoipa::path(post, path = "/api/v1/outcomes/{id}/retire", tag = "interactions",
    params(("id" = Uuid, Path, description = "Outcome id"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Retired", body = Outcome), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["outcomes:write"])))]
pub async fn retire_outcome(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("outcome", &id)?;
    let expected = http::if_match(&headers)?;
    let result = state
        .services
        .execute::<Outcome, _>(
            &actor.ctx,
            id,
            expected,
            |_, _| Ok(OutcomeCommand::Retire),
            None,
        )
        .await;
    finish(&state, &actor, OUTCOMES, None, result.map(|c| (200, c.row))).await
}

/// Record an interaction with a patient.
#[utoipa::path(post, path = "/api/v1/interactions", tag = "interactions",
    request_body = InteractionInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Interaction), (status = 422, description = "Unknown patient, kind or outcome")),
    security(("bearer" = ["interactions:write"])))]
pub async fn record(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<InteractionInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, INTERACTIONS, &body.raw, |spec| {
        interaction::record(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// One interaction.
#[utoipa::path(get, path = "/api/v1/interactions/{id}", tag = "interactions",
    params(("id" = Uuid, Path, description = "Interaction id"), http::ReadParams),
    responses((status = 200, description = "The interaction", body = Interaction), (status = 404, description = "No such interaction")),
    security(("bearer" = ["interactions:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Interaction>(
        &state,
        &actor,
        "interaction",
        &id,
        INTERACTIONS,
        params.as_of.as_deref(),
    )
    .await
}

const LIST_KEYS: &[&str] = &["patient_id", "kind", "outcome", "status", "from", "to"];

/// Interactions, the latest `occurred_at` first (then the latest recorded), filtered by patient, kind, outcome,
/// status and the time they occurred (`from` inclusive, `to` exclusive, RFC 3339 with a time zone).
/// Interactions entered in error are left out unless `status` asks for them
/// (`status=entered_in_error`, or a comma-separated list that names it).
#[utoipa::path(get, path = "/api/v1/interactions", tag = "interactions",
    params(("patient_id" = Option<Uuid>, Query, description = "Only this patient's (following merges: the survivor and the records merged into it)"),
           ("kind" = Option<String>, Query, description = "visit | call | message | home_visit"),
           ("outcome" = Option<String>, Query, description = "An outcome code"),
           ("status" = Option<String>, Query, description = "final | amended | entered_in_error, or several separated by commas; default final,amended"),
           ("from" = Option<String>, Query, description = "occurred_at at or after"),
           ("to" = Option<String>, Query, description = "occurred_at before"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["interactions:read"])))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(raw, LIST_KEYS)?;
    let get = |k: &str| params.get(k);
    let filter = |param: &str, op: FilterOp, value: String| Filter {
        also: Vec::new(),
        param: param.into(),
        system: None,
        op,
        value,
    };
    let mut filters = Vec::new();
    if let Some(p) = get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &p).await?);
    }
    if let Some(k) = get("kind") {
        let kind = InteractionKind::parse(&k).map_err(|e| ApiError::bad_request(e.to_string()))?;
        filters.push(filter("kind", FilterOp::Eq, kind.as_str().into()));
    }
    if let Some(o) = get("outcome") {
        filters.push(filter("outcome", FilterOp::Eq, o.to_ascii_lowercase()));
    }
    let statuses: Vec<InteractionStatus> = match get("status") {
        Some(s) => s
            .split(',')
            .map(|one| {
                InteractionStatus::parse(one).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status '{one}' is not one of {}",
                        InteractionStatus::ALL.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        None => vec![InteractionStatus::Final, InteractionStatus::Amended],
    };
    filters.push(filter(
        "status",
        FilterOp::In(statuses.iter().map(|s| s.as_str().to_owned()).collect()),
        String::new(),
    ));
    filters.extend(http::instant_range(&params, "occurred_at")?);
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &params.query_ordered("interaction", filters, true, "occurred_at"),
        )
        .await?;
    params
        .page_ordered(&state, &actor, rows, |r| {
            http::doc_instant(r, "occurred_at")
        })
        .await
}

/// Every event of the interaction, oldest first.
#[utoipa::path(get, path = "/api/v1/interactions/{id}/history", tag = "interactions",
    params(("id" = Uuid, Path, description = "Interaction id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such interaction")),
    security(("bearer" = ["interactions:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Interaction>(&state, &actor, "interaction", &id).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionActionInput {
    /// Amend: the corrected kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Amend: the corrected time, RFC 3339 with a time zone.
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// Amend: the corrected outcome (an active code, or the current one).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Amend: the corrected notes ("" removes them).
    #[serde(default)]
    pub notes: Option<String>,
    /// Why: required for both actions.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `amend` (any of kind, occurred_at, outcome, notes corrected, with a reason; the fields
/// left out keep their values) or `enter-in-error` (with a reason). Needs
/// If-Match. Both are events: the values before stay in the history.
#[utoipa::path(post, path = "/api/v1/interactions/{id}/{action}", tag = "interactions",
    params(("id" = Uuid, Path, description = "Interaction id"), ("action" = String, Path, description = "amend | enter-in-error"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    request_body = InteractionActionInput,
    responses((status = 200, description = "Done", body = Interaction),
              (status = 422, description = "Missing reason or changes, an unknown outcome, or entered in error already"),
              (status = 412, description = "Stale If-Match"), (status = 428, description = "If-Match missing")),
    security(("bearer" = ["interactions:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<InteractionActionInput>,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "interaction",
        collection: INTERACTIONS,
        actions: interaction::ACTIONS,
    };
    let input = body.value.unwrap_or_default();
    let facts = if action == "amend" {
        Some(interaction::amend_facts(&state.services, &actor.ctx).await?)
    } else {
        None
    };
    http::act_on_resource::<Interaction, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |action, _| {
            let reason = input.reason.unwrap_or_default();
            match (action.as_str(), facts) {
                ("amend", Some(facts)) => Ok(InteractionCommand::Amend {
                    changes: InteractionAmendment {
                        kind: input.kind,
                        occurred_at: input.occurred_at,
                        outcome: input.outcome,
                        notes: input.notes,
                    },
                    reason,
                    facts,
                }),
                _ => Ok(InteractionCommand::EnterInError { reason }),
            }
        },
    )
    .await
}
