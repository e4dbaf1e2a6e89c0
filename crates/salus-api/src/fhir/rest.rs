//! The REST interactions of the FHIR types that Salus aggregates serve (Observation,
//! Condition, AllergyIntolerance, Encounter, Procedure, DocumentReference; Practitioner,
//! Organization, Location, which are not patient data),
//! written once over [`Mapped`]: read, vread, history-instance, create (with
//! `If-None-Exist`), update (with `If-Match`), delete (the aggregate's withdrawal, or 405),
//! and search by GET and `POST _search` on every R4 search parameter of the type. Each type's
//! module declares its routes (and so their permissions, the `/api/v1` twin's) and says
//! how its FHIR resource becomes a command; the mapping itself is `salus-fhir`'s.
//!
//! Search runs on the FHIR rendering of each aggregate, indexed in its projection's rows
//! (`salus_fhir::clinical::rows`, named `Type.code` as documents' rows are), so the
//! parameters, modifiers, prefixes and chains are exactly those of documents. A
//! patient-context token sees only its patient's resources, and every read is logged.

use super::documents::RowSearch;
use super::results::{self, Hit, TypeSearch};
use super::*;
use salus_domain::service::Prepared;
use salus_fhir::search as fsearch;
use salus_store::SearchQuery;
use std::collections::HashSet;
use std::future::Future;

/// Run `$e` with `$A` the aggregate of the domain type `$t`.
macro_rules! with_type {
    ($t:expr, $A:ident => $e:expr) => {
        match $t {
            DomainType::Observation => {
                type $A = salus_domain::clinical::observation::Observation;
                $e
            }
            DomainType::Condition => {
                type $A = salus_domain::clinical::statement::Condition;
                $e
            }
            DomainType::AllergyIntolerance => {
                type $A = salus_domain::clinical::statement::Allergy;
                $e
            }
            DomainType::Encounter => {
                type $A = salus_domain::clinical::encounter::Encounter;
                $e
            }
            DomainType::Procedure => {
                type $A = salus_domain::clinical::procedure::Procedure;
                $e
            }
            DomainType::Practitioner => {
                type $A = salus_domain::staff::clinician::Clinician;
                $e
            }
            DomainType::Organization => {
                type $A = salus_domain::staff::place::Department;
                $e
            }
            DomainType::Location => {
                type $A = salus_domain::staff::place::Location;
                $e
            }
            DomainType::DocumentReference => {
                type $A = salus_domain::clinical::record::ClinicalNote;
                $e
            }
            DomainType::Consent => {
                type $A = salus_domain::clinical::consent::Consent;
                $e
            }
            DomainType::DocumentFile => {
                type $A = salus_domain::clinical::attachment::Attachment;
                $e
            }
        }
    };
}

