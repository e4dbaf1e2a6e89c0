//! Request plumbing shared by the handlers: JSON bodies, ids, ETag/If-Match, cursors and
//! Idempotency-Key replays.

use crate::AppState;
use crate::access_log::{self, Access};
use crate::auth::Actor;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use salus_domain::service::Idempotency;
use salus_kernel::canonical::to_canonical_string;
use salus_store::access::AccessAction;
use salus_store::{ResourceRow, ResourceText};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A JSON request body: checked content type, size limit, parse errors as problems. Keeps
/// the raw bytes for idempotency hashing.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

pub async fn read_body(req: Request, limit: usize) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            "payload-too-large",
            format!("the request body is larger than {limit} bytes or could not be read"),
        )
    })?;
    Ok((parts.headers, bytes))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::validation(format!("the body does not fit: {e}"))
        }
        _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (headers, raw) = read_body(req, state.config.body_limit).await?;
        if !is_json(&headers) {
            return Err(ApiError::new(
                "unsupported-media-type",
                "send the body as application/json",
            ));
        }
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// An optional JSON body (an empty body is `None`).
pub struct OptionalJson<T> {
    pub value: Option<T>,
    pub raw: Bytes,
}

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (headers, raw) = read_body(req, state.config.body_limit).await?;
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalJson { value: None, raw });
        }
        if !is_json(&headers) {
            return Err(ApiError::new(
                "unsupported-media-type",
                "send the body as application/json",
            ));
        }
        Ok(OptionalJson {
            value: Some(parse_json(&raw)?),
            raw,
        })
    }
}

pub fn parse_uuid(what: &str, s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::not_found(format!("no {what} with id '{s}'")))
}

pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` header names. Missing → 428. `*` matches any version.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let v = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::new(
            "precondition-required",
            "send If-Match with the ETag you read (e.g. If-Match: \"3\") so that concurrent changes are not lost",
        )
    })?;
    let text = v.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse::<i64>().map(Some).map_err(|_| {
        ApiError::new(
            "precondition-failed",
            format!("If-Match '{text}' is not an ETag of this resource"),
        )
    })
}

/// A JSON response with its ETag.
pub fn with_etag(status: StatusCode, version: i64, body: Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

pub fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// A cursor that also carries the ordering value of the row it points at.
pub fn encode_cursor_at(id: Uuid, value: &str) -> String {
    let mut bytes = id.as_bytes().to_vec();
    bytes.extend_from_slice(value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_cursor(s: &str) -> Result<Uuid, ApiError> {
    decode_cursor_parts(s).map(|(id, _)| id)
}

/// The id of a cursor, and its ordering value when it has one.
pub fn decode_cursor_parts(s: &str) -> Result<(Uuid, Option<String>), ApiError> {
    let bad = || ApiError::bad_request("cursor is not one this server issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    if bytes.len() < 16 {
        return Err(bad());
    }
    let id = Uuid::from_slice(&bytes[..16]).map_err(|_| bad())?;
    let value = if bytes.len() > 16 {
        Some(String::from_utf8(bytes[16..].to_vec()).map_err(|_| bad())?)
    } else {
        None
    };
    Ok((id, value))
}

/// The resource view: the projection plus version and timestamps.
pub fn resource_json(row: &ResourceRow) -> Value {
    with_row_fields(row.doc.clone(), row)
}

/// The document of `row` with the row's id, version and timestamps set.
fn with_row_fields(mut doc: Value, row: &ResourceRow) -> Value {
    if let Value::Object(m) = &mut doc {
        m.insert("id".into(), Value::String(row.id.to_string()));
        m.insert("version".into(), Value::from(row.version));
        m.insert(
            "created_at".into(),
            Value::String(salus_kernel::event::format_instant(&row.created_at)),
        );
        m.insert(
            "updated_at".into(),
            Value::String(salus_kernel::event::format_instant(&row.updated_at)),
        );
    }
    doc
}

/// The top-level members of a stored document, borrowed from its text, not parsed
/// further, in their stored order.
pub struct DocMembers<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> DocMembers<'a> {
    /// The member `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<'de> serde::Deserialize<'de> for DocMembers<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = DocMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(entry) = m.next_entry::<&'de str, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(DocMembers(out))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The members of a stored document. `None` when the text is not a JSON object with
/// plain (unescaped) keys, which documents this server wrote always are.
pub fn doc_members(doc: &str) -> Option<DocMembers<'_>> {
    serde_json::from_str(doc).ok()
}

