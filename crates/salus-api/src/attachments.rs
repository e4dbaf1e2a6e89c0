//! Attachments: `POST /api/v1/medical-records/{id}/attachments` streams the request body
//! into the content-addressed blob store (size limit, media type sniffed and checked
//! against the declared `Content-Type`); `GET /api/v1/attachments/{id}/content` re-hashes
//! the stored bytes before streaming them back.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, ListParams, eq};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use salus_domain::clinical::attachment::{self, Attachment};
use salus_domain::service::Projected;
use salus_kernel::Hash32;
use salus_store::blobs::BlobError;
use std::collections::HashMap;

const ATTACHMENTS: &str = "/api/v1/attachments";

pub(crate) fn blob_error(state: &AppState, e: BlobError) -> ApiError {
    match e {
        BlobError::TooLarge(n) => ApiError::new(
            "payload-too-large",
            format!("attachments are limited to {n} bytes"),
        ),
        BlobError::Empty => ApiError::validation("the attachment is empty"),
        BlobError::Upload(m) => ApiError::bad_request(format!("the upload did not complete: {m}")),
        BlobError::Corrupt(h) => {
            state.metrics.integrity_failures.inc();
            tracing::error!(sha256 = %h, "attachment content does not match its SHA-256: refusing to serve it");
            ApiError::new(
                "integrity",
                "the attachment failed its integrity check and is withheld; the incident is logged",
            )
        }
        BlobError::Missing(h) => {
            state.metrics.integrity_failures.inc();
            tracing::error!(sha256 = %h, "attachment content is missing from the blob store");
            ApiError::new(
                "integrity",
                "the attachment's content is missing; the incident is logged",
            )
        }
        BlobError::Io(m) => ApiError::internal(m),
    }
}

/// Attach a file: the body is the content, `Content-Type` its media type (pdf, png, jpeg,
/// gif, plain text, dicom), `?filename=` its name.
#[utoipa::path(post, path = "/api/v1/medical-records/{id}/attachments", tag = "attachments",
    params(("id" = Uuid, Path, description = "Record id"), ("filename" = String, Query, description = "File name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes, with its real Content-Type"),
    responses((status = 201, description = "Attached", body = Attachment), (status = 413, description = "Too large"), (status = 422, description = "Type not accepted or not what was declared")),
    security(("bearer" = ["attachments:write"])))]
pub async fn upload(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let record_id = http::parse_uuid("medical record", &id)?;
    let filename = q
        .get("filename")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("give the file name as ?filename="))?;
    let filename = attachment::parse_filename(&filename).map_err(ApiError::from)?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                "unsupported-media-type",
                "send the file's media type as Content-Type",
            )
        })?;
    let blob = state
        .blobs
        .put(body.into_data_stream())
        .await
        .map_err(|e| blob_error(&state, e))?;
    let current = attachment::attach(
        &state.services,
        &actor.ctx,
        record_id,
        filename,
        &blob,
        declared,
    )
    .await?;
    Ok(http::respond(201, &current.row, ATTACHMENTS))
}

/// An attachment's metadata.
#[utoipa::path(get, path = "/api/v1/attachments/{id}", tag = "attachments", params(("id" = Uuid, Path, description = "Attachment id"), http::ReadParams),
    responses((status = 200, description = "The attachment", body = Attachment), (status = 404, description = "No such attachment")), security(("bearer" = ["attachments:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Attachment>(
        &state,
        &actor,
        "attachment",
        &id,
        ATTACHMENTS,
        params.as_of.as_deref(),
    )
    .await
}

/// The attachments of a record, newest first.
#[utoipa::path(get, path = "/api/v1/medical-records/{id}/attachments", tag = "attachments",
    params(("id" = Uuid, Path, description = "Record id"), ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["attachments:read"])))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let record_id = http::parse_uuid("medical record", &id)?;
    let p = ListParams::parse(raw, &[])?;
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &p.query(
                Attachment::RESOURCE_TYPE,
                vec![eq("record", record_id.to_string())],
                true,
            ),
        )
        .await?;
    let mut rows = rows;
    rows.retain(|r| actor.sees("attachment", &r.doc));
    p.page(&state, &actor, rows).await
}

/// The attachment's bytes, after their SHA-256 is checked against the record.
#[utoipa::path(get, path = "/api/v1/attachments/{id}/content", tag = "attachments", params(("id" = Uuid, Path, description = "Attachment id")),
    responses((status = 200, description = "The content"), (status = 404, description = "No such attachment"), (status = 500, description = "The content failed its integrity check")),
    security(("bearer" = ["attachments:read"])))]
pub async fn content(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("attachment", &id)?;
    let loaded = state
        .services
        .load::<Attachment>(&actor.ctx, id)
        .await?
        .filter(|c| actor.sees("attachment", &c.row.doc))
        .ok_or_else(|| ApiError::not_found(format!("no attachment with id {id}")))?;
    crate::access_log::record_docs(
        &state,
        &actor,
        salus_store::access::AccessAction::Download,
        "attachment",
        [(loaded.row.id, &loaded.row.doc)],
    )
    .await?;
    let a = loaded.state;
    let hash = Hash32::from_hex(&a.sha256)
        .ok_or_else(|| ApiError::internal("stored attachment hash is malformed"))?;
    let (file, size) = state
        .blobs
        .open_verified(&hash)
        .await
        .map_err(|e| blob_error(&state, e))?;
    let mut resp = (
        StatusCode::OK,
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let safe: String = a
        .filename
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
