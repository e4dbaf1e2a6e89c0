//! The audit trail over HTTP: `GET /api/v1/audit/events` (the AuditEvent of
//! requirements/000: each event with its aggregate's state before and after and a JSON
//! Patch between them), as JSON pages or a streamed CSV file (`format=csv`), and the CSV
//! writer the access-log reports share ([`csv_response`]).
//!
//! The states are patient data: every page (and every CSV batch) is written to the
//! data-access log before it goes out, one entry per patient of the page (action `search`,
//! resource type `audit_event`), with the request's purpose of use (`HOPERAT`, healthcare
//! operations, unless `X-Purpose-Of-Use` names another) and justification.

use crate::AppState;
use crate::access_log::{self, Access, AccessContext};
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use salus_domain::audit::AuditItem;
use salus_kernel::ActorId;
use salus_kernel::event::format_instant;
use salus_store::access::AccessAction;
use salus_store::audit::EventQuery;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// The resource type the access log records for reads of the audit trail.
pub const AUDIT_RESOURCE: &str = "audit_event";

/// Rows per batch of a CSV file.
const CSV_BATCH: u32 = 500;

/// How a report is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// `format` of a report's query (`json`, the default, or `csv`).
pub fn format_of(raw: &HashMap<String, String>) -> Result<Format, ApiError> {
    match raw
        .get("format")
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
    {
        None => Ok(Format::Json),
        Some(f) if f.eq_ignore_ascii_case("json") => Ok(Format::Json),
        Some(f) if f.eq_ignore_ascii_case("csv") => {
            if raw.contains_key("limit") {
                return Err(ApiError::bad_request(
                    "a CSV file holds every matching row: leave out limit (cursor may start it later)",
                ));
            }
            Ok(Format::Csv)
        }
        Some(f) => Err(ApiError::bad_request(format!(
            "format '{f}' is not one of json, csv"
        ))),
    }
}

/// An instant of a filter; a `+` of the offset that arrived as a space (unencoded in the
/// query string) is read as the `+` it was.
pub fn instant(field: &str, raw: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    http::parse_instant(field, &raw.trim().replace(' ', "+"))
}

/// The query parameters of an audit report: names other than `known` and the paging ones
/// (`format`, `limit`, `cursor`) are refused, values are trimmed and empty ones absent.
pub struct ReportParams<'a> {
    raw: &'a HashMap<String, String>,
}

impl<'a> ReportParams<'a> {
    pub fn new(raw: &'a HashMap<String, String>, known: &[&str]) -> Result<Self, ApiError> {
        if let Some(k) = raw.keys().find(|k| {
            !known.contains(&k.as_str()) && !["limit", "cursor", "format"].contains(&k.as_str())
        }) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{k}'; parameters are: {}, format, limit, cursor",
                known.join(", ")
            )));
        }
        Ok(Self { raw })
    }

    pub fn get(&self, k: &str) -> Option<&'a str> {
        self.raw.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn uuid(&self, k: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(k)
            .map(|v| {
                Uuid::parse_str(v).map_err(|_| ApiError::bad_request(format!("{k} must be a UUID")))
            })
            .transpose()
    }

    /// An instant filter ([`instant`]).
    pub fn instant(&self, k: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        self.get(k).map(|t| instant(k, t)).transpose()
    }

    /// The page size (1–500, default 100) and the seq cursor to continue after.
    pub fn page(&self) -> Result<(u32, Option<i64>), ApiError> {
        let limit = match self.get("limit") {
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("limit must be a whole number from 1 to 500")
                })?,
            None => 100,
        };
        let after = self
            .get("cursor")
            .map(|c| {
                c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::bad_request("cursor must be a next_cursor of this list")
                })
            })
            .transpose()?;
        Ok((limit, after))
    }
}

const KNOWN: &[&str] = &[
    "entity_type",
    "entity_id",
    "actor_id",
    "patient_id",
    "from",
    "to",
    "action",
];

fn word(field: &str, v: &str, extra: &[char]) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 100
        && v.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c)
        });
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} '{v}' is not a name of the log (lower-case letters, digits, '_'{})",
            if extra.is_empty() { "" } else { ", '.'" }
        )))
    }
}

