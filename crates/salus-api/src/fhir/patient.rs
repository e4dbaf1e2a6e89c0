//! FHIR Patient: the registry's Patient aggregate, both ways.

use super::results::{self, Hit, ResultParams, TypeSearch};
use super::*;

/// The interactions and search parameters served per resource type.
pub(super) const PATIENT_SEARCH: &[&str] = &[
    "_id",
    "identifier",
    "name",
    "family",
    "given",
    "birthdate",
    "gender",
];

/// What this module serves of Patient (its CapabilityStatement entry).
pub(super) fn capability() -> Value {
    let mut params: Vec<Value> = PATIENT_SEARCH
        .iter()
        .filter_map(|code| {
            let kind = search_parameters().get("Patient", code)?.kind;
            let doc = match kind {
                ParamType::Date => "Every prefix; a partial date is its whole period.",
                ParamType::String => "Starts-with, case and accents ignored.",
                _ => "system|code, or a bare code in any system; comma-separated codes mean any of them.",
            };
            let doc = format!("{doc} {}", salus_fhir::search::modifiers_doc(kind));
            capability_param("Patient", code, &doc)
        })
        .collect();
    // The others, over the FHIR rendering's rows (chains one level deep).
    params.extend(
        search_parameters()
            .of("Patient")
            .into_iter()
            .filter(|p| salus_fhir::search::is_searchable(p))
            .filter(|p| !PATIENT_SEARCH.contains(&p.code.as_str()))
            .filter_map(|p| {
                let doc = salus_fhir::search::modifiers_doc(p.kind);
                capability_param("Patient", &p.code, &doc)
            }),
    );
    json!({
        "type": "Patient",
        "profile": "http://hl7.org/fhir/StructureDefinition/Patient",
        "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"}, {"code": "history-instance"}, {"code": "history-type"}, {"code": "create"}, {"code": "search-type"}],
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": true,
        "conditionalCreate": true,
        "conditionalUpdate": true,
        "conditionalDelete": "not-supported",
        "searchInclude": super::documents::includes_of("Patient"),
        "searchRevInclude": super::documents::revincludes_of("Patient"),
        "searchParam": params
    })
}

/// The patient `id` now, its read logged.
async fn load_patient(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Current<Patient>, FhirError> {
    let row = http::read_current::<Patient>(state, actor, "Patient", id).await?;
    let row = http::parse_text_row::<Patient>(row)?;
    decode(row)
}

fn decode(row: salus_store::ResourceRow) -> Result<Current<Patient>, FhirError> {
    let state: Patient = serde_json::from_value(row.doc.clone()).map_err(ApiError::internal)?;
    Ok(Current { state, row })
}

/// Read a Patient.
#[utoipa::path(get, path = "/fhir/R4/Patient/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Patient id")),
    responses((status = 200, description = "The Patient", content_type = "application/fhir+json"), (status = 404, description = "No such patient (OperationOutcome)")),
    security(("bearer" = ["patients:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let c = load_patient(&state, &actor, &id).await?;
    Ok(patient_response(StatusCode::OK, &c, false))
}

/// Read a Patient as it stood at version `vid`.
#[utoipa::path(get, path = "/fhir/R4/Patient/{id}/_history/{vid}", tag = "fhir",
    params(("id" = String, Path, description = "Patient id"), ("vid" = String, Path, description = "Version id")),
    responses((status = 200, description = "The Patient at that version", content_type = "application/fhir+json"), (status = 404, description = "No such patient or version (OperationOutcome)")),
    security(("bearer" = ["patients:read"])))]
pub async fn vread(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, vid)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let not_found = || {
        FhirError::new(
            404,
            "not-found",
            format!("no Patient {id} at version {vid}"),
        )
    };
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let version = vid
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(not_found)?;
    // The current record decides who may see it (a patient-context token its own only);
    // the read is logged there.
    load_patient(&state, &actor, &id).await?;
    let c = state
        .services
        .at_version::<Patient>(&actor.ctx, uuid, version)
        .await?
        .ok_or_else(not_found)?;
    Ok(patient_response(StatusCode::OK, &c, false))
}