/// The route handlers of a mapped type, declared in its module: read, vread, history,
/// create, update, delete, search and `POST _search`, each with its OpenAPI entry and the
/// permission it needs (the `/api/v1` twin's; the guard reads it from the entry), and
/// `routes()`, the router serving them. `patient` types are patient data (a
/// patient-context token's search is confined to its patient), `shared` ones are not
/// (practitioners, places). The paths are spelled out because OpenAPI
/// attributes take literals.
macro_rules! mapped_routes {
    (@search patient, $A:ty, $read:literal, $type_path:literal) => {
        $crate::fhir::rest::mapped_routes!(@search_fn $A, $read, $type_path,
            "Search on every R4 search parameter of the type; a patient-context token's search is confined to its patient (`patient_id`, set by the guard).",
            ("patient_id" = Option<String>, Query, description = "Salus: confine to this patient (set for patient-context tokens)"),);
    };
    (@search shared, $A:ty, $read:literal, $type_path:literal) => {
        $crate::fhir::rest::mapped_routes!(@search_fn $A, $read, $type_path,
            "Search on every R4 search parameter of the type (not patient data).",);
    };
    (@search_fn $A:ty, $read:literal, $type_path:literal, $doc:literal, $($param:tt)*) => {
        #[doc = $doc]
        #[utoipa::path(get, path = $type_path, tag = "fhir",
            params($($param)* ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("Prefer" = Option<String>, Header, description = "handling=strict: unknown parameters are a 400")),
            responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
            security(("bearer" = [$read])))]
        pub async fn search(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Query(pairs): Query<Vec<(String, String)>>,
        ) -> Result<Response, FhirError> {
            rest::search::<$A>(&state, &actor, &headers, &pairs).await
        }
    };
    (
        $scope:ident $A:ty,
        read: $read:literal,
        write: $write:literal,
        type: $type_path:literal,
        search: $search_path:literal,
        instance: $instance_path:literal,
        history: $history_path:literal,
        version: $version_path:literal $(,)?
    ) => {
        /// The routes of this type.
        pub fn routes() -> utoipa_axum::router::OpenApiRouter<$crate::AppState> {
            utoipa_axum::router::OpenApiRouter::new()
                .routes(utoipa_axum::routes!(
                    create,
                    search,
                    conditional_update,
                    conditional_delete
                ))
                .routes(utoipa_axum::routes!(search_post))
                .routes(utoipa_axum::routes!(read, update, patch, delete))
                .routes(utoipa_axum::routes!(history))
                .routes(utoipa_axum::routes!(vread))
        }

        /// Read the resource.
        #[utoipa::path(get, path = $instance_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id")),
            responses((status = 200, description = "The resource", content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)")),
            security(("bearer" = [$read])))]
        pub async fn read(
            State(state): State<AppState>,
            actor: Actor,
            Path(id): Path<String>,
        ) -> Result<Response, FhirError> {
            rest::read::<$A>(&state, &actor, &id).await
        }

        /// Read the resource as it stood at version `vid`.
        #[utoipa::path(get, path = $version_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id"), ("vid" = String, Path, description = "Version id")),
            responses((status = 200, description = "The resource at that version", content_type = "application/fhir+json"), (status = 404, description = "No such resource or version")),
            security(("bearer" = [$read])))]
        pub async fn vread(
            State(state): State<AppState>,
            actor: Actor,
            Path((id, vid)): Path<(String, String)>,
        ) -> Result<Response, FhirError> {
            rest::vread::<$A>(&state, &actor, &id, &vid).await
        }

        /// Every version of the resource, newest first.
        #[utoipa::path(get, path = $history_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id")),
            responses((status = 200, description = "A history Bundle", content_type = "application/fhir+json"), (status = 404, description = "No such resource")),
            security(("bearer" = [$read])))]
        pub async fn history(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> Result<Response, FhirError> {
            rest::history::<$A>(&state, &actor, &headers, &id).await
        }

        /// Create the resource; with `If-None-Exist`, only when none matches.
        #[utoipa::path(post, path = $type_path, tag = "fhir",
            params(("If-None-Exist" = Option<String>, Header, description = "A search: create only when it matches nothing")),
            request_body(content = Object, content_type = "application/fhir+json"),
            responses((status = 201, description = "Created (Location, ETag)"), (status = 200, description = "If-None-Exist matched one"), (status = 412, description = "If-None-Exist matched more than one"), (status = 422, description = "Invalid, or not what Salus keeps (OperationOutcome naming the element)")),
            security(("bearer" = [$write])))]
        pub async fn create(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            body: JsonBody<Value>,
        ) -> Result<Response, FhirError> {
            rest::create::<$A>(&state, &actor, &headers, &body.value).await
        }

        /// Change the resource (what a change is, is the type's: see its CapabilityStatement
        /// entry). `If-Match: W/"n"` makes it conditional.
        #[utoipa::path(put, path = $instance_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
            request_body(content = Object, content_type = "application/fhir+json"),
            responses((status = 200, description = "Updated (ETag)"), (status = 404, description = "No such resource"), (status = 412, description = "Stale If-Match"), (status = 422, description = "A change the aggregate does not allow (OperationOutcome naming the element)")),
            security(("bearer" = [$write])))]
        pub async fn update(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: JsonBody<Value>,
        ) -> Result<Response, FhirError> {
            rest::update::<$A>(&state, &actor, &headers, &id, &body.value).await
        }

        /// Conditional update (`PUT {type}?search`): the one match is updated; with none,
        /// the body (without an id) is created; several are a 412.
        #[utoipa::path(put, path = $type_path, tag = "fhir",
            params(("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
            request_body(content = Object, content_type = "application/fhir+json"),
            responses((status = 200, description = "The match updated"), (status = 201, description = "Created"), (status = 400, description = "No search, or an id the match does not have"), (status = 412, description = "More than one match, or a stale If-Match"), (status = 422, description = "A change the aggregate does not allow")),
            security(("bearer" = [$write])))]
        pub async fn conditional_update(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Query(pairs): Query<Vec<(String, String)>>,
            body: JsonBody<Value>,
        ) -> Result<Response, FhirError> {
            rest::conditional_update::<$A>(&state, &actor, &headers, &pairs, &body.value).await
        }

        /// Conditional delete (`DELETE {type}?search`): the one match is withdrawn (204
        /// also when nothing matches); several are a 412.
        #[utoipa::path(delete, path = $type_path, tag = "fhir",
            responses((status = 204, description = "Withdrawn, or nothing matched"), (status = 400, description = "No search"), (status = 405, description = "The type has no delete"), (status = 412, description = "More than one match")),
            security(("bearer" = [$write])))]
        pub async fn conditional_delete(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Query(pairs): Query<Vec<(String, String)>>,
        ) -> Result<Response, FhirError> {
            rest::conditional_delete::<$A>(&state, &actor, &headers, &pairs).await
        }

        /// Change the resource with a JSON Patch (`application/json-patch+json`) of its
        /// current FHIR form; the result is an update (`If-Match` as for a PUT).
        #[utoipa::path(patch, path = $instance_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": patch only version n")),
            request_body(content = Object, content_type = "application/json-patch+json"),
            responses((status = 200, description = "Patched (ETag)"), (status = 400, description = "Not a JSON Patch"), (status = 404, description = "No such resource"), (status = 412, description = "Stale If-Match"), (status = 422, description = "The patch does not apply, or a change the aggregate does not allow")),
            security(("bearer" = [$write])))]
        pub async fn patch(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: JsonBody<Value>,
        ) -> Result<Response, FhirError> {
            rest::patch::<$A>(&state, &actor, &headers, &id, &body.value).await
        }

        /// Delete the resource: the aggregate's withdrawal (its history stays), or 405 where
        /// the type has none.
        #[utoipa::path(delete, path = $instance_path, tag = "fhir",
            params(("id" = String, Path, description = "The resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": only version n")),
            responses((status = 204, description = "Withdrawn"), (status = 404, description = "No such resource"), (status = 405, description = "The type has no delete"), (status = 412, description = "Stale If-Match")),
            security(("bearer" = [$write])))]
        pub async fn delete(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> Result<Response, FhirError> {
            rest::delete::<$A>(&state, &actor, &headers, &id).await
        }

        $crate::fhir::rest::mapped_routes!(@search $scope, $A, $read, $type_path);

        /// Search by POST (a form body).
        #[utoipa::path(post, path = $search_path, tag = "fhir",
            request_body(content = String, content_type = "application/x-www-form-urlencoded"),
            responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
            security(("bearer" = [$read])))]
        pub async fn search_post(
            State(state): State<AppState>,
            actor: Actor,
            headers: HeaderMap,
            Query(mut pairs): Query<Vec<(String, String)>>,
            body: axum::body::Bytes,
        ) -> Result<Response, FhirError> {
            pairs.extend(search_form(&headers, &body)?);
            rest::search::<$A>(&state, &actor, &headers, &pairs).await
        }
    };
}
pub(super) use mapped_routes;

/// What a transaction writes before the entry being decided: the facts an entry checks
/// (the patient exists) also hold for what the same transaction creates.
#[derive(Default)]
pub(super) struct Pending {
    pub patients: HashSet<Uuid>,
    /// The encounters created so far, with their patients.
    pub encounters: std::collections::HashMap<Uuid, Uuid>,
    /// The departments (Organizations) this transaction creates, active.
    pub departments: HashSet<Uuid>,
    /// The clinicians (Practitioners) this transaction creates, active.
    pub clinicians: HashSet<Uuid>,
    /// The medical records the notes of this write open, by (patient, department).
    pub records: std::sync::Mutex<
        std::collections::HashMap<(Uuid, Uuid), salus_domain::clinical::record::MedicalRecord>,
    >,
    /// Their writes, to be committed with the entry that opened them
    /// ([`Pending::take_opened`]).
    pub opened: std::sync::Mutex<Vec<Prepared>>,
}

impl Pending {
    /// The writes of what the last entry decided needs first (the medical record a note
    /// opens), to be committed with it.
    pub(super) fn take_opened(&self) -> Vec<Prepared> {
        self.opened
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }

    /// Whether `department` is active: stored and active, or created by this transaction.
    pub(super) async fn department_active(
        &self,
        state: &AppState,
        actor: &Actor,
        department: Uuid,
    ) -> Result<bool, FhirError> {
        if self.departments.contains(&department) {
            return Ok(true);
        }
        Ok(salus_domain::staff::place::department_active(
            &state.services,
            &actor.ctx,
            Some(department),
        )
        .await?)
    }

