//! `/api/v1/exports/{kind}`: a kind's resources streamed as CSV, JSON or NDJSON, page by
//! page from the store (memory holds one page whatever the tenant's size). Needs
//! `exports:read` and the kind's read permission.

use crate::AppState;
use crate::auth::Actor;
use crate::bulk::{self, Format};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use salus_domain::bulk::Kind;
use std::collections::HashMap;

/// Export every patient, interaction, encounter or observation of the tenant, in id
/// (creation) order. CSV follows the column mapping of the README; JSON is one array and
/// NDJSON one line per resource, each the resource as the API shows it plus
/// `patient_identifier` (and `clinician_credential`, `department_code` for encounters).
/// Importing the file
/// into another tenant reproduces the data.
#[utoipa::path(get, path = "/api/v1/exports/{kind}", tag = "bulk",
    params(("kind" = String, Path, description = "patients | interactions | encounters | observations"),
           ("format" = Option<String>, Query, description = "csv (default) | json | ndjson")),
    responses((status = 200, description = "The file, streamed", content_type = "text/csv"),
              (status = 400, description = "Unknown format or parameter"), (status = 404, description = "Unknown kind")),
    security(("bearer" = ["exports:read"])))]
pub async fn export(
    State(state): State<AppState>,
    actor: Actor,
    Path(kind): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let kind = Kind::parse(&kind).map_err(|e| ApiError::not_found(e.to_string()))?;
    actor.require(kind.read_permission())?;
    if let Some(k) = params.keys().find(|k| k.as_str() != "format") {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{k}'; the parameter is: format"
        )));
    }
    let format = match params
        .get("format")
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
    {
        None => Format::Csv,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(format!(
                "format '{f}' is not one of {}",
                Format::ALL.join(", ")
            ))
        })?,
    };
    // Each page's patients are logged before its bytes go out (see `bulk::export_stream`);
    // this marks the request as having gone through the log.
    crate::access_log::record(
        &state,
        &actor,
        salus_store::access::AccessAction::Export,
        kind.resource_type(),
        [],
    )
    .await?;
    let a = &actor.access;
    let log = bulk::ExportLog {
        purpose: a.purpose.to_owned(),
        justification: a.recorded_justification(),
        break_glass: a.break_glass.is_some(),
        client: a.client.clone(),
    };
    let stream = bulk::export_stream(state.services.clone(), actor.ctx.clone(), kind, format, log);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        kind.as_str(),
        format.as_str()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