/// Every version of a Patient, newest first, as a history Bundle.
#[utoipa::path(get, path = "/fhir/R4/Patient/{id}/_history", tag = "fhir",
    params(("id" = String, Path, description = "Patient id")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json"), (status = 404, description = "No such patient (OperationOutcome)")),
    security(("bearer" = ["patients:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    // The current record decides who may see it; the read is logged there.
    let current = load_patient(&state, &actor, &id).await?;
    let versions = state
        .services
        .versions::<Patient>(&actor.ctx, current.row.id)
        .await?;
    let base = base_url(&headers);
    let entries: Vec<Value> = versions
        .iter()
        .rev()
        .map(|c| version_entry(&base, c))
        .collect();
    let links = vec![
        json!({"relation": "self", "url": format!("{base}/Patient/{}/_history", current.row.id)}),
    ];
    let total = entries.len();
    let mut bundle = bundle_of(&state, "history", links, entries);
    bundle["total"] = json!(total);
    Ok(ok_json(&bundle))
}

/// One version of a patient as a history Bundle entry.
pub(super) fn version_entry(base: &str, c: &Current<Patient>) -> Value {
    let (method, url) = if c.row.version == 1 {
        ("POST", "Patient".to_owned())
    } else {
        ("PUT", format!("Patient/{}", c.row.id))
    };
    json!({
        "fullUrl": format!("{base}/Patient/{}", c.row.id),
        "resource": fhir_patient::to_fhir(&c.state, c.row.version, c.row.updated_at),
        "request": {"method": method, "url": url},
        "response": {
            "status": if c.row.version == 1 { "201 Created" } else { "200 OK" },
            "etag": format!("W/\"{}\"", c.row.version),
            "lastModified": fhir_patient::instant(c.row.updated_at),
        },
    })
}

/// A FHIR Patient body as the aggregate's terms, or a 422 naming the elements at fault.
pub(super) fn parse_patient(body: &Value) -> Result<fhir_patient::PatientWrite, FhirError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error("invalid", "the body must be a Patient resource").at("resourceType"),
            ],
        });
    }
    fhir_patient::from_fhir(body).map_err(FhirError::invalid)
}

/// The one command a FHIR write is: the details, and the lifecycle it states (`active`, the
/// date of death), decided by the aggregate in one write.
pub(super) fn replace_command(
    current: Option<&Patient>,
    id: Uuid,
    write: &fhir_patient::PatientWrite,
    today: chrono::NaiveDate,
) -> Result<PatientCommand, salus_kernel::DomainError> {
    let active_before =
        current.is_some_and(|p| p.status == salus_domain::registry::patient::PatientStatus::Active);
    Ok(PatientCommand::Replace {
        id,
        details: PatientDetails::parse(write.input_for(active_before), today)?,
        active: write.active,
        death: write.deceased.flatten(),
        today,
    })
}

/// The command of a FHIR update: [`replace_command`] on a Patient that exists (an update
/// that creates one goes through [`replace_command`] itself: [`update`]).
pub(super) fn update_command(
    current: Option<&Patient>,
    id: Uuid,
    write: &fhir_patient::PatientWrite,
    today: chrono::NaiveDate,
) -> Result<PatientCommand, salus_kernel::DomainError> {
    if current.is_none() {
        return Err(salus_kernel::DomainError::NotFound("Patient".into()));
    }
    replace_command(current, id, write, today)
}

/// A refused lifecycle step names `Patient.active` (the other refusals name their field).
pub(super) fn lifecycle_path(e: salus_domain::service::ServiceError) -> FhirError {
    let api = ApiError::from(e);
    let transition = api.kind == "illegal-transition" || api.kind == "rule-violation";
    let e = FhirError::from(api);
    if transition {
        with_path(e, "Patient.active")
    } else {
        e
    }
}

fn with_path(mut e: FhirError, path: &str) -> FhirError {
    for i in &mut e.issues {
        if i.expression.is_none() {
            i.expression = Some(path.to_owned());
        }
    }
    e
}