/// The members the resource view sets from the row.
const ROW_FIELDS: [&str; 4] = ["id", "version", "created_at", "updated_at"];

/// [`resource_json`] rendered from the stored text: the row's id, version and timestamps,
/// then the document's other members as they are stored. No JSON value is built.
pub fn resource_text_json(row: &ResourceText, members: &DocMembers<'_>) -> String {
    let mut out = String::with_capacity(row.doc.len() + 128);
    out.push_str("{\"id\":\"");
    out.push_str(&row.id.to_string());
    out.push_str("\",\"version\":");
    out.push_str(&row.version.to_string());
    out.push_str(",\"created_at\":\"");
    out.push_str(&salus_kernel::event::format_instant(&row.created_at));
    out.push_str("\",\"updated_at\":\"");
    out.push_str(&salus_kernel::event::format_instant(&row.updated_at));
    out.push('"');
    for (k, v) in &members.0 {
        if ROW_FIELDS.contains(k) {
            continue;
        }
        // A key borrowed from JSON text has no character that needs an escape.
        out.push_str(",\"");
        out.push_str(k);
        out.push_str("\":");
        out.push_str(v.get());
    }
    out.push('}');
    out
}

/// A 200 JSON response with its ETag from a body already rendered.
pub fn respond_text(version: i64, body: String) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// How an `Idempotency-Key` request proceeds.
pub enum IdemStart {
    /// No key, or a key not seen before: run the request (remembering the response).
    Run(Option<(String, String)>),
    /// The key was seen with the same request: here is the first response.
    Replay(Response),
}

fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<Value>(body)
        .map(|v| to_canonical_string(&v).into_bytes())
        .unwrap_or_else(|_| body.to_vec());
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(&canonical);
    hex::encode(h.finalize())
}

/// The stored first response again. A replayed 201 names the created resource's location
/// under the collection the request was posted to, as the first answer did.
fn replay(record: &salus_store::IdempotencyRecord, path: &str) -> Response {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, axum::Json(record.body.clone())).into_response();
    if status == StatusCode::CREATED
        && let Some(id) = record.body.get("id").and_then(|v| v.as_str())
        && let Ok(loc) = HeaderValue::from_str(&format!("{path}/{id}"))
    {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if let Some(v) = record.resource_version {
        resp.headers_mut().insert(header::ETAG, etag(v));
    }
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

/// Look up the request's `Idempotency-Key`, if it has one. The key is scoped to the actor.
pub async fn idempotency_start(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<IdemStart, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(IdemStart::Run(None));
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| {
            !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1-255 visible ASCII characters")
        })?;
    let scoped = format!("{}:{key}", actor.user.id);
    let hash = request_hash(method, path, body);
    match state
        .services
        .store
        .idempotency(&actor.ctx, &scoped)
        .await?
    {
        Some(rec) if rec.request_hash == hash => Ok(IdemStart::Replay(replay(&rec, path))),
        Some(_) => Err(ApiError::new(
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )),
        None => Ok(IdemStart::Run(Some((scoped, hash)))),
    }
}

/// After a concurrent request took the key: replay its answer, or refuse.
pub async fn idempotency_settle(
    state: &AppState,
    actor: &Actor,
    key: &(String, String),
    path: &str,
) -> Result<Response, ApiError> {
    match state.services.store.idempotency(&actor.ctx, &key.0).await? {
        Some(rec) if rec.request_hash == key.1 => Ok(replay(&rec, path)),
        Some(_) => Err(ApiError::new(
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request; use a new key for a new request",
        )),
        None => Err(ApiError::new(
            "conflict",
            "a request with this Idempotency-Key is in flight; retry shortly",
        )),
    }
}

/// Build the service-level idempotency spec.
pub fn idempotency_spec<'a>(
    state: &AppState,
    key: Option<&(String, String)>,
    render: &'a (dyn Fn(&ResourceRow) -> (u16, Value) + Sync),
) -> Option<Idempotency<'a>> {
    key.map(|(k, h)| Idempotency {
        key: k.clone(),
        request_hash: h.clone(),
        ttl: state.config.idempotency_ttl,
        render,
    })
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Render a created resource (for the idempotency record and the response).
pub fn created(row: &ResourceRow) -> (u16, Value) {
    (201, resource_json(row))
}

/// Render a changed resource.
pub fn ok(row: &ResourceRow) -> (u16, Value) {
    (200, resource_json(row))
}

