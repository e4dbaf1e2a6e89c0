//! Logging every read of patient data, at the HTTP edge.
//!
//! The guard reads the request's purpose of use (`X-Purpose-Of-Use`), justification
//! (`X-Access-Justification`), break-glass reason (`X-Break-Glass`) and client
//! (`User-Agent`) into the [`Actor`]'s [`AccessContext`]. Every path that returns patient
//! data calls [`record`] (the shared read, list and history helpers of [`crate::http`] do)
//! with what it is about to return; only once the entries are durable does the handler
//! answer, and a failed log write is a 503, never an unlogged answer. The guard then
//! refuses (500) any successful answer of a route whose permission reads patient data when
//! nothing was recorded for it, so a handler that forgets cannot leak.

use crate::AppState;
use crate::auth::{Actor, PATIENT_DATA};
use crate::error::ApiError;
use axum::http::HeaderMap;
use salus_store::access::{AccessAction, AccessEntry};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uuid::Uuid;

/// The purpose-of-use codes accepted (HL7 v3 PurposeOfUse), with what each means.
pub const PURPOSES: &[(&str, &str)] = &[
    ("TREAT", "treatment (the default)"),
    ("ETREAT", "emergency treatment"),
    ("HPAYMT", "healthcare payment"),
    ("HOPERAT", "healthcare operations"),
    ("PATRQT", "at the patient's request"),
    ("HRESCH", "healthcare research"),
    ("HLEGAL", "legal"),
    ("PUBHLTH", "public health"),
];

/// The longest justification or break-glass reason kept (characters).
pub const MAX_REASON: usize = 1000;

/// Why and from where the request reads, and whether it has been logged.
#[derive(Debug, Clone)]
pub struct AccessContext {
    pub purpose: &'static str,
    pub justification: Option<String>,
    /// The break-glass reason, when the request invokes it.
    pub break_glass: Option<String>,
    pub client: Option<String>,
    /// Set once [`record`] has run for this request (shared with the guard).
    pub logged: Arc<AtomicBool>,
}

impl Default for AccessContext {
    fn default() -> Self {
        Self {
            purpose: "TREAT",
            justification: None,
            break_glass: None,
            client: None,
            logged: Arc::default(),
        }
    }
}

fn text_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("{name} must be visible ASCII text")))?
        .trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "{name} is longer than {MAX_REASON} characters"
        )));
    }
    Ok(Some(s.to_owned()))
}

impl AccessContext {
    /// The justification recorded: the break-glass reason, with the justification (if
    /// any) after it in brackets; else the justification.
    pub fn recorded_justification(&self) -> Option<String> {
        match (&self.break_glass, &self.justification) {
            (Some(reason), Some(more)) => Some(format!("{reason} ({more})")),
            (reason, more) => reason.clone().or_else(|| more.clone()),
        }
    }

    /// Read the request's access headers; an unknown purpose is a 400 listing the codes.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let purpose = match text_header(headers, "x-purpose-of-use")? {
            None => "TREAT",
            Some(code) => PURPOSES
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(&code))
                .map(|(c, _)| *c)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "X-Purpose-Of-Use '{code}' is not one of {}",
                        PURPOSES.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                    ))
                })?,
        };
        let client = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(MAX_REASON).collect::<String>())
            .filter(|s| !s.is_empty());
        Ok(Self {
            purpose,
            justification: text_header(headers, "x-access-justification")?,
            break_glass: text_header(headers, "x-break-glass")?,
            client,
            logged: Arc::default(),
        })
    }
}

/// The patient a stored document of `resource_type` belongs to: a patient's own `id`,
/// clinical data's `patient_id`; `None` for what is not patient data.
pub fn patient_of(resource_type: &str, doc: &Value) -> Option<Uuid> {
    if !PATIENT_DATA.contains(&resource_type) {
        return None;
    }
    let field = if resource_type == "patient" {
        "id"
    } else {
        "patient_id"
    };
    doc.get(field)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// One access about to be answered: the patient, and the record when it is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Access {
    pub patient: Uuid,
    pub resource_id: Option<Uuid>,
}

/// Log what the request is about to return and wait until it is durable. Entries of a
/// [`AccessAction::Search`] are one per distinct patient (without a resource id); others
/// one per access. Calling it with nothing (an empty page, data that is not a patient's)
/// still counts as the request having gone through the log.
pub async fn record(
    state: &AppState,
    actor: &Actor,
    action: AccessAction,
    resource_type: &str,
    accesses: impl IntoIterator<Item = Access>,
) -> Result<(), ApiError> {
    let mut accesses: Vec<Access> = accesses.into_iter().collect();
    if action == AccessAction::Search {
        let mut seen = std::collections::HashSet::new();
        accesses.retain(|a| seen.insert(a.patient));
        for a in &mut accesses {
            a.resource_id = None;
        }
    }
    crate::care::admit(state, actor, action, resource_type, &accesses).await?;
    let a = &actor.access;
    let entries: Vec<AccessEntry> = accesses
        .into_iter()
        .map(|x| AccessEntry {
            patient_id: x.patient,
            resource_type: resource_type.to_owned(),
            resource_id: x.resource_id,
            action,
            purpose: a.purpose.to_owned(),
            justification: a.recorded_justification(),
            break_glass: a.break_glass.is_some(),
            client: a.client.clone(),
        })
        .collect();
    if !entries.is_empty() {
        state
            .services
            .store
            .log_access(&actor.ctx, entries)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, request_id = %actor.request_id, "access log write failed");
                ApiError::new(
                    "unavailable",
                    "the data-access log cannot be written; the read is refused",
                )
            })?;
    }
    a.logged.store(true, Ordering::SeqCst);
    Ok(())
}

/// [`record`] for stored documents: each one's patient (documents that are no patient's
/// data are left out) and id.
pub async fn record_docs<'a>(
    state: &AppState,
    actor: &Actor,
    action: AccessAction,
    resource_type: &str,
    docs: impl IntoIterator<Item = (Uuid, &'a Value)>,
) -> Result<(), ApiError> {
    let accesses: Vec<Access> = docs
        .into_iter()
        .filter_map(|(id, doc)| {
            patient_of(resource_type, doc).map(|patient| Access {
                patient,
                resource_id: Some(id),
            })
        })
        .collect();
    record(state, actor, action, resource_type, accesses).await
}