/// Create a Patient; with `If-None-Exist` (a search), only when none matches.
#[utoipa::path(post, path = "/fhir/R4/Patient", tag = "fhir",
    params(("If-None-Exist" = Option<String>, Header, description = "A Patient search (e.g. identifier=urn:mrn|123): create only when it matches nothing")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, description = "Created (Location, ETag)"), (status = 200, description = "If-None-Exist matched one Patient: that one"), (status = 412, description = "If-None-Exist matched more than one"), (status = 422, description = "Invalid (OperationOutcome naming the elements)")),
    security(("bearer" = ["patients:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    let write = parse_patient(&body.value)?;
    if let Some(pairs) = if_none_exist(&headers)? {
        let search = PatientSearch::parse(&pairs, true)?;
        let found = search.run(&state, &actor, None, 2).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                access_log::record(
                    &state,
                    &actor,
                    AccessAction::Read,
                    "patient",
                    [Access {
                        patient: one.row.id,
                        resource_id: Some(one.row.id),
                    }],
                )
                .await?;
                return Ok(patient_response(StatusCode::OK, one, false));
            }
            _ => {
                return Err(FhirError::new(
                    412,
                    "duplicate",
                    "If-None-Exist matches more than one Patient",
                ));
            }
        }
    }
    create_as(&state, &actor, &headers, Uuid::now_v7(), &write).await
}

/// Whether the tenant holds patient `id`, whoever may see it (an update under an id it does
/// not hold creates the patient).
pub(super) async fn held(state: &AppState, actor: &Actor, id: Uuid) -> Result<bool, FhirError> {
    Ok(state
        .services
        .row::<Patient>(&actor.ctx, id)
        .await?
        .is_some())
}

/// Register what `write` says as the new patient `id`: 201 with its Location.
async fn create_as(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: Uuid,
    write: &fhir_patient::PatientWrite,
) -> Result<Response, FhirError> {
    let c = state
        .services
        .create::<Patient, _>(
            &actor.ctx,
            id,
            |_, now| replace_command(None, id, write, now.date_naive()),
            None,
        )
        .await
        .map_err(lifecycle_path)?;
    Ok(preferred(headers, patient_response(StatusCode::CREATED, &c, true)).await)
}

/// Replace a Patient's content. `If-Match: W/"n"` makes it conditional on version `n`.
#[utoipa::path(put, path = "/fhir/R4/Patient/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Patient id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "Updated (ETag)"), (status = 404, description = "No such patient"), (status = 412, description = "Stale If-Match"), (status = 422, description = "Invalid (OperationOutcome naming the elements)")),
    security(("bearer" = ["patients:write"])))]
pub async fn update(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    replace(&state, &actor, &id, &headers, &body.value).await
}

/// [`update`] of `id` with `body` (also what a patch or a conditional update comes to).
async fn replace(
    state: &AppState,
    actor: &Actor,
    id: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, FhirError> {
    let write = parse_patient(body)?;
    match write.id.as_deref() {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(FhirError {
                status: StatusCode::BAD_REQUEST,
                issues: vec![
                    Issue::error(
                        "invalid",
                        format!("the body's id '{body_id}' is not the id in the URL"),
                    )
                    .at("Patient.id"),
                ],
            });
        }
        None => {
            return Err(FhirError {
                status: StatusCode::BAD_REQUEST,
                issues: vec![
                    Issue::error("required", "an update needs the resource's id in the body")
                        .at("Patient.id"),
                ],
            });
        }
    }
    let uuid = Uuid::parse_str(id).map_err(|_| super::rest::not_created("Patient", id))?;
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(headers)?,
        None => None,
    };
    // An update that creates: under the client's id, a UUID (one another tenant holds is a
    // conflict, as the store finds it).
    if expected.is_none() && !held(state, actor, uuid).await? {
        return create_as(state, actor, headers, uuid, &write).await;
    }
    let c = state
        .services
        .execute::<Patient, _>(
            &actor.ctx,
            uuid,
            expected,
            |current, now| update_command(current, uuid, &write, now.date_naive()),
            None,
        )
        .await
        .map_err(lifecycle_path)?;
    Ok(preferred(headers, patient_response(StatusCode::OK, &c, false)).await)
}

