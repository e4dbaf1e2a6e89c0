//! `/api/v1/imports`: start a bulk import (the file is the body) as an asynchronous job and
//! follow it. The body is streamed to a file in the data directory (size limit, SHA-256 for
//! the Idempotency-Key), its start is checked (a CSV header that fits the mapping, a JSON
//! array), the job is recorded, and the rows run in the background through the domain's
//! import engine; the job's report (counts, the first errors) is stored when it ends.
//!
//! Needs `imports:write` and the kind's write permission (`patients:write`, ...).

use crate::AppState;
use crate::auth::Actor;
use crate::bulk::{self, Format};
use crate::error::ApiError;
use crate::http::{self, IdemStart};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use salus_domain::bulk::Kind;
use salus_domain::bulk::import::{ImportOptions, Progress};
use salus_domain::bulk::job::{self, ImportJob, JobSpec, JobStatus};
use salus_store::ResourceRow;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

const BASE: &str = "/api/v1/imports";
const PARAMS: &[&str] = &["kind", "format", "dry_run", "all_or_nothing"];

fn flag(params: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match params.get(key).map(|v| v.trim()) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} '{other}' is not true or false"
        ))),
    }
}

/// The job as the API shows it: the stored job, with live counts while it runs here, or
/// `interrupted` when it was running on a server that stopped.
fn job_view(state: &AppState, row: &ResourceRow) -> Value {
    let mut doc = http::resource_json(row);
    if doc["status"] == "running" {
        match state.jobs.get(row.id) {
            Some(p) => {
                doc["counts"] = json!(p.counts());
                doc["progress"] = json!({
                    "bytes_read": p.bytes_read.load(Ordering::Relaxed),
                    "bytes_total": p.bytes_total.load(Ordering::Relaxed),
                    "validating": p.validating.load(Ordering::Relaxed),
                });
            }
            None => doc["status"] = json!(JobStatus::Interrupted.as_str()),
        }
    }
    doc
}

/// Where the full error report of a job is kept.
fn errors_path(state: &AppState, id: Uuid) -> std::path::PathBuf {
    state.config.import_dir.join(format!("{id}.errors.csv"))
}

fn accepted(row: &ResourceRow) -> (u16, Value) {
    (202, http::resource_json(row))
}

/// Stream the body to `path`, at most `limit` bytes; returns its size and SHA-256 (hex).
async fn spool(body: Body, path: &std::path::Path, limit: u64) -> Result<(u64, String), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(ApiError::internal)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::new(
                "payload-too-large",
                format!("the import file is larger than {limit} bytes"),
            ));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    Ok((size, hex::encode(hash.finalize())))
}

