//! The route guard: every route declares the permission it needs, and nothing else decides.
//!
//! A handler's `#[utoipa::path]` names its permission as the scope of its bearer security
//! requirement (`security(("bearer" = ["patients:read"]))`), so the OpenAPI document shows
//! it. [`RouteTable::from_openapi`] reads those declarations from the document the router
//! is built with; [`guard`] runs before every route's handler, authenticates the request
//! and refuses it (403) unless the actor holds the route's permission. A route that declares
//! none and is not on [`PUBLIC`] is refused (500: a bug, and a test walks the table so it
//! never ships). Public routes take no token at all.
//!
//! Patient-context tokens (claim `patient`) are read-only and their lists are confined to
//! their patient: the guard adds (or checks) `patient_id` on every list that takes one, and
//! refuses lists of patient data that do not.

use crate::AppState;
use crate::auth::{self, Actor};
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use salus_domain::access::Permission;
use std::collections::HashMap;
use std::sync::Arc;

/// Routes anyone may call, without a token.
pub const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/v1/openapi.json"),
    // FHIR clients read the CapabilityStatement before they authenticate (SMART App Launch).
    ("GET", "/fhir/R4/metadata"),
];

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Permission(Permission),
    /// No declaration (or one naming no known permission): refused.
    Undeclared,
}

/// How a route treats a patient-context token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatientScope {
    /// Not patient data, or a read by id (the handler checks the resource's patient).
    Open,
    /// A list taking `patient_id`: confined to the token's patient.
    ListByPatient,
    /// A list of patient data without `patient_id`: refused.
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct RouteRule {
    access: Access,
    patient: PatientScope,
}

/// Every route's rule, by method and path pattern (`/api/v1/patients/{id}`).
#[derive(Debug, Default)]
pub struct RouteTable {
    /// By path pattern, then method (looked up by the matched path without copying it).
    routes: HashMap<String, Vec<(Method, RouteRule)>>,
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Permission domains whose lists are patient data.
const PATIENT_DOMAINS: &[&str] = &[
    "patients",
    "interactions",
    "encounters",
    "observations",
    "procedures",
    "conditions",
    "allergies",
    "medical_records",
    "notes",
    "attachments",
    "consents",
    "fhir_resources",
];

impl RouteTable {
    /// The declarations of every operation of `doc` (the router's own document), plus the
    /// public routes.
    pub fn from_openapi(doc: &serde_json::Value) -> Self {
        let mut routes: HashMap<String, Vec<(Method, RouteRule)>> = HashMap::new();
        for (method, path, access, takes_patient) in declarations(doc) {
            let Ok(m) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let patient = match access {
                Access::Permission(p)
                    if m == Method::GET
                        && !path.contains('{')
                        && PATIENT_DOMAINS.contains(&p.domain()) =>
                {
                    if takes_patient {
                        PatientScope::ListByPatient
                    } else {
                        PatientScope::Refused
                    }
                }
                _ => PatientScope::Open,
            };
            routes
                .entry(path)
                .or_default()
                .push((m, RouteRule { access, patient }));
        }
        for (m, path) in PUBLIC {
            if let Ok(m) = Method::from_bytes(m.as_bytes()) {
                let rule = RouteRule {
                    access: Access::Public,
                    patient: PatientScope::Open,
                };
                let entry = routes.entry((*path).to_owned()).or_default();
                entry.retain(|(existing, _)| *existing != m);
                entry.push((m, rule));
            }
        }
        RouteTable { routes }
    }

    /// What the route `method path` needs; `None` for a route the table does not know.
    pub fn access(&self, method: &Method, path: &str) -> Option<Access> {
        self.rule(method, path).map(|r| r.access)
    }

    fn rule(&self, method: &Method, path: &str) -> Option<RouteRule> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.routes
            .get(path)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, r)| *r)
    }

    /// Every route with what it needs, sorted.
    pub fn entries(&self) -> Vec<(String, String, Access)> {
        let mut out: Vec<_> = self
            .routes
            .iter()
            .flat_map(|(p, ms)| {
                ms.iter()
                    .map(move |(m, r)| (m.to_string(), p.clone(), r.access))
            })
            .collect();
        out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        out
    }
}