/// Change a Patient with a JSON Patch (`application/json-patch+json`) of its current FHIR
/// form; the result is an update (`If-Match` as for a PUT).
#[utoipa::path(patch, path = "/fhir/R4/Patient/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Patient id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": patch only version n")),
    request_body(content = Object, content_type = "application/json-patch+json"),
    responses((status = 200, description = "Patched (ETag)"), (status = 400, description = "Not a JSON Patch"), (status = 404, description = "No such patient"), (status = 412, description = "Stale If-Match"), (status = 422, description = "The patch does not apply, or the result is invalid")),
    security(("bearer" = ["patients:write"])))]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    let not_found = || FhirError::new(404, "not-found", format!("no Patient {id}"));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let current = state
        .services
        .load::<Patient>(&actor.ctx, uuid)
        .await?
        .filter(|c| actor.sees("patient", &c.row.doc))
        .ok_or_else(not_found)?;
    let mut doc =
        fhir_patient::to_fhir(&current.state, current.row.version, current.row.updated_at);
    super::apply_json_patch(&mut doc, &body.value)?;
    super::drop_version_meta(&mut doc);
    replace(&state, &actor, &id, &headers, &doc).await
}

/// Conditional update (`PUT /Patient?identifier=…`): the one match is updated; with none,
/// the body (without an id) is created; several are a 412.
#[utoipa::path(put, path = "/fhir/R4/Patient", tag = "fhir",
    params(("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "The match updated"), (status = 201, description = "Created"), (status = 400, description = "No search, or an id the match does not have"), (status = 412, description = "More than one match, or a stale If-Match"), (status = 422, description = "Invalid (OperationOutcome naming the elements)")),
    security(("bearer" = ["patients:write"])))]
pub async fn conditional_update(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    if pairs.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            "a conditional update names a search (PUT /Patient?identifier=system|value)",
        ));
    }
    let search = PatientSearch::parse(&pairs, true)?;
    let found = search.run(&state, &actor, None, 2).await?;
    let body_id = body
        .value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id_issue = |msg: String| FhirError {
        status: StatusCode::BAD_REQUEST,
        issues: vec![Issue::error("invalid", msg).at("Patient.id")],
    };
    match found.as_slice() {
        [] if body_id.as_deref().is_some_and(|b| Uuid::parse_str(b).is_ok()) => {
            let id = body_id.unwrap_or_default();
            replace(&state, &actor, &id, &headers, &body.value).await
        }
        [] if body_id.is_some() => Err(id_issue(
            "nothing matches, and Salus's Patient ids are UUIDs: send the body without an id (or with a UUID) to create it".into(),
        )),
        [] => {
            let mut plain = headers.clone();
            plain.remove("if-none-exist");
            create(State(state), actor, plain, body).await
        }
        [one] => {
            let id = one.row.id.to_string();
            if body_id.as_deref().is_some_and(|b| b != id) {
                return Err(id_issue(format!(
                    "the body's id is not that of the match (Patient/{id})"
                )));
            }
            access_log::record(
                &state,
                &actor,
                AccessAction::Search,
                "patient",
                [Access {
                    patient: one.row.id,
                    resource_id: Some(one.row.id),
                }],
            )
            .await?;
            let mut value = body.value;
            value["id"] = Value::String(id.clone());
            replace(&state, &actor, &id, &headers, &value).await
        }
        _ => Err(FhirError::new(
            412,
            "duplicate",
            "the conditional update matches more than one Patient",
        )),
    }
}

/// A Patient search: store filters, ids asked by `_id`, the page size.
pub(super) struct PatientSearch {
    filters: Vec<Filter>,
    ids: Option<Vec<Uuid>>,
    count: u32,
    /// The parameters applied, for the self link.
    applied: Vec<(String, String)>,
    /// Why each parameter left out was (lenient handling).
    ignored: Vec<String>,
    cursor: Option<Uuid>,
    /// `_sort`, `_summary`, `_include` and the other result parameters.
    results: ResultParams,
    /// Chained parameters (`general-practitioner.name=…`), resolved into filters when the
    /// search runs.
    chains: Vec<Chain>,
}

/// A chained parameter: `param` names one of `targets` that matches `inner=value`.
struct Chain {
    param: String,
    targets: Vec<String>,
    inner: String,
    value: String,
}

