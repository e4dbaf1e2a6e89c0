//! The HTTP edge: `/api/v1` (JSON), `/healthz`, `/readyz`, `/metrics` and the OpenAPI 3.1
//! document at `/api/v1/openapi.json`, generated from the handlers' annotations.
//!
//! Handlers are thin: extract → authorise → call a service → map the result. No SQL and no
//! business rule lives here.

pub mod access_log;
pub mod attachments;
pub mod audit;
pub mod audit_events;
pub mod auth;
pub mod bulk;
pub mod care;
pub mod clinicians;
pub mod consents;
pub mod encounters;
pub mod error;
pub mod exports;
pub mod fhir;
pub mod guard;
pub mod http;
pub mod imports;
pub mod interactions;
pub mod jwks;
pub mod metrics;
pub mod observations;
pub mod patients;
pub mod places;
pub mod procedures;
pub mod records;
pub mod roles;
pub mod statements;
pub mod users;

use crate::auth::{Authenticator, UserCache};
use crate::error::ApiError;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use salus_domain::service::Services;
use std::sync::Arc;
use std::time::Duration;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Limits and windows of the HTTP edge.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub body_limit: usize,
    pub header_limit: usize,
    pub request_timeout: Duration,
    pub idempotency_ttl: chrono::Duration,
    /// Where attachment contents are kept.
    pub blob_dir: std::path::PathBuf,
    /// The largest attachment in bytes.
    pub attachment_limit: u64,
    /// Where uploaded import files wait while their job runs.
    pub import_dir: std::path::PathBuf,
    /// The largest import file in bytes.
    pub import_limit: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            header_limit: 32 * 1024,
            request_timeout: Duration::from_secs(30),
            idempotency_ttl: chrono::Duration::hours(24),
            blob_dir: std::path::PathBuf::from("salus-data/blobs"),
            attachment_limit: 25 * 1024 * 1024,
            import_dir: std::path::PathBuf::from("salus-data/imports"),
            import_limit: 1024 * 1024 * 1024,
        }
    }
}

/// What every handler shares: one pointer, so that the per-request clones axum makes of
/// the state (extractors, middleware) cost one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub services: Services,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ApiConfig>,
    pub users: Arc<UserCache>,
    pub blobs: Arc<salus_store::blobs::BlobStore>,
    /// Live progress of the import jobs running here.
    pub jobs: Arc<bulk::Jobs>,
    /// The FHIR `$export` tasks running here.
    pub exports: Arc<fhir::export::Running>,
    /// The OpenAPI document, served at `/api/v1/openapi.json` (set by [`app`]).
    /// Kept serialized: the parsed document would hold several MiB for the server's life.
    pub openapi: Arc<std::sync::OnceLock<bytes::Bytes>>,
    /// The tenants' care-relationship policies, held briefly.
    pub care: Arc<care::PolicyCache>,
}