/// Removes the spooled file unless told to keep it.
struct Spooled(Option<std::path::PathBuf>);

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Start an import job. The body is the file: `text/csv` (a header row, then one record
/// per row; columns in the README), `application/json` (an array of records) or
/// `application/x-ndjson` (one record per line); `format` overrides the content type.
/// Answers 202 with the job; follow it at its `Location`.
#[utoipa::path(post, path = "/api/v1/imports", tag = "bulk",
    params(("kind" = String, Query, description = "patients | interactions | encounters | observations"),
           ("format" = Option<String>, Query, description = "csv | json | ndjson (default: from Content-Type)"),
           ("dry_run" = Option<bool>, Query, description = "Check every row and report; write nothing"),
           ("all_or_nothing" = Option<bool>, Query, description = "Write nothing unless every row passes"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same file and parameters")),
    request_body(content = String, content_type = "text/csv", description = "The file (also application/json or application/x-ndjson)"),
    responses((status = 202, description = "Accepted: the job", body = ImportJob),
              (status = 400, description = "Unknown parameter or kind"), (status = 413, description = "File too large"),
              (status = 415, description = "Unknown format"), (status = 422, description = "The file's header or start does not fit")),
    security(("bearer" = ["imports:write"])))]
pub async fn start(
    State(state): State<AppState>,
    actor: Actor,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(k) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{k}'; parameters are: {}",
            PARAMS.join(", ")
        )));
    }
    let kind = Kind::parse(params.get("kind").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    actor.require(kind.write_permission())?;
    let format = match params.get("format") {
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(format!(
                "format '{f}' is not one of {}",
                Format::ALL.join(", ")
            ))
        })?,
        None => headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_media_type)
            .ok_or_else(|| {
                ApiError::new(
                    "unsupported-media-type",
                    "send the file as text/csv, application/json or application/x-ndjson (or name it with ?format=)",
                )
            })?,
    };
    let dry_run = flag(&params, "dry_run")?;
    let all_or_nothing = flag(&params, "all_or_nothing")?;

    let dir = state.config.import_dir.clone();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let path = dir.join(format!("{}.{}", Uuid::now_v7(), format.as_str()));
    let mut spooled = Spooled(Some(path.clone()));
    let (bytes, digest) = spool(body, &path, state.config.import_limit).await?;

    // The key covers the parameters and the file's digest, never the file itself.
    let material = format!(
        "kind={}&format={}&dry_run={dry_run}&all_or_nothing={all_or_nothing}\n{digest}",
        kind.as_str(),
        format.as_str()
    );
    let key =
        match http::idempotency_start(&state, &actor, &headers, "POST", BASE, material.as_bytes())
            .await?
        {
            IdemStart::Replay(r) => return Ok(r),
            IdemStart::Run(k) => k,
        };
    bulk::check_file(&path, format, kind)
        .await
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let spec = JobSpec {
        kind,
        format: format.as_str().to_owned(),
        dry_run,
        all_or_nothing,
        bytes,
    };
    let started = job::start(
        &state.services,
        &actor.ctx,
        spec,
        http::idempotency_spec(&state, key.as_ref(), &accepted),
    )
    .await;
    let job = match started {
        Ok(job) => job,
        Err(salus_domain::service::ServiceError::IdempotencyKeyTaken) => {
            if let Some(k) = &key {
                return http::idempotency_settle(&state, &actor, k, BASE).await;
            }
            return Err(salus_domain::service::ServiceError::IdempotencyKeyTaken.into());
        }
        Err(e) => return Err(e.into()),
    };
    let id = job.row.id;
    let progress = Arc::new(Progress::default());
    progress.bytes_total.store(bytes, Ordering::Relaxed);
    state.jobs.insert(id, progress.clone());
    let mut options = ImportOptions::new(kind);
    options.dry_run = dry_run;
    options.all_or_nothing = all_or_nothing;
    // The answer shows the job as it starts (a small file may be done before it is sent).
    let view = job_view(&state, &job.row);
    let (services, ctx, jobs) = (
        state.services.clone(),
        actor.ctx.clone(),
        state.jobs.clone(),
    );
    let file = spooled.0.take();
    let report_path = errors_path(&state, id);
    tokio::spawn(async move {
        let _file = Spooled(file);
        // Every row error, beyond the first 1000 the job keeps (GET .../errors).
        let mut errors = csv::Writer::from_path(&report_path)
            .map_err(|e| tracing::warn!(job = %id, error = %e, "no error report file"))
            .ok();
        if let Some(w) = errors.as_mut() {
            let _ = w.write_record(["row", "field", "reason"]);
        }
        let mut on_error = |e: &salus_domain::bulk::RowError| {
            if let Some(w) = errors.as_mut() {
                let _ = w.write_record([
                    e.row.to_string(),
                    e.field.clone().unwrap_or_default(),
                    e.reason.clone(),
                ]);
            }
        };
        let result = bulk::import_file(
            &services,
            &ctx,
            &path,
            format,
            &options,
            progress,
            &mut on_error,
        )
        .await;
        if let Some(mut w) = errors {
            let _ = w.flush();
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => salus_domain::bulk::import::Report {
                failure: Some(e.to_string()),
                ..Default::default()
            },
        };
        tracing::info!(job = %id, rows = report.counts.rows, failed = report.counts.failed, "import finished");
        if let Err(e) = job::finish(&services, &ctx, id, &report).await {
            tracing::error!(job = %id, error = %e, "the import's report could not be stored");
        }
        jobs.remove(id);
    });
    let mut resp = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("{BASE}/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// An import job: status (running, completed, failed, interrupted), counts (rows, created,
/// updated, unchanged, failed), live progress while it runs, and the error report (row,
/// field, reason: the first 1000, `errors_omitted` counts the rest).
#[utoipa::path(get, path = "/api/v1/imports/{id}", tag = "bulk",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = ImportJob), (status = 404, description = "No such job")),
    security(("bearer" = ["imports:write"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("import job", &id)?;
    let load = || async {
        state
            .services
            .row::<ImportJob>(&actor.ctx, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no import job with id {id}")))
    };
    let mut view = job_view(&state, &load().await?);
    if view["status"] == JobStatus::Interrupted.as_str() {
        // The job may have finished between the read and the look at the running jobs:
        // its final state is stored before it leaves them, so a second read sees it.
        view = job_view(&state, &load().await?);
    }
    Ok(axum::Json(view).into_response())
}

/// Every row error of a job as CSV (`row,field,reason`), the first 1000 of which the job
/// itself lists. Kept by the server that ran the job, in its data directory.
#[utoipa::path(get, path = "/api/v1/imports/{id}/errors", tag = "bulk",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The error report", content_type = "text/csv"), (status = 404, description = "No such job, or its report is not on this server")),
    security(("bearer" = ["imports:write"])))]
pub async fn errors(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("import job", &id)?;
    if state
        .services
        .row::<ImportJob>(&actor.ctx, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no import job with id {id}")));
    }
    let file = tokio::fs::File::open(errors_path(&state, id))
        .await
        .map_err(|_| {
            ApiError::not_found(format!(
                "the full error report of job {id} is not on this server; the job lists its first errors"
            ))
        })?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(resp)
}

/// Remove import files left by a server that stopped while its jobs ran (their jobs show
/// `interrupted`); error reports stay.
pub fn clean_import_dir(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let orphan = name.split_once('.').is_some_and(|(stem, ext)| {
            Uuid::parse_str(stem).is_ok() && Format::parse(ext).is_some()
        });
        if orphan {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_removes_left_over_uploads_and_keeps_error_reports() {
        let dir = std::env::temp_dir().join(format!("salus-imports-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let id = Uuid::now_v7();
        for name in [
            format!("{id}.csv"),
            format!("{id}.ndjson"),
            format!("{id}.errors.csv"),
            "stdin-upload".to_owned(),
        ] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        clean_import_dir(&dir);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [format!("{id}.errors.csv"), "stdin-upload".to_owned()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