/// Whether the registry's own rows answer `name` (one of [`PATIENT_SEARCH`]) as asked: no
/// modifier, one value (gender takes several), and for the birth date a prefix of eq, lt,
/// gt, le or ge. The rest goes over the FHIR rendering's rows, which answer every
/// modifier and prefix.
fn registry_form(name: &str, modifier: Option<&str>, value: &str) -> bool {
    if modifier.is_some() || (value.contains(',') && name != "gender") {
        return false;
    }
    name != "birthdate"
        || match value.get(..2) {
            Some(p) if p.bytes().all(|b| b.is_ascii_alphabetic()) => {
                matches!(p, "eq" | "lt" | "gt" | "le" | "ge")
            }
            _ => true,
        }
}

/// A day as the `birth_date` search rows hold it.
fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

impl PatientSearch {
    fn of(filters: Vec<Filter>) -> Self {
        PatientSearch {
            filters,
            ids: None,
            count: 50,
            applied: Vec::new(),
            ignored: Vec::new(),
            cursor: None,
            results: ResultParams::default(),
            chains: Vec::new(),
        }
    }

    /// Patients whose reference parameter `param` (`general-practitioner`, `organization`,
    /// `link`) names one of `refs`: what `_revinclude=Patient:<param>` adds.
    pub(super) fn referencing(param: &str, refs: Vec<String>) -> Self {
        Self::of(vec![super::documents::naming("Patient", param, refs)])
    }