/// A resource response with its ETag; a 201 also names its `Location` in `collection`.
pub fn respond(status: u16, row: &ResourceRow, collection: &str) -> Response {
    respond_value(status, row, resource_json(row), collection)
}

/// [`respond`] with the body already made.
fn respond_value(status: u16, row: &ResourceRow, body: Value, collection: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = with_etag(code, row.version, body);
    if status == 201
        && let Ok(loc) = HeaderValue::from_str(&format!("{collection}/{}", row.id))
    {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// Map a command's result to the response; a concurrent request that took the same
/// Idempotency-Key is answered with that request's stored response.
pub async fn finish(
    state: &AppState,
    actor: &Actor,
    collection: &str,
    key: Option<(String, String)>,
    result: Result<(u16, ResourceRow), salus_domain::service::ServiceError>,
) -> Result<Response, ApiError> {
    use salus_domain::service::ServiceError;
    match result {
        Ok((status, mut row)) => {
            // The row is the caller's: its document is moved into the answer, not copied.
            let doc = std::mem::take(&mut row.doc);
            Ok(respond_value(
                status,
                &row,
                with_row_fields(doc, &row),
                collection,
            ))
        }
        Err(ServiceError::IdempotencyKeyTaken) => match key {
            Some(k) => idempotency_settle(state, actor, &k, collection).await,
            None => Err(ServiceError::IdempotencyKeyTaken.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The common shape of a create: replay or run under the request's Idempotency-Key, then
/// answer 201 with `Location` in `collection`. `run` gets the idempotency spec to pass to
/// the service.
pub async fn create_resource<A, F, Fut>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    collection: &str,
    raw_body: &[u8],
    run: F,
) -> Result<Response, ApiError>
where
    A: salus_domain::service::Projected,
    F: FnOnce(Option<Idempotency<'static>>) -> Fut,
    Fut: std::future::Future<
            Output = Result<salus_domain::service::Current<A>, salus_domain::service::ServiceError>,
        >,
{
    let key = match idempotency_start(state, actor, headers, "POST", collection, raw_body).await? {
        IdemStart::Replay(r) => return Ok(r),
        IdemStart::Run(k) => k,
    };
    let spec = idempotency_spec(state, key.as_ref(), &created);
    let result = run(spec).await;
    finish(state, actor, collection, key, result.map(|c| (201, c.row))).await
}

/// Which resource an action endpoint acts on.
pub struct ActionTarget<'a> {
    /// The resource's name in messages ("patient").
    pub what: &'a str,
    pub collection: &'a str,
    /// The actions the route accepts; any other is a 404 naming them.
    pub actions: &'a [&'a str],
}

/// The common shape of `POST /{collection}/{id}/{action}`: a known action, If-Match
/// required, Idempotency-Key honoured, `make` builds the command from the action name and
/// the current instant.
#[allow(clippy::too_many_arguments)]
pub async fn act_on_resource<A, F>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    target: ActionTarget<'_>,
    id: &str,
    action: String,
    raw_body: &[u8],
    make: F,
) -> Result<Response, ApiError>
where
    A: salus_domain::service::Projected,
    F: FnOnce(
        String,
        chrono::DateTime<chrono::Utc>,
    ) -> Result<A::Command, salus_kernel::DomainError>,
{
    let id = parse_uuid(target.what, id)?;
    if !target.actions.contains(&action.as_str()) {
        return Err(ApiError::not_found(format!(
            "no action '{action}'; actions are: {}",
            target.actions.join(", ")
        )));
    }
    let expected = if_match(headers)?;
    let path = format!("{}/{id}/{action}", target.collection);
    let key = match idempotency_start(state, actor, headers, "POST", &path, raw_body).await? {
        IdemStart::Replay(r) => return Ok(r),
        IdemStart::Run(k) => k,
    };
    let result = state
        .services
        .execute::<A, _>(
            &actor.ctx,
            id,
            expected,
            move |_, now| make(action, now),
            idempotency_spec(state, key.as_ref(), &ok),
        )
        .await;
    finish(
        state,
        actor,
        target.collection,
        key,
        result.map(|c| (200, c.row)),
    )
    .await
}

/// `?as_of=` of a read: the resource as it stood at that instant.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ReadParams {
    /// Show the resource as it stood at this instant (RFC 3339).
    pub as_of: Option<String>,
}

/// An instant given by a client (query parameter), with its time zone; a 400 names `field`.
pub fn parse_instant(field: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    salus_domain::clinical::interaction::parse_instant(field, s)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The stored row of a resource, now or `as_of` a past instant (folded from the log);
/// `what` names the resource in a 404.
pub async fn load_row<A: salus_domain::service::Projected>(
    state: &AppState,
    actor: &Actor,
    what: &str,
    id: &str,
    as_of: Option<&str>,
) -> Result<ResourceRow, ApiError> {
    let id = parse_uuid(what, id)?;
    let row = match as_of {
        Some(at) => {
            let at = parse_instant("as_of", at)?;
            state
                .services
                .as_of::<A>(&actor.ctx, id, at)
                .await?
                .map(|c| c.row)
        }
        None => state.services.row::<A>(&actor.ctx, id).await?,
    };
    let row = row
        .filter(|r| actor.sees(A::RESOURCE_TYPE, &r.doc))
        .ok_or_else(|| ApiError::not_found(format!("no {what} with id {id}")))?;
    access_log::record_docs(
        state,
        actor,
        AccessAction::Read,
        A::RESOURCE_TYPE,
        [(row.id, &row.doc)],
    )
    .await?;
    Ok(row)
}

/// The patient of a stored document given as text (without building the document).
fn patient_of_text(resource_type: &str, doc: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Ids {
        id: Option<Uuid>,
        patient_id: Option<Uuid>,
    }
    if !crate::auth::PATIENT_DATA.contains(&resource_type) {
        return None;
    }
    let ids: Ids = serde_json::from_str(doc).ok()?;
    if resource_type == "patient" {
        ids.id
    } else {
        ids.patient_id
    }
}

/// Whether a patient-context actor may see a stored document given as text.
fn sees_text(actor: &Actor, resource_type: &str, doc: &str) -> bool {
    actor.patient.is_none()
        || serde_json::from_str::<Value>(doc).is_ok_and(|v| actor.sees(resource_type, &v))
}

/// The common shape of a read by id: [`load_row`], answered with its ETag. A read of the
/// current state renders the stored text without parsing it ([`read_current`]).
pub async fn read_resource<A: salus_domain::service::Projected>(
    state: &AppState,
    actor: &Actor,
    what: &str,
    id: &str,
    collection: &str,
    as_of: Option<&str>,
) -> Result<Response, ApiError> {
    if as_of.is_none() {
        let row = read_current::<A>(state, actor, what, id).await?;
        return Ok(match doc_members(&row.doc) {
            Some(members) => respond_text(row.version, resource_text_json(&row, &members)),
            None => respond(200, &parse_text_row::<A>(row)?, collection),
        });
    }
    let row = load_row::<A>(state, actor, what, id, as_of).await?;
    Ok(respond(200, &row, collection))
}

/// The current stored row of a resource as text; `what` names the resource in a 404.
pub async fn read_current<A: salus_domain::service::Projected>(
    state: &AppState,
    actor: &Actor,
    what: &str,
    id: &str,
) -> Result<ResourceText, ApiError> {
    let id = parse_uuid(what, id)?;
    let row = state
        .services
        .store
        .resource_text(&actor.ctx, A::RESOURCE_TYPE, id)
        .await?
        .filter(|r| sees_text(actor, A::RESOURCE_TYPE, &r.doc))
        .ok_or_else(|| ApiError::not_found(format!("no {what} with id {id}")))?;
    let patient = patient_of_text(A::RESOURCE_TYPE, &row.doc).map(|patient| Access {
        patient,
        resource_id: Some(row.id),
    });
    access_log::record(state, actor, AccessAction::Read, A::RESOURCE_TYPE, patient).await?;
    Ok(row)
}

/// A text row as a [`ResourceRow`] (its document parsed).
pub fn parse_text_row<A: salus_domain::service::Projected>(
    row: ResourceText,
) -> Result<ResourceRow, ApiError> {
    let doc = serde_json::from_str(&row.doc).map_err(ApiError::internal)?;
    Ok(ResourceRow {
        resource_type: A::RESOURCE_TYPE.to_owned(),
        id: row.id,
        version: row.version,
        doc,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Every event of a resource's stream, oldest first, as `{ id, items }`.
pub async fn history_resource<A: salus_domain::service::Projected>(
    state: &AppState,
    actor: &Actor,
    what: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let id = parse_uuid(what, id)?;
    if actor.patient.is_some() || crate::auth::PATIENT_DATA.contains(&A::RESOURCE_TYPE) {
        // A patient-context token sees the history of its patient's data only; the read of
        // a patient's data is logged (as a read of the record) before it is answered.
        load_row::<A>(state, actor, what, &id.to_string(), None).await?;
    }
    let events = state.services.history::<A>(&actor.ctx, id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no {what} with id {id}")));
    }
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "event_id": e.event_id,
                "event_type": e.event_type,
                "schema_version": e.schema_version,
                "occurred_at": salus_kernel::event::format_instant(&e.occurred_at),
                "recorded_at": salus_kernel::event::format_instant(&e.recorded_at),
                "actor_id": e.actor_id,
                "correlation_id": e.correlation_id,
                "data": e.payload,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "id": id, "items": items })).into_response())
}

/// The query parameters of a list endpoint, checked against the ones it knows.
pub struct ListParams {
    raw: std::collections::HashMap<String, String>,
    pub limit: u32,
    pub after: Option<Uuid>,
    /// The ordering value carried by the cursor (ordered lists).
    pub after_value: Option<String>,
}

impl ListParams {
    /// Refuse unknown parameters (naming the known ones, plus `limit` and `cursor`), read
    /// `limit` (1-200, default 50) and `cursor`.
    pub fn parse(
        raw: std::collections::HashMap<String, String>,
        known: &[&str],
    ) -> Result<Self, ApiError> {
        if let Some(k) = raw
            .keys()
            .find(|k| !known.contains(&k.as_str()) && *k != "limit" && *k != "cursor")
        {
            return Err(ApiError::bad_request(format!(
                "unknown parameter '{k}'; parameters are: {}, limit, cursor",
                known.join(", ")
            )));
        }
        let get = |k: &str| {
            raw.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let limit = match get("limit") {
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=200).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("limit must be a whole number from 1 to 200")
                })?,
            None => 50,
        };
        let (after, after_value) = match get("cursor") {
            Some(c) => {
                let (id, value) = decode_cursor_parts(&c)?;
                (Some(id), value)
            }
            None => (None, None),
        };
        Ok(Self {
            raw,
            limit,
            after,
            after_value,
        })
    }

    /// A parameter's trimmed value, if given and not empty.
    pub fn get(&self, key: &str) -> Option<String> {
        self.raw
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The store query for one page (one row more than the page, to know if more follow).
    pub fn query(
        &self,
        resource_type: &str,
        filters: Vec<salus_store::Filter>,
        newest_first: bool,
    ) -> salus_store::SearchQuery {
        salus_store::SearchQuery {
            resource_type: resource_type.into(),
            filters,
            after: self.after,
            limit: self.limit + 1,
            newest_first,
            order_by: None,
        }
    }

    /// The store query for one page ordered by search parameter `order_param`.
    pub fn query_ordered(
        &self,
        resource_type: &str,
        filters: Vec<salus_store::Filter>,
        newest_first: bool,
        order_param: &str,
    ) -> salus_store::SearchQuery {
        let mut q = self.query(resource_type, filters, newest_first);
        q.order_by = Some(salus_store::OrderBy {
            param: order_param.into(),
            after_value: self.after_value.clone(),
        });
        q
    }

    /// `{ items, next_cursor }` from the rows found by [`ListParams::query`], once the
    /// page's patients are in the access log.
    pub async fn page(
        &self,
        state: &AppState,
        actor: &Actor,
        rows: Vec<ResourceRow>,
    ) -> Result<Response, ApiError> {
        self.page_ordered(state, actor, rows, |_| None).await
    }

    /// Like [`ListParams::page`] for [`ListParams::query_ordered`]: `value_of` gives a row's
    /// ordering value (exactly as in its search row) for the next cursor.
    pub async fn page_ordered(
        &self,
        state: &AppState,
        actor: &Actor,
        mut rows: Vec<ResourceRow>,
        value_of: impl Fn(&ResourceRow) -> Option<String>,
    ) -> Result<Response, ApiError> {
        let next = if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(|r| match value_of(r) {
                Some(v) => encode_cursor_at(r.id, &v),
                None => encode_cursor(r.id),
            })
        } else {
            None
        };
        if let Some(first) = rows.first() {
            let resource_type = first.resource_type.clone();
            access_log::record_docs(
                state,
                actor,
                AccessAction::Search,
                &resource_type,
                rows.iter().map(|r| (r.id, &r.doc)),
            )
            .await?;
        } else {
            access_log::record(state, actor, AccessAction::Search, "", []).await?;
        }
        let items: Vec<Value> = rows.iter().map(resource_json).collect();
        Ok(axum::Json(serde_json::json!({ "items": items, "next_cursor": next })).into_response())
    }
}