/// Every operation of `doc`: (method, path, what it declares, whether it takes a
/// `patient_id` query parameter). An operation declares a permission by naming exactly one
/// as its `bearer` scope; one without security is public only if [`PUBLIC`] lists it.
pub fn declarations(doc: &serde_json::Value) -> Vec<(String, String, Access, bool)> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) else {
        return out;
    };
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let scopes: Vec<&str> = op
                .get("security")
                .and_then(|s| s.as_array())
                .map(|reqs| {
                    reqs.iter()
                        .filter_map(|r| r.get("bearer").and_then(|b| b.as_array()))
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let public = PUBLIC
                .iter()
                .any(|(m, p)| m.eq_ignore_ascii_case(method) && p == path);
            let access = match scopes.as_slice() {
                [] if public && op.get("security").is_none() => Access::Public,
                [one] if !public => Permission::parse(one)
                    .map(Access::Permission)
                    .unwrap_or(Access::Undeclared),
                _ => Access::Undeclared,
            };
            let takes_patient = op
                .get("parameters")
                .and_then(|p| p.as_array())
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p.get("name").and_then(|n| n.as_str()) == Some("patient_id")
                            && p.get("in").and_then(|i| i.as_str()) == Some("query")
                    })
                });
            out.push((method.to_owned(), path.clone(), access, takes_patient));
        }
    }
    out
}

/// The guard's state: the application and its route table.
#[derive(Clone)]
pub struct Guarded {
    pub state: AppState,
    pub table: Arc<RouteTable>,
}

/// Authenticate and authorise a request by its route's declaration (see the module doc).
pub async fn guard(State(g): State<Guarded>, req: Request, next: Next) -> Response {
    let route = format!(
        "{} {}",
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or_default()
    );
    // No query value may hold a NUL character: neither database keeps one in text, and a
    // value no record can hold is the client's mistake, not the store's failure.
    if req
        .uri()
        .query()
        .is_some_and(|q| q.to_ascii_lowercase().contains("%00"))
    {
        return ApiError::bad_request("query parameters must not contain NUL (%00) characters")
            .into_response();
    }
    match admit(&g, req).await {
        Ok((req, duty)) => {
            let resp = next.run(req).await;
            match duty {
                // A successful read of patient data that went past the access log is
                // never answered (see `crate::access_log`).
                Some(logged)
                    if resp.status().is_success()
                        && !logged.load(std::sync::atomic::Ordering::SeqCst) =>
                {
                    ApiError::internal(format!("route {route} answered without logging its reads"))
                        .into_response()
                }
                _ => resp,
            }
        }
        Err(e) => e.into_response(),
    }
}

/// Whether a route needing `permission` reads patient data (and so must log its reads).
pub fn reads_patient_data(permission: Permission) -> bool {
    let name = permission.as_str();
    name == "exports:read"
        || name
            .strip_suffix(":read")
            .is_some_and(|domain| PATIENT_DOMAINS.contains(&domain))
}

/// The request, with its actor, and the flag its reads set once logged (for routes that
/// read patient data).
type Admitted = (Request, Option<Arc<std::sync::atomic::AtomicBool>>);