    /// Whether `patient` is open: stored and not retired, or created by this transaction.
    pub(super) async fn patient_open(
        &self,
        state: &AppState,
        actor: &Actor,
        patient: Uuid,
    ) -> Result<bool, FhirError> {
        if self.patients.contains(&patient) {
            return Ok(true);
        }
        Ok(salus_domain::clinical::patient_open(&state.services, &actor.ctx, patient).await?)
    }

    /// Whether `encounter`, when given, is an encounter of `patient`: stored, or created by
    /// this transaction (true when none is given).
    pub(super) async fn encounter_of_patient(
        &self,
        state: &AppState,
        actor: &Actor,
        encounter: Option<Uuid>,
        patient: Uuid,
    ) -> Result<bool, FhirError> {
        if let Some(e) = encounter
            && let Some(p) = self.encounters.get(&e)
        {
            return Ok(*p == patient);
        }
        Ok(salus_domain::clinical::encounter_of_patient(
            &state.services,
            &actor.ctx,
            encounter,
            patient,
        )
        .await?)
    }
}

/// A FHIR resource type served by a Salus aggregate.
pub(super) trait Mapped: Projected + Clone + Send + Sync + 'static
where
    Self::Command: Send,
{
    /// The FHIR resource type (`Observation`).
    const FHIR_TYPE: &'static str;
    /// The permissions of the `/api/v1` twin.
    const READ: &'static str;
    const WRITE: &'static str;
    /// Whether a FHIR delete is the aggregate's withdrawal ([`Mapped::delete_command`]).
    const DELETES: bool;

    /// The resource at this version.
    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value;

    /// The FHIRPath of a field the domain names in an error.
    fn path_of_field(field: &str) -> String;

    /// The command that records `body` as the new aggregate `id` (facts gathered).
    fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> impl Future<Output = Result<Self::Command, FhirError>> + Send;

    /// The command that makes `current` what `body` says; `None` when nothing changes.
    fn update_command(
        state: &AppState,
        actor: &Actor,
        current: &Self,
        body: &Value,
        pending: &Pending,
    ) -> impl Future<Output = Result<Option<Self::Command>, FhirError>> + Send;

    /// The withdrawal a FHIR delete is (entered in error); `None`: no delete (405).
    fn delete_command(current: &Self) -> Option<Self::Command>;

    /// Another aggregate served under the same FHIR type, read by id where this one has
    /// none (attachments beside notes as DocumentReference).
    const ALSO: Option<DomainType> = None;

    /// Whether `body` is a create of [`Mapped::ALSO`] instead (a DocumentReference holding
    /// a file rather than a note's text).
    fn creates_also(_body: &Value) -> bool {
        false
    }

    /// Whether the stored state passes its integrity check (a note's text against its
    /// SHA-256); one that fails is withheld, logged and counted.
    fn intact(&self) -> bool {
        true
    }
}

/// `c`, unless it fails its integrity check: then a loud error (logged, counted) and
/// nothing of it is served.
pub(super) fn checked<A: Mapped>(state: &AppState, c: Current<A>) -> Result<Current<A>, FhirError>
where
    A::Command: Send,
{
    if c.state.intact() {
        return Ok(c);
    }
    state.metrics.integrity_failures.inc();
    tracing::error!(
        resource = A::FHIR_TYPE,
        id = %c.row.id,
        version = c.row.version,
        "stored content does not match its hash: refusing to serve it"
    );
    Err(FhirError::new(
        500,
        "exception",
        format!(
            "{}/{} failed its integrity check and is withheld; the incident is logged",
            A::FHIR_TYPE,
            c.row.id
        ),
    ))
}

/// A domain failure as an OperationOutcome naming the FHIR element at fault.
pub(super) fn domain_error<A: Mapped>(e: salus_domain::service::ServiceError) -> FhirError
where
    A::Command: Send,
{
    let api = ApiError::from(e);
    // A field the domain names, or the status an illegal transition is about.
    let field = api
        .extra
        .get("field")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| api.extra.get("action").map(|_| "action".to_owned()));
    let mut f = FhirError::from(api);
    if let Some(field) = field {
        for i in &mut f.issues {
            i.expression = Some(A::path_of_field(&field));
        }
    }
    f
}

/// An update of `t/id`, which does not exist and cannot be made under that id.
pub(super) fn not_created(t: &str, id: &str) -> FhirError {
    FhirError::new(
        404,
        "not-found",
        format!(
            "no {t}/{id}; an update creates a {t} only under a UUID (Salus's ids are UUIDs): POST it to get one"
        ),
    )
}

/// Whether the tenant holds `A` (or [`Mapped::ALSO`]) `id`, whoever may see it.
async fn exists<A: Mapped>(state: &AppState, actor: &Actor, id: Uuid) -> Result<bool, FhirError>
where
    A::Command: Send,
{
    if state.services.row::<A>(&actor.ctx, id).await?.is_some() {
        return Ok(true);
    }
    match A::ALSO {
        Some(k) => Box::pin(k.exists(state, actor, id)).await,
        None => Ok(false),
    }
}

fn not_found(t: &str, id: &str) -> FhirError {
    FhirError::new(404, "not-found", format!("no {t}/{id}"))
}

/// The body as a resource of the type: its `resourceType`, else a 400.
pub(super) fn check_type<A: Mapped>(body: &Value) -> Result<(), FhirError>
where
    A::Command: Send,
{
    if body.get("resourceType").and_then(Value::as_str) == Some(A::FHIR_TYPE) {
        Ok(())
    } else {
        Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error(
                    "invalid",
                    format!("the body must be a {} resource", A::FHIR_TYPE),
                )
                .at("resourceType"),
            ],
        })
    }
}

/// The aggregate `id` now, its read logged; 404 when there is none (or the actor may not
/// see it).
pub(super) async fn load<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Current<A>, FhirError>
where
    A::Command: Send,
{
    if Uuid::parse_str(id).is_err() {
        return Err(not_found(A::FHIR_TYPE, id));
    }
    let row = http::read_current::<A>(state, actor, A::FHIR_TYPE, id).await?;
    let row = http::parse_text_row::<A>(row)?;
    let st: A = serde_json::from_value(row.doc.clone()).map_err(ApiError::internal)?;
    checked(state, Current { state: st, row })
}

fn answer<A: Mapped>(status: StatusCode, c: &Current<A>, location: bool) -> Response
where
    A::Command: Send,
{
    let body = c.state.render(c.row.version, c.row.updated_at);
    let loc = location.then(|| {
        format!(
            "{BASE}/{}/{}/_history/{}",
            A::FHIR_TYPE,
            c.row.id,
            c.row.version
        )
    });
    resource_response(status, &body, c.row.version, c.row.updated_at, loc)
}