/// `system|code`, or a bare code in any system, as a token filter on `param`.
pub fn token(param: &str, raw: &str) -> salus_store::Filter {
    match raw.split_once('|') {
        Some((system, code)) => salus_store::Filter {
            also: Vec::new(),
            param: param.into(),
            system: Some(system.into()),
            op: salus_store::FilterOp::Eq,
            value: code.into(),
        },
        None => eq(param, raw),
    }
}

/// The list's `from` (inclusive) and `to` (exclusive) instants as filters on `param`.
pub fn instant_range(p: &ListParams, param: &str) -> Result<Vec<salus_store::Filter>, ApiError> {
    let mut out = Vec::new();
    for (key, op) in [
        ("from", salus_store::FilterOp::Ge),
        ("to", salus_store::FilterOp::Lt),
    ] {
        if let Some(t) = p.get(key) {
            let at = parse_instant(key, &t)?;
            out.push(salus_store::Filter {
                also: Vec::new(),
                param: param.into(),
                system: None,
                op,
                value: salus_kernel::event::format_instant(&at),
            });
        }
    }
    Ok(out)
}

/// A row's instant field in the text form of its search row (for value cursors).
pub fn doc_instant(row: &ResourceRow, field: &str) -> Option<String> {
    row.doc[field]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| salus_kernel::event::format_instant(&t.with_timezone(&chrono::Utc)))
}

