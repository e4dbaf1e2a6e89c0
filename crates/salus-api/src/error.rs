//! The one error type at the HTTP edge. Every failure becomes RFC 9457 problem+json with a
//! stable `type` per kind (`urn:salus:problem:<kind>`). A 500 is a bug: it is logged with the
//! request id and the client sees no internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use salus_domain::service::ServiceError;
use salus_kernel::DomainError;
use salus_store::StoreError;
use serde_json::{Map, Value, json};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// Extra response headers (e.g. WWW-Authenticate).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// Every problem kind: (kind, status, title). Documented in `docs/problems.md`.
pub const KINDS: &[(&str, u16, &str)] = &[
    ("bad-request", 400, "The request is malformed"),
    ("unauthorized", 401, "Authentication is required"),
    ("forbidden", 403, "The actor lacks the permission"),
    (
        "care-relationship-required",
        403,
        "No care relationship with the patient",
    ),
    ("not-found", 404, "No such resource"),
    ("method-not-allowed", 405, "Method not allowed"),
    ("request-timeout", 408, "The request took too long"),
    ("conflict", 409, "The request conflicts with current data"),
    (
        "consent-incomplete",
        409,
        "Required consent clauses are not acknowledged",
    ),
    (
        "precondition-failed",
        412,
        "The resource changed since it was read",
    ),
    ("payload-too-large", 413, "The request body is too large"),
    ("unsupported-media-type", 415, "Unsupported content type"),
    ("validation", 422, "The request is not valid"),
    (
        "illegal-transition",
        422,
        "The action is not allowed in the current state",
    ),
    ("rule-violation", 422, "A business rule refuses the request"),
    (
        "idempotency-key-reused",
        422,
        "The idempotency key was used for another request",
    ),
    ("precondition-required", 428, "If-Match is required"),
    (
        "headers-too-large",
        431,
        "The request headers are too large",
    ),
    ("internal", 500, "Internal error"),
    ("integrity", 500, "Stored data failed an integrity check"),
    ("unavailable", 503, "The service is unavailable"),
];

impl ApiError {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        let (status, title) = KINDS
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, s, t)| {
                (
                    StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    *t,
                )
            })
            .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, "Internal error"));
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new("bad-request", detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new("validation", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new("unauthorized", detail);
        e.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"salus\""),
        ));
        e
    }

    pub fn forbidden(permission: &str) -> Self {
        Self::new(
            "forbidden",
            format!("this action needs the permission '{permission}'"),
        )
        .with("permission", permission)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new("not-found", what)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            "internal",
            "an internal error occurred; it has been logged with the request id",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:salus:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(m) = &mut body {
            for (k, v) in self.extra {
                m.insert(k, v);
            }
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match &e {
            DomainError::Invalid { field, .. } => {
                let mut err = ApiError::validation(e.to_string());
                if let Some(f) = field {
                    err = err.with("field", f.as_str());
                }
                err
            }
            DomainError::IllegalTransition {
                action,
                from,
                allowed,
            } => ApiError::new("illegal-transition", e.to_string())
                .with("action", action.as_str())
                .with("current_status", from.as_str())
                .with("allowed_from", allowed.split(", ").collect::<Vec<_>>()),
            DomainError::Rule(_) => ApiError::new("rule-violation", e.to_string()),
            DomainError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            DomainError::Conflict(_) => ApiError::new("conflict", e.to_string()),
            DomainError::Forbidden(_) => ApiError::new("forbidden", e.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Domain(d) => d.into(),
            ServiceError::NotFound { resource_type, id } => {
                ApiError::not_found(format!("{resource_type} {id} not found"))
            }
            ServiceError::Precondition { expected, current } => ApiError::new(
                "precondition-failed",
                format!("If-Match names version {expected} but the resource is at version {current}; read it again and retry"),
            )
            .with("current_version", current),
            ServiceError::Duplicate { scope, value, owner } => ApiError::new(
                "conflict",
                format!("{scope} '{value}' is already used by {owner}"),
            )
            .with("existing_id", owner.to_string()),
            ServiceError::IdTaken => ApiError::new(
                "conflict",
                "this id cannot be used for a new resource: choose another, or create it without one (POST)",
            ),
            ServiceError::IdempotencyKeyTaken => ApiError::new(
                "conflict",
                "a request with this Idempotency-Key is being processed; retry shortly",
            ),
            ServiceError::Corrupt(m) => {
                tracing::error!(problem = %m, "integrity failure");
                ApiError::new("internal", "stored data failed an integrity check; it has been logged")
            }
            ServiceError::Store(s) => s.into(),
            ServiceError::InGroup { source, .. } => (*source).into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::new("unavailable", "the database is unavailable; retry later")
            }
            StoreError::ShuttingDown => ApiError::new("unavailable", "the server is shutting down"),
            StoreError::InvalidWrite(m) | StoreError::Corrupt(m) => ApiError::internal(m),
            StoreError::InGroup { source, .. } => (*source).into(),
            conflict @ (StoreError::Conflict { .. }
            | StoreError::Duplicate { .. }
            | StoreError::StreamTaken
            | StoreError::IdempotencyKeyTaken) => ApiError::from(ServiceError::from(conflict)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KINDS;

    /// `docs/problems.md` lists exactly the kinds of [`KINDS`], each with its status.
    #[test]
    fn the_problem_types_page_matches_the_kinds() {
        let page = include_str!("../../../docs/problems.md");
        let rows: Vec<(String, u16)> = page
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let kind = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((kind.to_owned(), cells.get(2)?.parse().ok()?))
            })
            .collect();
        let kinds: Vec<(String, u16)> = KINDS
            .iter()
            .map(|(k, s, _)| ((*k).to_owned(), *s))
            .collect();
        assert_eq!(rows, kinds);
    }
}