    pub(super) fn parse(pairs: &[(String, String)], strict: bool) -> Result<Self, FhirError> {
        let mut s = Self::of(Vec::new());
        let mut ignored = Vec::new();
        for (key, value) in pairs {
            let value = value.trim();
            if key == "_count" {
                s.count = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n.min(200))
                    .ok_or_else(|| {
                        FhirError::new(
                            400,
                            "invalid",
                            "_count must be a whole number from 1 (at most 200 are returned)",
                        )
                    })?;
                continue;
            }
            if key == "_cursor" {
                s.cursor = Some(http::decode_cursor(value)?);
                continue;
            }
            if key == "_format" {
                if !matches!(value, "json" | "application/json" | "application/fhir+json") {
                    return Err(FhirError::new(
                        406,
                        "not-supported",
                        "only JSON is served (_format=json)",
                    ));
                }
                continue;
            }
            if s.results.take("Patient", key, value)? {
                if ResultParams::linked(key) {
                    s.applied.push((key.clone(), value.to_owned()));
                }
                continue;
            }
            let (name, modifier) = match key.split_once(':') {
                Some((n, m)) => (n, Some(m)),
                None => (key.as_str(), None),
            };
            if !PATIENT_SEARCH.contains(&name)
                || (name != "_id" && !registry_form(name, modifier, value))
            {
                // Every other R4 parameter, and the registry's own ones with a modifier,
                // several values or a prefix its rows do not answer: over the rows of the
                // Patient's FHIR rendering.
                s.fhir_parameter(key, value, strict, &mut ignored)?;
                continue;
            }
            if let Some(m) = modifier {
                // An unsupported modifier changes the meaning: always refused.
                return Err(FhirError::new(
                    400,
                    "not-supported",
                    format!("the modifier ':{m}' is not supported on '{name}'"),
                ));
            }
            if value.is_empty() {
                continue;
            }
            s.applied.push((key.clone(), value.to_owned()));
            let any_of: Vec<&str> = value.split(',').map(str::trim).collect();
            match name {
                "_id" => {
                    // An id that is not ours matches nothing.
                    let ids: Vec<Uuid> = any_of
                        .iter()
                        .filter_map(|v| Uuid::parse_str(v).ok())
                        .collect();
                    s.ids = Some(match s.ids.take() {
                        Some(prev) => prev.into_iter().filter(|i| ids.contains(i)).collect(),
                        None => ids,
                    });
                }
                "identifier" => {
                    if any_of.len() > 1 {
                        return Err(FhirError::new(
                            400,
                            "not-supported",
                            "identifier takes one value (system|value) per parameter",
                        ));
                    }
                    s.filters.push(http::token("identifier", value));
                }
                "gender" => s.filters.push(Filter {
                    also: Vec::new(),
                    param: "gender".into(),
                    system: None,
                    op: FilterOp::In(any_of.iter().map(|g| g.to_ascii_lowercase()).collect()),
                    value: String::new(),
                }),
                "name" | "family" | "given" => {
                    if any_of.len() > 1 {
                        return Err(FhirError::new(
                            400,
                            "not-supported",
                            format!("{name} takes one value per parameter"),
                        ));
                    }
                    s.filters.push(Filter {
                        also: Vec::new(),
                        param: name.into(),
                        system: None,
                        op: FilterOp::Prefix,
                        value: fold(value),
                    });
                }
                "birthdate" => {
                    let (prefix, date) = match value.get(..2) {
                        Some(p) if p.bytes().all(|b| b.is_ascii_alphabetic()) => (p, &value[2..]),
                        _ => ("eq", value),
                    };
                    let (low, high) = salus_fhir::index::date_range(date)
                        .ok_or_else(|| FhirError::new(400, "invalid", format!("birthdate '{value}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD, or a date-time), with an optional prefix eq, lt, gt, le, ge")))?;
                    let (low, high) = (day(low), {
                        // The first day after the period (a period ending at midnight ends that day).
                        let end = high - chrono::Duration::nanoseconds(1);
                        day(end + chrono::Duration::days(1))
                    });
                    let f = |op: FilterOp, v: &str| Filter {
                        also: Vec::new(),
                        param: "birth_date".into(),
                        system: None,
                        op,
                        value: v.to_owned(),
                    };
                    match prefix {
                        "eq" => {
                            s.filters.push(f(FilterOp::Ge, &low));
                            s.filters.push(f(FilterOp::Lt, &high));
                        }
                        "ge" => s.filters.push(f(FilterOp::Ge, &low)),
                        "gt" => s.filters.push(f(FilterOp::Ge, &high)),
                        "le" => s.filters.push(f(FilterOp::Lt, &high)),
                        "lt" => s.filters.push(f(FilterOp::Lt, &low)),
                        other => {
                            return Err(FhirError::new(
                                400,
                                "not-supported",
                                format!(
                                    "the prefix '{other}' is not supported; use eq, lt, gt, le or ge"
                                ),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        s.ignored = ignored;
        Ok(s)
    }

    /// An R4 Patient parameter the registry does not index itself, searched on the rows of
    /// the FHIR rendering (`Patient.<code>`) as documents' are: every type and modifier,
    /// and chains one level deep (to practitioners, organizations, other patients).
    fn fhir_parameter(
        &mut self,
        key: &str,
        value: &str,
        strict: bool,
        ignored: &mut Vec<String>,
    ) -> Result<(), FhirError> {
        use salus_fhir::search as fsearch;
        use salus_fhir::search::{Clause, SearchError};
        let clause = match fsearch::parse("Patient", key, value) {
            Ok(c) => c,
            Err(e @ (SearchError::Unknown { .. } | SearchError::NotSupported(_)))
                if fsearch::parse_key(key).modifier.is_none() =>
            {
                return strict_or_ignore(strict, e.to_string(), ignored);
            }
            Err(SearchError::Invalid(m)) => return Err(FhirError::new(400, "invalid", m)),
            Err(e) => return Err(FhirError::new(400, "not-supported", e.to_string())),
        };
        match clause {
            Clause::Filters(fs) => {
                self.applied.push((key.to_owned(), value.to_owned()));
                for f in fs {
                    self.filters
                        .push(salus_domain::documents::row_filter("Patient", f));
                }
                Ok(())
            }
            Clause::Chain {
                param,
                targets,
                inner,
                value,
            } => {
                self.applied.push((key.to_owned(), value.clone()));
                self.chains.push(Chain {
                    param,
                    targets,
                    inner,
                    value,
                });
                Ok(())
            }
        }
    }

    /// The filters with the chained parameters resolved (the references each stands for).
    async fn resolved_filters(
        &self,
        state: &AppState,
        actor: &Actor,
    ) -> Result<std::borrow::Cow<'_, [Filter]>, FhirError> {
        if self.chains.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&self.filters));
        }
        let mut filters = self.filters.clone();
        for c in &self.chains {
            let refs = Box::pin(super::documents::resolve_chain(
                state, actor, &c.targets, &c.inner, &c.value,
            ))
            .await?;
            filters.push(super::documents::naming("Patient", &c.param, refs));
        }
        Ok(std::borrow::Cow::Owned(filters))
    }

    /// The matches as search results (reads not yet logged).
    pub(super) async fn hits(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Hit>, FhirError> {
        Ok(self
            .run(state, actor, after, limit)
            .await?
            .iter()
            .map(hit_of)
            .collect())
    }

    /// How many patients match; `None` when the store cannot say (an `_id` list, or a
    /// patient-context actor).
    pub(super) async fn count(
        &self,
        state: &AppState,
        actor: &Actor,
    ) -> Result<Option<u64>, FhirError> {
        if self.ids.is_some() || actor.patient.is_some() {
            return Ok(None);
        }
        let q = salus_store::SearchQuery {
            resource_type: "patient".into(),
            filters: self.resolved_filters(state, actor).await?.into_owned(),
            after: None,
            limit: 1,
            newest_first: false,
            order_by: None,
        };
        Ok(Some(state.services.count(&actor.ctx, &q).await?))
    }

    /// The matching patients in id order after `after`, at most `limit`.
    pub(super) async fn run(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Current<Patient>>, FhirError> {
        let filters = self.resolved_filters(state, actor).await?;
        if let Some(ids) = &self.ids {
            // Read each asked id, then hold it to the other parameters (the same rows the
            // store searches).
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let mut out = Vec::new();
            for id in ids.into_iter().filter(|i| after.is_none_or(|a| *i > a)) {
                let Some(row) = state.services.row::<Patient>(&actor.ctx, id).await? else {
                    continue;
                };
                if !actor.sees("patient", &row.doc) {
                    continue;
                }
                let c = decode(row)?;
                let rows = c.state.search_rows();
                if filters.iter().all(|f| f.matches(&rows)) {
                    out.push(c);
                }
                if out.len() >= limit as usize {
                    break;
                }
            }
            return Ok(out);
        }
        let q = salus_store::SearchQuery {
            resource_type: "patient".into(),
            filters: filters.into_owned(),
            after,
            limit,
            newest_first: false,
            order_by: None,
        };
        let rows = state
            .services
            .store
            .search(&actor.ctx, &q)
            .await
            .map_err(ApiError::from)?;
        rows.into_iter()
            .filter(|r| actor.sees("patient", &r.doc))
            .map(decode)
            .collect()
    }
}

/// Search Patients; answered as a searchset Bundle with paging links.
#[utoipa::path(get, path = "/fhir/R4/Patient", tag = "fhir",
    params(("_id" = Option<String>, Query, description = "Patient id(s), comma-separated"),
           ("identifier" = Option<String>, Query, description = "system|value, or a bare value"),
           ("name" = Option<String>, Query, description = "Start of any part of a name"),
           ("family" = Option<String>, Query, description = "Start of the family name"),
           ("given" = Option<String>, Query, description = "Start of a given name"),
           ("birthdate" = Option<String>, Query, description = "A date with an optional prefix eq, lt, gt, le, ge"),
           ("gender" = Option<String>, Query, description = "male | female | other | unknown (comma: any of)"),
           ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"),
           ("Prefer" = Option<String>, Header, description = "handling=strict: unknown parameters are a 400")),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed, or unknown under handling=strict")),
    security(("bearer" = ["patients:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    answer_search(&state, &actor, &headers, &pairs).await
}

/// Search Patients by POST: the parameters in an `application/x-www-form-urlencoded` body
/// (and the query string).
#[utoipa::path(post, path = "/fhir/R4/Patient/_search", tag = "fhir",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
    security(("bearer" = ["patients:read"])))]
pub async fn search_post(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, FhirError> {
    pairs.extend(search_form(&headers, &body)?);
    answer_search(&state, &actor, &headers, &pairs).await
}

async fn answer_search(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    pairs: &[(String, String)],
) -> Result<Response, FhirError> {
    // A reverse chain stands for the ids it names (and `_id`s intersect).
    let mut resolved: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    let mut has: Vec<(String, String, String)> = Vec::new();
    for (k, v) in pairs {
        if k.starts_with("_has:") {
            let ids = super::documents::resolve_has(state, actor, "Patient", k, v).await?;
            // No id at all must match nothing, not everything.
            let ids = if ids.is_empty() {
                vec!["-".to_owned()]
            } else {
                ids
            };
            resolved.push(("_id".to_owned(), ids.join(",")));
            has.push((k.clone(), v.clone(), ids.join(",")));
        } else {
            resolved.push((k.clone(), v.clone()));
        }
    }
    let mut search = PatientSearch::parse(&resolved, prefers_strict(headers))?;
    if !has.is_empty() {
        // The links carry the reverse chain, not the ids it stood for now.
        search
            .applied
            .retain(|(k, v)| k != "_id" || !has.iter().any(|(_, _, ids)| ids == v));
        search
            .applied
            .extend(has.into_iter().map(|(k, v, _)| (k, v)));
    }
    let results = std::mem::take(&mut search.results);
    let (applied, ignored) = (
        std::mem::take(&mut search.applied),
        std::mem::take(&mut search.ignored),
    );
    let (count, cursor) = (search.count, search.cursor);
    results::answer(
        state,
        actor,
        headers,
        "Patient",
        TypeSearch::Patient(search),
        &results,
        &applied,
        count,
        cursor,
        &ignored,
    )
    .await
}

/// A patient as a search result.
fn hit_of(c: &Current<Patient>) -> Hit {
    Hit {
        row_id: c.row.id,
        stored: "patient",
        patient: Some(c.row.id),
        reference: format!("Patient/{}", c.row.id),
        resource: fhir_patient::to_fhir(&c.state, c.row.version, c.row.updated_at),
    }
}

/// The patient `id` as a search result (for `_include`), if the actor may see it.
pub(super) async fn hit(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Option<Hit>, FhirError> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    let Some(row) = state.services.row::<Patient>(&actor.ctx, id).await? else {
        return Ok(None);
    };
    if !actor.sees("patient", &row.doc) {
        return Ok(None);
    }
    Ok(Some(hit_of(&decode(row)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_store::FilterOp;

    #[test]
    fn birthdate_prefixes_become_day_ranges() {
        let s = PatientSearch::parse(&[("birthdate".into(), "1980".into())], true).unwrap();
        let vals: Vec<_> = s
            .filters
            .iter()
            .map(|f| (f.op.clone(), f.value.clone()))
            .collect();
        assert_eq!(
            vals,
            vec![
                (FilterOp::Ge, "1980-01-01".into()),
                (FilterOp::Lt, "1981-01-01".into())
            ]
        );
        let s = PatientSearch::parse(&[("birthdate".into(), "gt1980-04-23".into())], true).unwrap();
        assert_eq!(s.filters[0].value, "1980-04-24");
        let s = PatientSearch::parse(&[("birthdate".into(), "le1980-04".into())], true).unwrap();
        assert_eq!(
            (s.filters[0].op.clone(), s.filters[0].value.clone()),
            (FilterOp::Lt, "1980-05-01".into())
        );
        // A prefix or a modifier the registry's rows do not answer goes to the rows of the
        // FHIR rendering; one FHIR does not define is refused.
        for (k, v) in [("birthdate", "sa1980"), ("name:exact", "A")] {
            let s = PatientSearch::parse(&[(k.into(), v.into())], true).unwrap();
            assert!(
                !s.filters.is_empty() && s.filters.iter().all(|f| f.param.starts_with("Patient")),
                "{k}={v}: {:?}",
                s.filters
            );
        }
        assert!(PatientSearch::parse(&[("birthdate".into(), "zz1980".into())], true).is_err());
        assert!(PatientSearch::parse(&[("name:nonsense".into(), "A".into())], false).is_err());
        assert!(PatientSearch::parse(&[("nonsense".into(), "1".into())], true).is_err());
        assert!(PatientSearch::parse(&[("nonsense".into(), "1".into())], false).is_ok());
    }
}