/// The merge group of a list's `patient_id` (a 400 when it is not a UUID).
pub async fn patient_group(
    state: &AppState,
    actor: &Actor,
    raw: &str,
) -> Result<Vec<Uuid>, ApiError> {
    let id = Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::bad_request("patient_id must be a UUID"))?;
    let group =
        salus_domain::registry::patient::merge_group(&state.services, &actor.ctx, id).await?;
    // A patient-context token lists its own patient's data only: another is not there.
    if let Some(own) = actor.patient
        && !group.contains(&own)
    {
        return Err(ApiError::not_found(format!("no patient with id {id}")));
    }
    Ok(group)
}

/// The `patient` filter of a list's `patient_id`, following merges: the patient's whole
/// merge group ([`salus_domain::registry::patient::merge_group`]), so that asking for a
/// survivor also lists what was recorded against the records merged into it, and asking for
/// a merged record gives its survivor's list. A 400 when `raw` is not a UUID.
pub async fn patient_filter(
    state: &AppState,
    actor: &Actor,
    raw: &str,
) -> Result<salus_store::Filter, ApiError> {
    let group = patient_group(state, actor, raw).await?;
    Ok(salus_store::Filter {
        also: Vec::new(),
        param: "patient".into(),
        system: None,
        op: salus_store::FilterOp::In(group.iter().map(Uuid::to_string).collect()),
        value: String::new(),
    })
}