impl AppState {
    pub fn new(
        services: Services,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        config: ApiConfig,
    ) -> Self {
        Self(Arc::new(AppStateInner {
            services,
            auth,
            metrics,
            blobs: Arc::new(salus_store::blobs::BlobStore::new(
                &config.blob_dir,
                config.attachment_limit,
            )),
            config: Arc::new(config),
            users: Arc::new(UserCache::new(Duration::from_secs(5))),
            jobs: Arc::new(bulk::Jobs::default()),
            exports: Arc::default(),
            openapi: Arc::new(std::sync::OnceLock::new()),
            care: Arc::default(),
        }))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Salus API", description = "Clinical record platform: JSON API. Errors are RFC 9457 problem+json.\n\nEvery read of patient data is written to the data-access log before it is answered (a 503 when the log cannot be written). Reads take three optional headers: `X-Purpose-Of-Use` (HL7 PurposeOfUse: TREAT, the default; ETREAT emergency treatment; HPAYMT payment; HOPERAT operations; PATRQT at the patient's request; HRESCH research; HLEGAL legal; PUBHLTH public health; any other value is a 400), `X-Access-Justification` (free text, at most 1000 characters) and `X-Break-Glass` (an emergency reason: the read is flagged and appears in `GET /api/v1/audit/break-glass`)."),
    modifiers(&BearerAuth),
    tags((name = "patients", description = "Patient registry"), (name = "interactions", description = "Interactions and configurable outcomes"), (name = "staff", description = "Clinicians"), (name = "places", description = "Departments and locations"), (name = "encounters", description = "Encounters"), (name = "observations", description = "Observations"), (name = "procedures", description = "Procedures"), (name = "conditions", description = "Conditions"), (name = "allergies", description = "Allergies and intolerances"), (name = "medical-records", description = "Medical records"), (name = "notes", description = "Append-only clinical notes"), (name = "attachments", description = "Attachments of medical records"), (name = "consents", description = "Consent templates (versioned) and patients' consents: acknowledgements, signatures, revocation, the signed PDF"), (name = "bulk", description = "Bulk import jobs and streamed exports"), (name = "access", description = "Users, roles, role assignments and permissions"), (name = "audit", description = "The audit trail (every change with the state before and after) and the data-access log: every read of patient data, the break-glass report, a patient's own access report"), (name = "care", description = "Care relationships: care teams and the tenant's policy on reads without one (break-glass)"), (name = "operations", description = "Health, readiness, metrics"), (name = "fhir", description = "FHIR R4 (application/fhir+json, OperationOutcome errors): GET /fhir/R4/metadata lists what is served"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the store answers and its schema is current.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.services.store.ready().await {
        Ok(()) => axum::Json(
            serde_json::json!({"status": "ready", "backend": state.services.store.backend()}),
        )
        .into_response(),
        Err(e) => ApiError::new("unavailable", e.to_string()).into_response(),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Metrics", content_type = "text/plain")))]
async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI document")))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    match state.openapi.get() {
        Some(doc) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            doc.clone(),
        )
            .into_response(),
        None => ApiError::internal("the OpenAPI document was not set").into_response(),
    }
}

/// The routes and the OpenAPI document, built together so that no route can be missing
/// from the document. Each route's permission is declared in its annotation and enforced
/// by [`guard`].
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(jwks::published))
        .routes(routes!(patients::create, patients::search))
        .routes(routes!(patients::read, patients::patch))
        .routes(routes!(patients::history))
        .routes(routes!(patients::action))
        .routes(routes!(
            interactions::list_outcomes,
            interactions::define_outcome
        ))
        .routes(routes!(interactions::retire_outcome))
        .routes(routes!(interactions::record, interactions::list))
        .routes(routes!(interactions::read))
        .routes(routes!(interactions::history))
        .routes(routes!(interactions::action))
        .routes(routes!(clinicians::create, clinicians::search))
        .routes(routes!(clinicians::read))
        .routes(routes!(clinicians::history))
        .routes(routes!(clinicians::action))
        .routes(routes!(
            places::create_department,
            places::search_departments
        ))
        .routes(routes!(places::read_department))
        .routes(routes!(places::department_action))
        .routes(routes!(places::create_location, places::search_locations))
        .routes(routes!(places::read_location))
        .routes(routes!(places::location_action))
        .routes(routes!(encounters::create, encounters::search))
        .routes(routes!(encounters::read))
        .routes(routes!(encounters::history))
        .routes(routes!(observations::create, observations::search))
        .routes(routes!(observations::read))
        .routes(routes!(observations::history))
        .routes(routes!(observations::action))
        .routes(routes!(procedures::create, procedures::search))
        .routes(routes!(procedures::read))
        .routes(routes!(procedures::history))
        .routes(routes!(procedures::action))
        .routes(routes!(
            statements::create_condition,
            statements::search_conditions
        ))
        .routes(routes!(statements::read_condition))
        .routes(routes!(statements::condition_history))
        .routes(routes!(statements::condition_action))
        .routes(routes!(
            statements::create_allergy,
            statements::search_allergies
        ))
        .routes(routes!(statements::read_allergy))
        .routes(routes!(statements::allergy_history))
        .routes(routes!(statements::allergy_action))
        .routes(routes!(records::open, records::search))
        .routes(routes!(records::read))
        .routes(routes!(records::action))
        .routes(routes!(records::write_note, records::list_notes))
        .routes(routes!(records::read_note))
        .routes(routes!(records::search_notes))
        .routes(routes!(records::note_history))
        .routes(routes!(records::note_action))
        .routes(routes!(attachments::upload, attachments::list))
        .routes(routes!(attachments::read))
        .routes(routes!(attachments::content))
        .routes(routes!(
            consents::create_template,
            consents::search_templates
        ))
        .routes(routes!(consents::read_template, consents::edit_template))
        .routes(routes!(consents::template_history))
        .routes(routes!(consents::template_action))
        .routes(routes!(consents::create, consents::search))
        .routes(routes!(consents::read))
        .routes(routes!(consents::history))
        .routes(routes!(consents::action))
        .routes(routes!(consents::document))
        .routes(routes!(consents::patient_consents))
        .routes(routes!(encounters::action))
        .routes(routes!(imports::start))
        .routes(routes!(imports::read))
        .routes(routes!(imports::errors))
        .routes(routes!(exports::export))
        .routes(routes!(users::create, users::search))
        .routes(routes!(users::read))
        .routes(routes!(users::history))
        .routes(routes!(users::action))
        .routes(routes!(users::grant))
        .routes(routes!(users::assignment_action))
        .routes(routes!(roles::list, roles::create))
        .routes(routes!(roles::read, roles::patch))
        .routes(routes!(roles::history))
        .routes(routes!(roles::permissions))
        .routes(routes!(audit::access))
        .routes(routes!(audit::break_glass))
        .routes(routes!(audit::patient_access))
        .routes(routes!(audit_events::events))
        .routes(routes!(care::assign, care::team))
        .routes(routes!(care::end))
        .routes(routes!(care::read_policy, care::set_policy))
        .routes(routes!(fhir::metadata))
        .routes(routes!(
            fhir::patient::create,
            fhir::patient::search,
            fhir::patient::conditional_update
        ))
        .routes(routes!(
            fhir::patient::read,
            fhir::patient::update,
            fhir::patient::patch
        ))
        .routes(routes!(fhir::patient::search_post))
        .routes(routes!(fhir::audit_event::search))
        .routes(routes!(fhir::audit_event::read))
        .routes(routes!(fhir::history::patients))
        .routes(routes!(fhir::history::observations))
        .routes(routes!(fhir::history::conditions))
        .routes(routes!(fhir::history::allergies))
        .routes(routes!(fhir::history::encounters))
        .routes(routes!(fhir::history::procedures))
        .routes(routes!(fhir::history::notes))
        .routes(routes!(fhir::history::consents))
        .routes(routes!(fhir::history::practitioners))
        .routes(routes!(fhir::history::organizations))
        .routes(routes!(fhir::history::locations))
        .routes(routes!(fhir::history::of_type))
        .routes(routes!(fhir::history::system))
        .routes(routes!(fhir::patient::vread))
        .routes(routes!(fhir::patient::history))
        .routes(routes!(fhir::bundle::process))
        .routes(routes!(fhir::export::system_export))
        .routes(routes!(fhir::export::patient_export))
        .routes(routes!(fhir::export::group_export))
        .routes(routes!(fhir::export::status, fhir::export::cancel))
        .routes(routes!(fhir::export::file))
        .merge(fhir::observation::routes())
        .merge(fhir::statement::condition::routes())
        .merge(fhir::statement::allergy::routes())
        .merge(fhir::encounter::encounters::routes())
        .merge(fhir::encounter::procedures::routes())
        .merge(fhir::note::document_reference::routes())
        .merge(fhir::consent::resource::routes())
        .merge(fhir::staff::practitioner::routes())
        .merge(fhir::staff::organization::routes())
        .merge(fhir::staff::location::routes())
        .routes(routes!(
            fhir::documents::search,
            fhir::documents::create,
            fhir::documents::conditional_update,
            fhir::documents::conditional_delete
        ))
        .routes(routes!(fhir::documents::search_post))
        .routes(routes!(
            fhir::documents::read,
            fhir::documents::update,
            fhir::documents::patch,
            fhir::documents::delete
        ))
        .routes(routes!(fhir::documents::history))
        .routes(routes!(fhir::documents::vread))
}

/// The OpenAPI document, as JSON.
pub fn openapi() -> serde_json::Value {
    serde_json::to_value(routes().into_openapi()).unwrap_or_default()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new("method-not-allowed", "this route does not take that method")
}

/// Refuse requests whose headers together exceed the limit.
async fn limit_headers(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limit {
        return ApiError::new(
            "headers-too-large",
            format!("request headers exceed {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Map the timeout layer's bare 408 to a problem.
async fn problem_for_timeout(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::REQUEST_TIMEOUT
        && resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none()
    {
        return ApiError::new("request-timeout", "the request did not finish in time")
            .into_response();
    }
    resp
}

/// The whole application router. Metrics (which need the matched route) and the request
/// timeout wrap each route; the layers that need no route (request ids, tracing, the
/// header limit) wrap the router once, in [`service`], so they are not cloned with every
/// route per request.
pub fn app(state: AppState) -> Router {
    fhir::documents::register_indexer();
    let (router, doc) = routes().split_for_parts();
    // The typed document is large; it is turned into JSON once, read for the route table,
    // and kept only as bytes.
    let json = serde_json::to_value(&doc).unwrap_or_default();
    drop(doc);
    let table = Arc::new(guard::RouteTable::from_openapi(&json));
    if let Ok(bytes) = serde_json::to_vec(&json) {
        let _ = state.openapi.set(bytes::Bytes::from(bytes));
    }
    drop(json);
    let metrics = state.metrics.clone();
    let config = state.config.clone();
    let guarded = guard::Guarded {
        state: state.clone(),
        table,
    };
    router
        .route_layer(axum::middleware::from_fn_with_state(guarded, guard::guard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(fhir::outcomes))
        .layer(axum::middleware::from_fn(problem_for_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// The application as a service, with trailing slashes trimmed so that `/api/v1/patients/`
/// (the path of requirements/004) and `/api/v1/patients` are one route, and the
/// route-independent layers around it (outermost first): the header limit, request ids
/// (set, then echoed on the response), tracing.
pub fn service(
    state: AppState,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<
    impl tower::Service<
        Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    std::net::SocketAddr,
> {
    use tower::Layer;
    let header_limit = state.config.header_limit;
    let request_id = HeaderName::from_static("x-request-id");
    let routes =
        tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(app(state));
    let outer = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            header_limit,
            limit_headers,
        ))
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let rid = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // The path is not logged: it can carry ids of patients.
            tracing::info_span!("request", method = %req.method(), request_id = %rid)
        }))
        .service(routes);
    axum::ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(outer)
}