/// The filters of an events query, its page size and cursor.
async fn parse(
    state: &AppState,
    actor: &Actor,
    raw: &HashMap<String, String>,
) -> Result<(EventQuery, Format), ApiError> {
    let params = ReportParams::new(raw, KNOWN)?;
    let format = format_of(raw)?;
    let (limit, after) = params.page()?;
    let from = params.instant("from")?;
    let to = params.instant("to")?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let streams = match params.uuid("patient_id")? {
        Some(p) => {
            Some(salus_domain::audit::patient_streams(&state.services, &actor.ctx, p).await?)
        }
        None => None,
    };
    Ok((
        EventQuery {
            stream_type: params
                .get("entity_type")
                .map(|t| word("entity_type", t, &[]))
                .transpose()?,
            stream_id: params.uuid("entity_id")?,
            streams,
            actor: params.uuid("actor_id")?.map(ActorId),
            event_type: params
                .get("action")
                .map(|a| word("action", a, &['.']))
                .transpose()?,
            from,
            to,
            after,
            before: None,
            newest_first: false,
            // One more than the page, to know whether more follow.
            limit: if format == Format::Csv {
                CSV_BATCH
            } else {
                limit + 1
            },
        },
        format,
    ))
}

/// The access context of a read of the audit trail: the request's headers, with
/// healthcare operations as the purpose when it names none.
pub(crate) fn audit_access(headers: &HeaderMap) -> Result<AccessContext, ApiError> {
    let mut access = AccessContext::from_headers(headers)?;
    if !headers.contains_key("x-purpose-of-use") {
        access.purpose = "HOPERAT";
    }
    Ok(access)
}

/// Log the patients of a page of the trail (before it is answered).
pub(crate) async fn log_items(
    state: &AppState,
    actor: &Actor,
    items: &[AuditItem],
) -> Result<(), ApiError> {
    let accesses: Vec<Access> = items
        .iter()
        .filter_map(|i| i.patient_id)
        .map(|patient| Access {
            patient,
            resource_id: None,
        })
        .collect();
    access_log::record(state, actor, AccessAction::Search, AUDIT_RESOURCE, accesses).await
}

fn item_json(i: &AuditItem) -> Value {
    let e = &i.event;
    json!({
        "audit_event_id": e.event_id,
        "seq": e.seq,
        "tenant_id": e.tenant_id.0,
        "entity_type": e.stream_type,
        "entity_id": e.stream_id,
        "version": e.version,
        "action": e.event_type,
        "schema_version": e.schema_version,
        "actor_id": e.actor_id.0,
        "timestamp": format_instant(&e.recorded_at),
        "occurred_at": format_instant(&e.occurred_at),
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "patient_id": i.patient_id,
        "resource_type": i.resource_type,
        "states": i.resource_type.is_some(),
        "payload": e.payload,
        "before_state": i.before,
        "after_state": i.after,
        "diff": i.diff,
        "hash": e.hash,
    })
}

const EVENT_COLUMNS: &[&str] = &[
    "audit_event_id",
    "seq",
    "timestamp",
    "occurred_at",
    "tenant_id",
    "entity_type",
    "entity_id",
    "version",
    "action",
    "actor_id",
    "correlation_id",
    "patient_id",
    "payload",
    "before_state",
    "after_state",
    "diff",
];

fn item_row(i: &AuditItem) -> Vec<String> {
    let e = &i.event;
    vec![
        e.event_id.to_string(),
        e.seq.to_string(),
        format_instant(&e.recorded_at),
        format_instant(&e.occurred_at),
        e.tenant_id.0.to_string(),
        e.stream_type.clone(),
        e.stream_id.to_string(),
        e.version.to_string(),
        e.event_type.clone(),
        e.actor_id.0.to_string(),
        e.correlation_id.to_string(),
        i.patient_id.map(|p| p.to_string()).unwrap_or_default(),
        e.payload.to_string(),
        i.before.to_string(),
        i.after.to_string(),
        i.diff.to_string(),
    ]
}

/// The audit trail: every change to every record, oldest first (ledger order), each with
/// the state of its aggregate before and after and an RFC 6902 JSON Patch between them.
/// Reading it is a read of patient data and is logged (see the module doc).
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit",
    params(("entity_type" = Option<String>, Query, description = "Only events of this aggregate type (patient, encounter, observation, user...)"),
           ("entity_id" = Option<Uuid>, Query, description = "Only events of this aggregate"),
           ("patient_id" = Option<Uuid>, Query, description = "Only events of this patient's record (its merge group) and of every record that belongs to the patient (encounters, observations, notes...)"),
           ("actor_id" = Option<Uuid>, Query, description = "Only events by this user"),
           ("from" = Option<String>, Query, description = "Recorded at or after (RFC 3339 with offset)"),
           ("to" = Option<String>, Query, description = "Recorded before (RFC 3339 with offset)"),
           ("action" = Option<String>, Query, description = "Only events of this type (patient.registered, encounter.started...)"),
           ("format" = Option<String>, Query, description = "json (default) | csv: every matching event as one streamed RFC 4180 file"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100 (json only)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [audit event], next_cursor }, or text/csv"),
              (status = 400, description = "A bad filter")),
    security(("bearer" = ["audit:read"])))]