/// An equality filter on a search parameter.
pub fn eq(param: &str, value: impl Into<String>) -> salus_store::Filter {
    salus_store::Filter {
        also: Vec::new(),
        param: param.into(),
        system: None,
        op: salus_store::FilterOp::Eq,
        value: value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7396_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1]});
        merge_patch(&mut t, &json!({"a": {"b": "c"}}));
        assert_eq!(t, json!({"a": {"b": "c"}}));
    }

    #[test]
    fn if_match_reads_strong_and_weak_tags_and_star() {
        let mut h = HeaderMap::new();
        assert!(if_match(&h).is_err());
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"7\""));
        assert_eq!(if_match(&h).unwrap(), Some(7));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h).unwrap(), None);
    }

    #[test]
    fn text_rendering_equals_the_value_rendering() {
        let doc = json!({"id": "stale", "name": [{"family": "Müller", "given": ["Zoë \"Z\""]}],
                         "merged_into": null, "n": 1.5, "tags": []});
        let row = ResourceRow {
            resource_type: "patient".into(),
            id: Uuid::now_v7(),
            version: 3,
            doc: doc.clone(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let text = ResourceText {
            id: row.id,
            version: row.version,
            doc: doc.to_string(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        let members = doc_members(&text.doc).expect("an object with plain keys");
        let rendered: Value = serde_json::from_str(&resource_text_json(&text, &members)).unwrap();
        assert_eq!(rendered, resource_json(&row));
        assert_eq!(rendered["id"], row.id.to_string());
        assert!(doc_members("[1]").is_none());
        assert!(
            doc_members(r#"{"a\u0062": 1}"#).is_none(),
            "escaped keys take the slow path"
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(decode_cursor("!!").is_err());
    }
}