async fn admit(g: &Guarded, req: Request) -> Result<Admitted, ApiError> {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let rule = g.table.rule(req.method(), &path).ok_or_else(|| {
        ApiError::internal(format!(
            "route {} {path} is not in the route table",
            req.method()
        ))
    })?;
    let permission = match rule.access {
        Access::Public => return Ok((req, None)),
        Access::Undeclared => {
            return Err(ApiError::internal(format!(
                "route {} {path} declares no permission",
                req.method()
            )));
        }
        Access::Permission(p) => p,
    };
    let (mut parts, body) = req.into_parts();
    let mut actor = match auth::authenticate(&parts, &g.state).await {
        Ok(a) => a,
        Err(e) => {
            if e.status == axum::http::StatusCode::FORBIDDEN {
                denied(g, "active_role");
            }
            return Err(e);
        }
    };
    if !actor.permissions.contains(permission) {
        denied(g, permission.as_str());
        tracing::debug!(permission = permission.as_str(), user = %actor.user.id, "access denied");
        return Err(ApiError::forbidden(permission.as_str()));
    }
    if let Some(patient) = actor.patient {
        confine(&mut parts, rule.patient, patient)?;
    }
    let duty = if reads_patient_data(permission) {
        actor.access = crate::access_log::AccessContext::from_headers(&parts.headers)?;
        Some(actor.access.logged.clone())
    } else {
        None
    };
    parts.extensions.insert::<Actor>(actor);
    Ok((Request::from_parts(parts, body), duty))
}

fn denied(g: &Guarded, permission: &str) {
    g.state
        .metrics
        .access_denied
        .get_or_create(&crate::metrics::DeniedLabels {
            permission: permission.to_owned(),
        })
        .inc();
}

/// Hold a patient-context request to its patient.
fn confine(
    parts: &mut axum::http::request::Parts,
    scope: PatientScope,
    patient: uuid::Uuid,
) -> Result<(), ApiError> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(ApiError::new(
            "forbidden",
            "a patient-context token may only read",
        ));
    }
    match scope {
        PatientScope::Open => Ok(()),
        PatientScope::Refused => Err(ApiError::new(
            "forbidden",
            "a patient-context token cannot list this across patients",
        )),
        PatientScope::ListByPatient => {
            let query = parts.uri.query().unwrap_or("");
            let named = query.split('&').any(|kv| {
                kv.split_once('=')
                    .map(|(k, _)| k == "patient_id")
                    .unwrap_or(kv == "patient_id")
            });
            if named {
                // The handler resolves it; `http::patient_group` refuses another patient.
                return Ok(());
            }
            let joined = if query.is_empty() {
                format!("patient_id={patient}")
            } else {
                format!("{query}&patient_id={patient}")
            };
            let pq = format!("{}?{joined}", parts.uri.path());
            let mut uri = axum::http::uri::Parts::from(parts.uri.clone());
            uri.path_and_query = Some(
                pq.parse()
                    .map_err(|_| ApiError::bad_request("the request URI cannot be confined"))?,
            );
            parts.uri = axum::http::Uri::from_parts(uri)
                .map_err(|_| ApiError::bad_request("the request URI cannot be confined"))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk over the router's route table: every route declares a known permission,
    /// or is listed as public; every public route exists and takes no token.
    #[test]
    fn every_route_declares_a_permission_or_is_listed_public() {
        let doc = crate::openapi();
        let decls = declarations(&doc);
        assert!(decls.len() > 60, "only {} routes found", decls.len());
        let undeclared: Vec<String> = decls
            .iter()
            .filter(|d| d.2 == Access::Undeclared)
            .map(|(m, p, _, _)| format!("{} {p}", m.to_uppercase()))
            .collect();
        assert!(
            undeclared.is_empty(),
            "routes without a permission: {undeclared:?}"
        );
        for (m, p) in PUBLIC {
            assert!(
                decls
                    .iter()
                    .any(|d| d.0.eq_ignore_ascii_case(m) && d.1 == *p && d.2 == Access::Public),
                "public route {m} {p} is not in the router"
            );
        }
        let table = RouteTable::from_openapi(&doc);
        assert_eq!(
            table.access(&Method::GET, "/api/v1/patients/{id}"),
            Some(Access::Permission(
                Permission::parse("patients:read").unwrap()
            ))
        );
        assert_eq!(
            table
                .rule(&Method::GET, "/api/v1/observations")
                .unwrap()
                .patient,
            PatientScope::ListByPatient
        );
        assert_eq!(
            table
                .rule(&Method::GET, "/api/v1/patients")
                .unwrap()
                .patient,
            PatientScope::Refused
        );
    }
}
