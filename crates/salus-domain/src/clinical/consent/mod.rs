//! Patient consents (requirements/003 §3): versioned templates ([`template`]), a patient's
//! consent instances with clause acknowledgements, signatures and revocation
//! ([`instance`]), and the signed consent's PDF evidence ([`document`]).
//!
//! The use cases here gather the facts a command needs (the patient open, the template as
//! it stands), and for signing render the evidence document and store it in the blob store
//! before the signing commits, so that a signed consent always names its document.
//! Other modules ask [`has_active_consent`] (research export will).

pub mod document;
pub mod instance;
pub mod template;

pub use instance::{
    Consent, ConsentActionInput, ConsentCommand, ConsentDocument, ConsentInput, ConsentStatus,
    MissingClause, SignatureInput,
};
pub use template::{ConsentTemplate, DraftInput, TemplateCommand, TemplateInput};

use crate::service::{Current, Idempotency, ServiceError, Services};
use salus_kernel::TenantContext;
use salus_store::blobs::{BlobError, BlobStore};
use uuid::Uuid;

/// Create a consent for an open patient from a published template version.
pub async fn create_consent(
    services: &Services,
    ctx: &TenantContext,
    input: ConsentInput,
    idempotency: Option<Idempotency<'_>>,
) -> Result<Current<Consent>, ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let template = services
        .load::<ConsentTemplate>(ctx, input.template_id)
        .await?
        .map(|t| t.state);
    let facts = Box::new(instance::CreateFacts {
        patient_open,
        template,
        created_by: ctx.actor.0,
    });
    let id = Uuid::now_v7();
    services
        .create::<Consent, _>(
            ctx,
            id,
            move |_, _| Ok(ConsentCommand::Create { id, input, facts }),
            idempotency,
        )
        .await
}

/// Why a signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Required clauses are not acknowledged yet (they are listed).
    #[error("{}", instance::incomplete_message(.0))]
    Incomplete(Vec<MissingClause>),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the consent document could not be stored: {0}")]
    Document(#[from] BlobError),
}

impl From<salus_kernel::DomainError> for SignError {
    fn from(e: salus_kernel::DomainError) -> Self {
        SignError::Service(e.into())
    }
}

/// Sign a pending consent whose required clauses are all acknowledged: render the PDF of
/// the consent as signed, store it in `blobs`, then commit the signing naming the
/// document's SHA-256 (a document whose signing then fails is left unreferenced, never a
/// signing without its document). `if_match` is the version the caller read (`None`:
/// any); the commit is made against the version the document was rendered from.
pub async fn sign(
    services: &Services,
    ctx: &TenantContext,
    blobs: &BlobStore,
    id: Uuid,
    if_match: Option<i64>,
    signatures: &[SignatureInput],
    idempotency: Option<Idempotency<'_>>,
) -> Result<Current<Consent>, SignError> {
    let current = services
        .load::<Consent>(ctx, id)
        .await?
        .ok_or(ServiceError::NotFound {
            resource_type: "consent",
            id,
        })?;
    let version = current.row.version;
    if let Some(expected) = if_match
        && expected != version
    {
        return Err(ServiceError::Precondition {
            expected,
            current: version,
        }
        .into());
    }
    if let Some(refusal) = current.state.sign_refusal() {
        return Err(refusal.into());
    }
    let missing = current.state.missing_required();
    if !missing.is_empty() {
        return Err(SignError::Incomplete(missing));
    }
    let at = services.now();
    let signatures = instance::parse_signatures(signatures, ctx.actor.0, at)?;
    let patient = services
        .load::<crate::registry::Patient>(ctx, current.state.patient_id)
        .await?
        .and_then(|p| document::patient_label(&p.state));
    let pdf = document::render(
        &current.state.signed_with(&signatures, at),
        patient.as_deref(),
    )
    .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
    let stored = blobs
        .put(futures_util::stream::iter([Ok::<_, std::io::Error>(
            bytes_of(pdf),
        )]))
        .await?;
    let document = ConsentDocument {
        sha256: stored.sha256.to_hex(),
        size: stored.size,
        content_type: "application/pdf".into(),
    };
    Ok(services
        .execute::<Consent, _>(
            ctx,
            id,
            Some(version),
            move |_, _| {
                Ok(ConsentCommand::Sign {
                    signatures,
                    at,
                    document,
                })
            },
            idempotency,
        )
        .await?)
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

/// The consents of a patient (following merges), of `kind` when given, that are active
/// (signed, not revoked), newest first, at most `limit`.
pub async fn active_consents(
    services: &Services,
    ctx: &TenantContext,
    patient_id: Uuid,
    kind: Option<&str>,
    limit: u32,
) -> Result<Vec<Current<Consent>>, ServiceError> {
    let group = crate::registry::patient::merge_group(services, ctx, patient_id).await?;
    let mut filters = vec![
        salus_store::Filter {
            also: Vec::new(),
            param: "patient".into(),
            system: None,
            op: salus_store::FilterOp::In(group.iter().map(Uuid::to_string).collect()),
            value: String::new(),
        },
        eq("status", ConsentStatus::Signed.as_str()),
    ];
    if let Some(k) = kind {
        let Ok(k) = template::parse_kind(k) else {
            // No consent has a kind that is not a valid code.
            return Ok(Vec::new());
        };
        filters.push(eq("kind", k));
    }
    let q = salus_store::SearchQuery {
        resource_type: <Consent as crate::service::Projected>::RESOURCE_TYPE.into(),
        filters,
        after: None,
        limit: limit.clamp(1, 1000),
        newest_first: true,
        order_by: None,
    };
    Ok(services
        .search::<Consent>(ctx, &q)
        .await?
        .into_iter()
        .filter(|c| c.state.is_active())
        .collect())
}

/// Whether the patient (following merges) has an active consent — signed and not revoked
/// — of `kind` (`research`, `treatment`, …). The question other modules ask before they
/// use a patient's data for what the consent covers.
pub async fn has_active_consent(
    services: &Services,
    ctx: &TenantContext,
    patient_id: Uuid,
    kind: &str,
) -> Result<bool, ServiceError> {
    Ok(!active_consents(services, ctx, patient_id, Some(kind), 1)
        .await?
        .is_empty())
}

fn eq(param: &str, value: impl Into<String>) -> salus_store::Filter {
    salus_store::Filter {
        also: Vec::new(),
        param: param.into(),
        system: None,
        op: salus_store::FilterOp::Eq,
        value: value.into(),
    }
}

#[cfg(test)]
mod tests;