/// The aggregate that may hold `id` when `A` answered `e` for it: [`Mapped::ALSO`] on a
/// 404, when the actor may read it.
fn also_for<A: Mapped>(actor: &Actor, e: &FhirError) -> Option<DomainType>
where
    A::Command: Send,
{
    if e.status != StatusCode::NOT_FOUND {
        return None;
    }
    A::ALSO.filter(|k| k.readable_by(actor))
}

pub(super) async fn read<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    match load::<A>(state, actor, id).await {
        Ok(c) => Ok(answer(StatusCode::OK, &c, false)),
        Err(e) => match also_for::<A>(actor, &e) {
            Some(k) => Box::pin(k.read(state, actor, id)).await,
            None => Err(e),
        },
    }
}

pub(super) async fn vread<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    id: &str,
    vid: &str,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    let missing = || {
        FhirError::new(
            404,
            "not-found",
            format!("no {}/{id} at version {vid}", A::FHIR_TYPE),
        )
    };
    let version = vid
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(missing)?;
    // The current record decides who may see it; the read is logged there.
    let current = match load::<A>(state, actor, id).await {
        Ok(c) => c,
        Err(e) => {
            return match also_for::<A>(actor, &e) {
                Some(k) => Box::pin(k.vread(state, actor, id, vid)).await,
                None => Err(e),
            };
        }
    };
    let c = state
        .services
        .at_version::<A>(&actor.ctx, current.row.id, version)
        .await?
        .ok_or_else(missing)?;
    let c = checked(state, c)?;
    Ok(answer(StatusCode::OK, &c, false))
}

pub(super) async fn history<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    let t = A::FHIR_TYPE;
    let current = match load::<A>(state, actor, id).await {
        Ok(c) => c,
        Err(e) => {
            return match also_for::<A>(actor, &e) {
                Some(k) => Box::pin(k.history(state, actor, headers, id)).await,
                None => Err(e),
            };
        }
    };
    let versions = state
        .services
        .versions::<A>(&actor.ctx, current.row.id)
        .await?
        .into_iter()
        .map(|c| checked(state, c))
        .collect::<Result<Vec<_>, _>>()?;
    let base = base_url(headers);
    let entries: Vec<Value> = versions
        .iter()
        .rev()
        .map(|c| version_entry(&base, c))
        .collect();
    let links =
        vec![json!({"relation": "self", "url": format!("{base}/{t}/{}/_history", current.row.id)})];
    let total = entries.len();
    let mut bundle = bundle_of(state, "history", links, entries);
    bundle["total"] = json!(total);
    Ok(ok_json(&bundle))
}

/// One version of a resource of a domain-backed type as a history Bundle entry.
fn version_entry<A: Mapped>(base: &str, c: &Current<A>) -> Value
where
    A::Command: Send,
{
    let t = A::FHIR_TYPE;
    let (method, url) = if c.row.version == 1 {
        ("POST", t.to_owned())
    } else {
        ("PUT", format!("{t}/{}", c.row.id))
    };
    json!({
        "fullUrl": format!("{base}/{t}/{}", c.row.id),
        "resource": c.state.render(c.row.version, c.row.updated_at),
        "request": {"method": method, "url": url},
        "response": {
            "status": if c.row.version == 1 { "201 Created" } else { "200 OK" },
            "etag": format!("W/\"{}\"", c.row.version),
            "lastModified": salus_fhir::patient::instant(c.row.updated_at),
        },
    })
}

pub(super) async fn create<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    check_type::<A>(body)?;
    if let Some(k) = A::ALSO.filter(|_| A::creates_also(body)) {
        return Box::pin(k.create(state, actor, headers, body)).await;
    }
    if let Some(pairs) = if_none_exist(headers)? {
        let search = ClinicalSearch::parse::<A>(state, actor, &pairs, true).await?;
        let found = search.run::<A>(state, actor, None, 2).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                access_log::record_docs(
                    state,
                    actor,
                    AccessAction::Read,
                    A::RESOURCE_TYPE,
                    [(one.row.id, &one.row.doc)],
                )
                .await?;
                return Ok(answer(StatusCode::OK, one, false));
            }
            _ => {
                return Err(FhirError::new(
                    412,
                    "duplicate",
                    format!("If-None-Exist matches more than one {}", A::FHIR_TYPE),
                ));
            }
        }
    }
    let c = write_new::<A>(state, actor, Uuid::now_v7(), body).await?;
    Ok(preferred(headers, answer(StatusCode::CREATED, &c, true)).await)
}

/// Write `body` as the new aggregate `id`, with what it needs first (a note's medical
/// record) in the same commit.
async fn write_new<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    body: &Value,
) -> Result<Current<A>, FhirError>
where
    A::Command: Send,
{
    let pending = Pending::default();
    let command = A::create_command(state, actor, id, body, &pending).await?;
    let first = pending.take_opened();
    let c = if first.is_empty() {
        state
            .services
            .create::<A, _>(&actor.ctx, id, move |_, _| Ok(command), None)
            .await
            .map_err(domain_error::<A>)?
    } else {
        // What the resource needs first (a note's medical record) commits with it.
        let mut writes = first;
        writes.push(
            state
                .services
                .prepare_new::<A, _>(id, move |_, _| Ok(command), None)
                .map_err(domain_error::<A>)?,
        );
        let done = state
            .services
            .commit_prepared(&actor.ctx, writes)
            .await
            .map_err(|e| match e {
                salus_domain::service::ServiceError::InGroup { source, .. } => {
                    domain_error::<A>(*source)
                }
                other => domain_error::<A>(other),
            })?;
        done.into_iter()
            .last()
            .and_then(|d| d.into_current::<A>().ok())
            .ok_or_else(|| FhirError::from(ApiError::internal("the write left no resource")))?
    };
    Ok(c)
}

/// The body's id must be the URL's.
pub(super) fn check_id<A: Mapped>(body: &Value, id: &str) -> Result<(), FhirError>
where
    A::Command: Send,
{
    let at = format!("{}.id", A::FHIR_TYPE);
    match body.get("id").and_then(Value::as_str) {
        Some(b) if b == id => Ok(()),
        Some(b) => Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error(
                    "invalid",
                    format!("the body's id '{b}' is not the id in the URL"),
                )
                .at(at),
            ],
        }),
        None => Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error("required", "an update needs the resource's id in the body").at(at),
            ],
        }),
    }
}