pub async fn events(
    State(state): State<AppState>,
    mut actor: Actor,
    headers: HeaderMap,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    actor.access = audit_access(&headers)?;
    let (mut q, format) = parse(&state, &actor, &raw).await?;
    let items = salus_domain::audit::page(&state.services, &actor.ctx, &q).await?;
    match format {
        Format::Json => {
            let limit = q.limit.saturating_sub(1) as usize;
            let mut items = items;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|i| i.event.seq.to_string())
            } else {
                None
            };
            log_items(&state, &actor, &items).await?;
            let body: Vec<Value> = items.iter().map(item_json).collect();
            Ok(axum::Json(json!({ "items": body, "next_cursor": next })).into_response())
        }
        Format::Csv => {
            log_items(&state, &actor, &items).await?;
            let first: Vec<Vec<String>> = items.iter().map(item_row).collect();
            let cursor = full_batch(&items, |i| i.event.seq);
            let next = move |after: i64| {
                let (state, actor) = (state.clone(), actor.clone());
                q.after = Some(after);
                let q = q.clone();
                Box::pin(async move {
                    let items = salus_domain::audit::page(&state.services, &actor.ctx, &q).await?;
                    log_items(&state, &actor, &items).await?;
                    Ok((
                        items.iter().map(item_row).collect(),
                        full_batch(&items, |i| i.event.seq),
                    ))
                }) as BatchFuture
            };
            Ok(csv_response(
                "audit-events.csv",
                EVENT_COLUMNS,
                first,
                cursor,
                next,
            ))
        }
    }
}

/// The cursor after a batch when it was full (more may follow).
pub fn full_batch<T>(items: &[T], seq: impl Fn(&T) -> i64) -> Option<i64> {
    if items.len() >= CSV_BATCH as usize {
        items.last().map(seq)
    } else {
        None
    }
}

/// The rows per batch of the CSV files.
pub const fn csv_batch() -> u32 {
    CSV_BATCH
}

/// One batch of a CSV file: its rows and the cursor of the next batch, if any.
pub type BatchFuture =
    Pin<Box<dyn Future<Output = Result<(Vec<Vec<String>>, Option<i64>), ApiError>> + Send>>;

/// RFC 4180 text of `rows` (CRLF line ends, fields quoted when they need it).
pub fn csv_bytes(rows: &[Vec<String>]) -> Result<Vec<u8>, std::io::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for r in rows {
        w.write_record(r)?;
    }
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A streamed CSV file: the header, the first batch (already read, so that a failure
/// before any byte is a proper error response), then each batch `next` reads after the
/// cursor, until one is not full. A failure mid-file ends the stream with an error (the
/// client sees a broken transfer, never a silently short file).
pub fn csv_response<F>(
    filename: &str,
    header_row: &'static [&'static str],
    first: Vec<Vec<String>>,
    cursor: Option<i64>,
    next: F,
) -> Response
where
    F: FnMut(i64) -> BatchFuture + Send + 'static,
{
    let head: Vec<String> = header_row.iter().map(|h| (*h).to_owned()).collect();
    let mut rows = vec![head];
    rows.extend(first);
    let stream = csv_stream(rows, cursor, next);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

fn csv_stream<F>(
    first: Vec<Vec<String>>,
    cursor: Option<i64>,
    next: F,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    F: FnMut(i64) -> BatchFuture + Send + 'static,
{
    enum Stage {
        First(Vec<Vec<String>>, Option<i64>),
        After(i64),
        Done,
    }
    futures_util::stream::unfold(
        (Stage::First(first, cursor), next),
        |(stage, mut next)| async move {
            match stage {
                Stage::First(rows, cursor) => {
                    let stage = cursor.map(Stage::After).unwrap_or(Stage::Done);
                    Some((csv_bytes(&rows).map(Bytes::from), (stage, next)))
                }
                Stage::After(after) => match next(after).await {
                    Ok((rows, cursor)) => {
                        let stage = cursor.map(Stage::After).unwrap_or(Stage::Done);
                        Some((csv_bytes(&rows).map(Bytes::from), (stage, next)))
                    }
                    Err(e) => {
                        tracing::error!(error = %e.detail, "CSV report stopped");
                        Some((
                            Err(std::io::Error::other(format!(
                                "the file stopped: {}",
                                e.detail
                            ))),
                            (Stage::Done, next),
                        ))
                    }
                },
                Stage::Done => None,
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        let rows = vec![
            vec!["a".to_owned(), "b,c".to_owned()],
            vec!["say \"hi\"".to_owned(), "two\nlines".to_owned()],
        ];
        let text = String::from_utf8(csv_bytes(&rows).unwrap()).unwrap();
        assert_eq!(text, "a,\"b,c\"\r\n\"say \"\"hi\"\"\",\"two\nlines\"\r\n");
    }
}