/// The If-Match version, when the request names one.
fn expected(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    Ok(match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(headers)?,
        None => None,
    })
}

pub(super) async fn update<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
    body: &Value,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    check_type::<A>(body)?;
    check_id::<A>(body, id)?;
    let want = expected(headers)?;
    // The current record decides who may see it.
    let Some(current) = find::<A>(state, actor, id).await? else {
        if let Some(k) = A::ALSO.filter(|k| k.readable_by(actor)) {
            return Box::pin(k.update(state, actor, headers, id, body)).await;
        }
        // An update that creates: under the client's id when it is a UUID (Salus's ids
        // are; an id another tenant holds is a conflict, as the store finds it).
        return match (Uuid::parse_str(id), want) {
            (Ok(uuid), None) if !exists::<A>(state, actor, uuid).await? => {
                let c = write_new::<A>(state, actor, uuid, body).await?;
                Ok(preferred(headers, answer(StatusCode::CREATED, &c, true)).await)
            }
            (Ok(_), Some(v)) => Err(ServiceError412(v, 0).into()),
            _ => Err(not_created(A::FHIR_TYPE, id)),
        };
    };
    if let Some(v) = want
        && v != current.row.version
    {
        return Err(ServiceError412(v, current.row.version).into());
    }
    let command =
        A::update_command(state, actor, &current.state, body, &Pending::default()).await?;
    let Some(command) = command else {
        return Ok(preferred(headers, answer(StatusCode::OK, &current, false)).await);
    };
    let c = state
        .services
        .execute::<A, _>(
            &actor.ctx,
            current.row.id,
            Some(current.row.version),
            move |_, _| Ok(command),
            None,
        )
        .await
        .map_err(domain_error::<A>)?;
    Ok(preferred(headers, answer(StatusCode::OK, &c, false)).await)
}

/// The one resource a conditional interaction's search (`{type}?search`) matches, the
/// read logged: `None` for no match, 412 for several, 400 for no search at all.
async fn conditional_match<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    pairs: &[(String, String)],
    what: &str,
) -> Result<Option<Current<A>>, FhirError>
where
    A::Command: Send,
{
    if pairs.iter().all(|(k, _)| k.starts_with('_') && k != "_id") {
        return Err(FhirError::new(
            400,
            "invalid",
            format!(
                "a conditional {what} needs a search ({}?identifier=...)",
                A::FHIR_TYPE
            ),
        ));
    }
    let search = ClinicalSearch::parse::<A>(state, actor, pairs, true).await?;
    let mut found = search.run::<A>(state, actor, None, 2).await?;
    if found.len() > 1 {
        return Err(FhirError::new(
            412,
            "multiple-matches",
            format!(
                "the conditional {what} matches more than one {}",
                A::FHIR_TYPE
            ),
        ));
    }
    let one = found.pop();
    if let Some(c) = &one {
        access_log::record_docs(
            state,
            actor,
            AccessAction::Read,
            A::RESOURCE_TYPE,
            [(c.row.id, &c.row.doc)],
        )
        .await?;
    }
    Ok(one)
}

/// Conditional update (`PUT {type}?search`): the one match is updated as by its id; with
/// none, the body is created (under its id when that is a UUID, as an update creates;
/// another id is a 400); several are a 412.
pub(super) async fn conditional_update<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    body: &Value,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    check_type::<A>(body)?;
    let body_id = body.get("id").and_then(Value::as_str);
    match conditional_match::<A>(state, actor, pairs, "update").await? {
        Some(one) => {
            let id = one.row.id.to_string();
            if body_id.is_some_and(|b| b != id) {
                return Err(FhirError {
                    status: StatusCode::BAD_REQUEST,
                    issues: vec![
                        Issue::error(
                            "invalid",
                            format!(
                                "the body's id is not that of the match ({}/{id})",
                                A::FHIR_TYPE
                            ),
                        )
                        .at(format!("{}.id", A::FHIR_TYPE)),
                    ],
                });
            }
            let mut r = body.clone();
            r["id"] = Value::String(id.clone());
            update::<A>(state, actor, headers, &id, &r).await
        }
        None if body_id.is_some_and(|b| Uuid::parse_str(b).is_ok()) => {
            let id = body_id.unwrap_or_default().to_owned();
            update::<A>(state, actor, headers, &id, body).await
        }
        None if body_id.is_some() => Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error(
                    "invalid",
                    format!(
                        "nothing matches, and Salus's ids of {} are UUIDs: send the body without an id (or with a UUID) to create it",
                        A::FHIR_TYPE
                    ),
                )
                .at(format!("{}.id", A::FHIR_TYPE)),
            ],
        }),
        None => {
            // The search was the condition; the create itself is unconditional.
            let mut plain = headers.clone();
            plain.remove("if-none-exist");
            create::<A>(state, actor, &plain, body).await
        }
    }
}

/// Conditional delete (`DELETE {type}?search`): the one match is withdrawn as by its id
/// (204 also when nothing matches); several are a 412.
pub(super) async fn conditional_delete<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    if !A::DELETES {
        return Err(no_delete::<A>());
    }
    match conditional_match::<A>(state, actor, pairs, "delete").await? {
        Some(one) => delete::<A>(state, actor, headers, &one.row.id.to_string()).await,
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// A JSON Patch (RFC 6902) of the resource as it reads now, then an update with the
/// result (the aggregate decides what the change is, as for a PUT).
pub(super) async fn patch<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
    ops: &Value,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    let current = find::<A>(state, actor, id)
        .await?
        .ok_or_else(|| not_found(A::FHIR_TYPE, id))?;
    let mut doc = current
        .state
        .render(current.row.version, current.row.updated_at);
    apply_json_patch(&mut doc, ops)?;
    drop_version_meta(&mut doc);
    update::<A>(state, actor, headers, id, &doc).await
}

/// A stale `If-Match`: (asked, current).
struct ServiceError412(i64, i64);

impl From<ServiceError412> for FhirError {
    fn from(e: ServiceError412) -> Self {
        salus_domain::service::ServiceError::Precondition {
            expected: e.0,
            current: e.1,
        }
        .into()
    }
}

/// The aggregate `id` the actor may see, unlogged (writes decide on it).
pub(super) async fn find<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Option<Current<A>>, FhirError>
where
    A::Command: Send,
{
    let Ok(uuid) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    Ok(state
        .services
        .load::<A>(&actor.ctx, uuid)
        .await?
        .filter(|c| actor.sees(A::RESOURCE_TYPE, &c.row.doc)))
}

pub(super) async fn delete<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    let want = expected(headers)?;
    let current = find::<A>(state, actor, id)
        .await?
        .ok_or_else(|| not_found(A::FHIR_TYPE, id))?;
    let Some(command) = A::delete_command(&current.state) else {
        return Err(no_delete::<A>());
    };
    let c = state
        .services
        .execute::<A, _>(
            &actor.ctx,
            current.row.id,
            want,
            move |_, _| Ok(command),
            None,
        )
        .await
        .map_err(domain_error::<A>)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = weak_etag(c.row.version) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

pub(super) fn no_delete<A: Mapped>() -> FhirError
where
    A::Command: Send,
{
    FhirError::new(
        405,
        "not-supported",
        format!(
            "Salus never deletes a resource of type {}; change its status instead",
            A::FHIR_TYPE
        ),
    )
}

/// A search of one domain-backed type: store filters over its FHIR rows.
pub(super) struct ClinicalSearch {
    kind: DomainType,
    pub(super) q: RowSearch,
}

impl ClinicalSearch {
    pub(super) async fn parse<A: Mapped>(
        state: &AppState,
        actor: &Actor,
        pairs: &[(String, String)],
        strict: bool,
    ) -> Result<Self, FhirError>
    where
        A::Command: Send,
    {
        let t = A::FHIR_TYPE;
        let kind = DomainType::of(t).ok_or_else(|| {
            FhirError::new(404, "not-supported", format!("'{t}' is not served here"))
        })?;
        // The guard's confinement of a patient-context token to its patient.
        let mut confined = Vec::new();
        let mut rest = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            if key != "patient_id" {
                rest.push((key.clone(), value.clone()));
                continue;
            }
            let p = Uuid::parse_str(value.trim())
                .map_err(|_| FhirError::new(400, "invalid", "patient_id is a Salus patient id"))?;
            if actor.patient.is_some_and(|own| own != p) {
                return Err(FhirError::new(
                    403,
                    "forbidden",
                    "a patient-context token reads its own patient's data only",
                ));
            }
            confined.push(Filter {
                also: Vec::new(),
                param: "patient".into(),
                system: None,
                op: FilterOp::Eq,
                value: p.to_string(),
            });
        }
        let mut q = RowSearch::parse(state, actor, t, &rest, strict).await?;
        confined.append(&mut q.filters);
        q.filters = confined;
        Ok(ClinicalSearch { kind, q })
    }

    /// The matching resources after `after`, at most `limit`, the ones the actor may see.
    pub(super) async fn run<A: Mapped>(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Current<A>>, FhirError>
    where
        A::Command: Send,
    {
        let q = SearchQuery {
            resource_type: A::RESOURCE_TYPE.into(),
            filters: self.q.filters.clone(),
            after,
            limit,
            newest_first: false,
            order_by: None,
        };
        let found = state.services.search::<A>(&actor.ctx, &q).await?;
        found
            .into_iter()
            .filter(|c| actor.sees(A::RESOURCE_TYPE, &c.row.doc))
            .map(|c| checked(state, c))
            .collect()
    }
}

/// The ids (`Type/id`) of the resources of a domain-backed type matching `pairs`: what a
/// chain through it, or a conditional reference to it, stands for.
pub(super) async fn matching_refs<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    pairs: &[(String, String)],
    limit: u32,
) -> Result<Vec<String>, FhirError>
where
    A::Command: Send,
{
    let s = Box::pin(ClinicalSearch::parse::<A>(state, actor, pairs, true)).await?;
    let found = s.run::<A>(state, actor, None, limit).await?;
    access_log::record_docs(
        state,
        actor,
        AccessAction::Search,
        A::RESOURCE_TYPE,
        found.iter().map(|c| (c.row.id, &c.row.doc)),
    )
    .await?;
    Ok(found
        .into_iter()
        .map(|c| format!("{}/{}", A::FHIR_TYPE, c.row.id))
        .collect())
}

impl ClinicalSearch {
    /// Resources of `kind` whose reference parameter `param` names one of `refs`.
    pub(super) fn referencing(kind: DomainType, param: &str, refs: Vec<String>) -> Self {
        ClinicalSearch {
            kind,
            q: RowSearch::referencing(kind.name(), param, refs),
        }
    }

    /// The matches as search results (reads not yet logged).
    pub(super) async fn hits(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Hit>, FhirError> {
        let mut hits = with_type!(self.kind, A => {
            let found = self.run::<A>(state, actor, after, limit).await?;
            found.iter().map(hit_of::<A>).collect::<Vec<_>>()
        });
        if let Some(k) = self.kind.also(actor) {
            // The other aggregate's rows carry the same parameter names: the same filters,
            // merged in id order.
            with_type!(k, B => {
                let found = self.run::<B>(state, actor, after, limit).await?;
                hits.extend(found.iter().map(hit_of::<B>));
            });
            hits.sort_by_key(|h| h.row_id);
            hits.truncate(limit as usize);
        }
        Ok(hits)
    }

    /// How many match; `None` when the store cannot say (a patient-context actor).
    pub(super) async fn count(
        &self,
        state: &AppState,
        actor: &Actor,
    ) -> Result<Option<u64>, FhirError> {
        if actor.patient.is_some() {
            return Ok(None);
        }
        let mut total = 0;
        for kind in std::iter::once(self.kind).chain(self.kind.also(actor)) {
            let rt = with_type!(kind, A => A::RESOURCE_TYPE);
            let q = SearchQuery {
                resource_type: rt.into(),
                filters: self.q.filters.clone(),
                after: None,
                limit: 1,
                newest_first: false,
                order_by: None,
            };
            total += state.services.count(&actor.ctx, &q).await?;
        }
        Ok(Some(total))
    }
}

/// A resource of a domain-backed type as a search result.
fn hit_of<A: Mapped>(c: &Current<A>) -> Hit
where
    A::Command: Send,
{
    Hit {
        row_id: c.row.id,
        stored: A::RESOURCE_TYPE,
        patient: access_log::patient_of(A::RESOURCE_TYPE, &c.row.doc),
        reference: format!("{}/{}", A::FHIR_TYPE, c.row.id),
        resource: c.state.render(c.row.version, c.row.updated_at),
    }
}

pub(super) async fn search<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, FhirError>
where
    A::Command: Send,
{
    let mut search =
        ClinicalSearch::parse::<A>(state, actor, pairs, prefers_strict(headers)).await?;
    let results = std::mem::take(&mut search.q.results);
    let (applied, ignored) = (
        std::mem::take(&mut search.q.applied),
        std::mem::take(&mut search.q.ignored),
    );
    let (count, cursor) = (search.q.count, search.q.cursor);
    results::answer(
        state,
        actor,
        headers,
        A::FHIR_TYPE,
        TypeSearch::Clinical(search),
        &results,
        &applied,
        count,
        cursor,
        &ignored,
    )
    .await
}

/// The CapabilityStatement entry of a domain-backed type: every searchable R4 parameter.
pub(super) fn capability<A: Mapped>(documentation: &str) -> Value
where
    A::Command: Send,
{
    let t = A::FHIR_TYPE;
    let params: Vec<Value> = search_parameters()
        .of(t)
        .into_iter()
        .filter(|p| fsearch::is_searchable(p))
        .filter_map(|p| {
            let modifiers = fsearch::modifiers_doc(p.kind);
            capability_param(t, &p.code, &modifiers)
        })
        .collect();
    let mut interactions = vec![
        json!({"code": "read"}),
        json!({"code": "vread"}),
        json!({"code": "update"}),
        json!({"code": "patch"}),
        json!({"code": "history-instance"}),
        json!({"code": "create"}),
        json!({"code": "search-type"}),
    ];
    if A::DELETES {
        interactions.push(json!({"code": "delete"}));
    }
    json!({
        "type": t,
        "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
        "documentation": documentation,
        "interaction": interactions,
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": true,
        "conditionalCreate": true,
        "conditionalUpdate": true,
        "conditionalDelete": if A::DELETES { "single" } else { "not-supported" },
        "searchParam": params
    })
}

/// Decide one transaction write of a domain-backed type (`None`: nothing to write).
pub(super) async fn prepare<A: Mapped>(
    state: &AppState,
    actor: &Actor,
    method: &str,
    plan: TxWrite<'_>,
    pending: &Pending,
) -> Result<Option<Prepared>, FhirError>
where
    A::Command: Send,
{
    let svc = &state.services;
    match plan {
        TxWrite::Create { id, body } => {
            check_type::<A>(body)?;
            let uuid = Uuid::parse_str(id).map_err(ApiError::internal)?;
            let command = A::create_command(state, actor, uuid, body, pending).await?;
            Ok(Some(
                svc.prepare_new::<A, _>(uuid, move |_, _| Ok(command), None)
                    .map_err(domain_error::<A>)?,
            ))
        }
        TxWrite::Update { id, expected, body } if method == "PUT" => {
            let mut r = body.clone();
            if let Some(o) = r.as_object_mut() {
                o.entry("id")
                    .or_insert_with(|| Value::String(id.to_owned()));
            }
            check_type::<A>(&r)?;
            check_id::<A>(&r, id)?;
            let current = find::<A>(state, actor, id)
                .await?
                .ok_or_else(|| not_found(A::FHIR_TYPE, id))?;
            let Some(command) =
                A::update_command(state, actor, &current.state, &r, pending).await?
            else {
                return Ok(None);
            };
            Ok(Some(
                svc.prepare::<A, _>(
                    &actor.ctx,
                    current.row.id,
                    expected.or(Some(current.row.version)),
                    move |_, _| Ok(command),
                    None,
                )
                .await
                .map_err(domain_error::<A>)?,
            ))
        }
        TxWrite::Delete { id, expected } => {
            let current = find::<A>(state, actor, id)
                .await?
                .ok_or_else(|| not_found(A::FHIR_TYPE, id))?;
            let command = A::delete_command(&current.state).ok_or_else(no_delete::<A>)?;
            Ok(Some(
                svc.prepare::<A, _>(
                    &actor.ctx,
                    current.row.id,
                    expected,
                    move |_, _| Ok(command),
                    None,
                )
                .await
                .map_err(domain_error::<A>)?,
            ))
        }
        TxWrite::Update { .. } => Err(FhirError::new(
            400,
            "not-supported",
            format!(
                "{method} of a {} is not supported in a transaction",
                A::FHIR_TYPE
            ),
        )),
    }
}

/// A write of a transaction entry, its references resolved.
pub(super) enum TxWrite<'a> {
    Create {
        id: &'a str,
        body: &'a Value,
    },
    Update {
        id: &'a str,
        expected: Option<i64>,
        body: &'a Value,
    },
    Delete {
        id: &'a str,
        expected: Option<i64>,
    },
}

/// The FHIR types Salus aggregates serve, for the code that takes the type by name (the
/// Bundle entries, chains, conditional references).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DomainType {
    Observation,
    Condition,
    AllergyIntolerance,
    Encounter,
    Procedure,
    DocumentReference,
    /// The attachments of medical records, also served as DocumentReference (beside the
    /// notes: [`DomainType::also`]); not in [`DomainType::ALL`].
    DocumentFile,
    Consent,
    Practitioner,
    Organization,
    Location,
}

impl DomainType {
    pub(super) const ALL: &'static [DomainType] = &[
        DomainType::Observation,
        DomainType::Condition,
        DomainType::AllergyIntolerance,
        DomainType::Encounter,
        DomainType::Procedure,
        DomainType::DocumentReference,
        DomainType::Consent,
        DomainType::Practitioner,
        DomainType::Organization,
        DomainType::Location,
    ];

    /// The other aggregate served under the same FHIR type, when the actor may read it:
    /// attachments beside notes as DocumentReference.
    pub(super) fn also(self, actor: &Actor) -> Option<Self> {
        with_type!(self, A => A::ALSO).filter(|k| k.readable_by(actor))
    }

    /// Whether the actor holds this type's read permission.
    fn readable_by(self, actor: &Actor) -> bool {
        actor.require(self.permission(true)).is_ok()
    }

    pub(super) fn of(t: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|d| d.name() == t)
    }

    pub(super) fn name(self) -> &'static str {
        with_type!(self, A => A::FHIR_TYPE)
    }

    /// The permission an interaction needs (the `/api/v1` twin's).
    pub(super) fn permission(self, read: bool) -> &'static str {
        with_type!(self, A => if read { A::READ } else { A::WRITE })
    }

    pub(super) async fn read(
        self,
        state: &AppState,
        actor: &Actor,
        id: &str,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => read::<A>(state, actor, id).await)
    }

    pub(super) async fn history(
        self,
        state: &AppState,
        actor: &Actor,
        headers: &HeaderMap,
        id: &str,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => history::<A>(state, actor, headers, id).await)
    }

    pub(super) async fn vread(
        self,
        state: &AppState,
        actor: &Actor,
        id: &str,
        vid: &str,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => vread::<A>(state, actor, id, vid).await)
    }

    pub(super) async fn search(
        self,
        state: &AppState,
        actor: &Actor,
        headers: &HeaderMap,
        pairs: &[(String, String)],
    ) -> Result<Response, FhirError> {
        with_type!(self, A => search::<A>(state, actor, headers, pairs).await)
    }

    pub(super) async fn create(
        self,
        state: &AppState,
        actor: &Actor,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => create::<A>(state, actor, headers, body).await)
    }

    pub(super) async fn update(
        self,
        state: &AppState,
        actor: &Actor,
        headers: &HeaderMap,
        id: &str,
        body: &Value,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => update::<A>(state, actor, headers, id, body).await)
    }

    pub(super) async fn delete(
        self,
        state: &AppState,
        actor: &Actor,
        headers: &HeaderMap,
        id: &str,
    ) -> Result<Response, FhirError> {
        with_type!(self, A => delete::<A>(state, actor, headers, id).await)
    }

    pub(super) async fn prepare(
        self,
        state: &AppState,
        actor: &Actor,
        method: &str,
        plan: TxWrite<'_>,
        pending: &Pending,
    ) -> Result<Option<Prepared>, FhirError> {
        with_type!(self, A => prepare::<A>(state, actor, method, plan, pending).await)
    }

    /// `Type/id` of what matches `pairs` (at most `limit`), the reads logged.
    pub(super) async fn refs(
        self,
        state: &AppState,
        actor: &Actor,
        pairs: &[(String, String)],
        limit: u32,
    ) -> Result<Vec<String>, FhirError> {
        with_type!(self, A => matching_refs::<A>(state, actor, pairs, limit).await)
    }

    /// The FHIR form of what matches `pairs` (at most `limit`, the actor's to see): the
    /// sources a `_has` follows (not answered, so not logged as read).
    pub(super) async fn matching_resources(
        self,
        state: &AppState,
        actor: &Actor,
        pairs: &[(String, String)],
        limit: u32,
    ) -> Result<Vec<Value>, FhirError> {
        with_type!(self, A => {
            let s = Box::pin(ClinicalSearch::parse::<A>(state, actor, pairs, true)).await?;
            let found = s.run::<A>(state, actor, None, limit).await?;
            Ok(found
                .iter()
                .map(|c| c.state.render(c.row.version, c.row.updated_at))
                .collect())
        })
    }

    /// The FHIR form of a committed write of this type.
    pub(super) fn render(self, d: salus_domain::service::Done) -> Option<Value> {
        with_type!(self, A => match d.into_current::<A>() {
            Ok(c) => Some(c.state.render(c.row.version, c.row.updated_at)),
            Err(d) => A::ALSO.and_then(|k| k.render(d)),
        })
    }

    /// Whether the tenant holds this type's (or its `ALSO`'s) `id`, whoever may see it.
    pub(super) async fn exists(
        self,
        state: &AppState,
        actor: &Actor,
        id: Uuid,
    ) -> Result<bool, FhirError> {
        with_type!(self, A => exists::<A>(state, actor, id).await)
    }

    /// The type a create of `body` is written as: [`Mapped::ALSO`] when the body is one
    /// of its (a DocumentReference holding a file).
    pub(super) fn for_create(self, body: &Value) -> Self {
        with_type!(self, A => A::ALSO.filter(|_| A::creates_also(body)).unwrap_or(self))
    }

    /// The resource `id` as a search result (for `_include`), if the actor may see it.
    pub(super) async fn hit(
        self,
        state: &AppState,
        actor: &Actor,
        id: &str,
    ) -> Result<Option<Hit>, FhirError> {
        let found =
            with_type!(self, A => find::<A>(state, actor, id).await?.as_ref().map(hit_of::<A>));
        match (found, self.also(actor)) {
            (None, Some(k)) => Box::pin(k.hit(state, actor, id)).await,
            (found, _) => Ok(found),
        }
    }

    /// One page of every resource of this type for `$export`, in id order after `after`:
    /// (patient, last updated, FHIR form), and the cursor of the next page.
    #[allow(clippy::type_complexity)]
    pub(super) async fn export_page(
        self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<(Option<Uuid>, DateTime<Utc>, Value)>, Option<Uuid>), FhirError> {
        with_type!(self, A => {
            let q = SearchQuery {
                resource_type: A::RESOURCE_TYPE.into(),
                filters: Vec::new(),
                after,
                limit,
                newest_first: false,
                order_by: None,
            };
            let found = state.services.search::<A>(&actor.ctx, &q).await?;
            let next = (found.len() >= limit as usize)
                .then(|| found.last().map(|c| c.row.id))
                .flatten();
            let page = found
                .iter()
                .filter(|c| actor.sees(A::RESOURCE_TYPE, &c.row.doc))
                .map(|c| {
                    (
                        access_log::patient_of(A::RESOURCE_TYPE, &c.row.doc),
                        c.row.updated_at,
                        c.state.render(c.row.version, c.row.updated_at),
                    )
                })
                .collect();
            Ok((page, next))
        })
    }

    /// The stored resource type (and stream type) of this type's aggregate.
    pub(super) fn stored(self) -> &'static str {
        with_type!(self, A => A::RESOURCE_TYPE)
    }

    /// Version `version` of stream `stream` as a history entry, with the patient it is
    /// about (`None`: not there, or not the actor's to see).
    pub(super) async fn history_entry(
        self,
        state: &AppState,
        actor: &Actor,
        base: &str,
        stream: Uuid,
        version: i64,
    ) -> Result<Option<(Value, Option<Uuid>, Uuid)>, FhirError> {
        with_type!(self, A => {
            let Some(c) = state.services.at_version::<A>(&actor.ctx, stream, version).await? else {
                return Ok(None);
            };
            if !actor.sees(A::RESOURCE_TYPE, &c.row.doc) {
                return Ok(None);
            }
            let patient = access_log::patient_of(A::RESOURCE_TYPE, &c.row.doc);
            Ok(Some((version_entry(base, &c), patient, c.row.id)))
        })
    }

    /// The CapabilityStatement entries of every domain-backed type.
    pub(super) fn capabilities() -> Vec<Value> {
        Self::ALL
            .iter()
            .map(|d| match d {
                DomainType::Observation => super::observation::capability(),
                DomainType::Condition => super::statement::condition_capability(),
                DomainType::AllergyIntolerance => super::statement::allergy_capability(),
                DomainType::Encounter => super::encounter::encounter_capability(),
                DomainType::Procedure => super::encounter::procedure_capability(),
                DomainType::DocumentReference | DomainType::DocumentFile => {
                    super::note::capability()
                }
                DomainType::Consent => super::consent::capability(),
                DomainType::Practitioner => super::staff::practitioner_capability(),
                DomainType::Organization => super::staff::organization_capability(),
                DomainType::Location => super::staff::location_capability(),
            })
            .collect()
    }
}
