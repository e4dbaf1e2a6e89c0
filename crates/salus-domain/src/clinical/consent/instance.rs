//! A patient's consent (requirements/003 §3): one instance of a published template version.
//!
//! A [`Consent`] pins its template id and version and keeps a copy of that version's
//! sections (a published version never changes, so the copy is the version). Its life is
//! `pending → signed`, and `pending | signed → revoked`, for good:
//!
//! - **acknowledge** a clause (pending only): the acknowledgement stores an immutable
//!   snapshot of the clause text and its SHA-256; acknowledging a clause twice changes
//!   nothing;
//! - **sign** (pending only): refused while any required clause is unacknowledged
//!   ([`Consent::missing_required`]); each signature records signer, role, method and time,
//!   and the signed state names its PDF evidence document ([`ConsentDocument`]);
//! - **revoke** (pending or signed): who, why and when. A revoked consent can never be
//!   signed again: the patient consents anew through a new instance.
//!
//! Every read re-computes the snapshots' hashes ([`Consent::verify`]).

use super::template::{ConsentSection, ConsentTemplate};
use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, Hash32, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Pending,
    Signed,
    Revoked,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Pending => "pending",
            ConsentStatus::Signed => "signed",
            ConsentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ConsentStatus::Pending),
            "signed" => Some(ConsentStatus::Signed),
            "revoked" => Some(ConsentStatus::Revoked),
            _ => None,
        }
    }
}

/// Who signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignerRole {
    Patient,
    Guardian,
    Witness,
}

impl SignerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SignerRole::Patient => "patient",
            SignerRole::Guardian => "guardian",
            SignerRole::Witness => "witness",
        }
    }
}

/// How the signature was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMethod {
    /// A signed paper form, scanned.
    WetInkScan,
    Electronic,
    /// Given by voice before a witness (who signs too).
    VerbalWitnessed,
}

impl SignatureMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::WetInkScan => "wet_ink_scan",
            SignatureMethod::Electronic => "electronic",
            SignatureMethod::VerbalWitnessed => "verbal_witnessed",
        }
    }
}

/// A clause acknowledged: the clause text as it stood, and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClauseAcknowledgement {
    pub clause_id: Uuid,
    pub section_id: Uuid,
    /// The clause text at acknowledgement (an immutable snapshot).
    pub text: String,
    /// SHA-256 (hex) of `text`.
    pub text_sha256: String,
    /// The person who acknowledged it (the patient, a guardian), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// The user who recorded it.
    pub recorded_by: Uuid,
    pub acknowledged_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentSignature {
    pub signer_name: String,
    pub role: SignerRole,
    pub method: SignatureMethod,
    pub signed_at: DateTime<Utc>,
    /// The user who recorded it.
    pub recorded_by: Uuid,
}

/// The signed consent's PDF in the blob store (evidence; the consent is the source of
/// truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentDocument {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentRevocation {
    /// The user who recorded the revocation.
    pub revoked_by: Uuid,
    /// The person who asked for it (the patient, a guardian), when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Consent {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub template_id: Uuid,
    /// The published template version this consent pins.
    pub template_version: u32,
    pub kind: String,
    pub title: String,
    /// The pinned version's sections and clauses.
    pub sections: Vec<ConsentSection>,
    pub status: ConsentStatus,
    /// In the order they were given.
    pub acknowledgements: Vec<ClauseAcknowledgement>,
    pub signatures: Vec<ConsentSignature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<ConsentDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<ConsentRevocation>,
    pub created_by: Uuid,
    /// FHIR elements Salus does not model, kept as sent with the consent (a JSON object;
    /// since schema version 2 of `consent.created`). Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

/// A required clause not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingClause {
    pub clause_id: Uuid,
    pub section_id: Uuid,
    pub section_title: String,
    pub text: String,
}

impl Consent {
    /// Whether every snapshot still hashes to its stored digest.
    pub fn verify(&self) -> bool {
        self.acknowledgements
            .iter()
            .all(|a| Hash32::sha256(a.text.as_bytes()).to_hex() == a.text_sha256)
    }

    pub fn acknowledged(&self, clause_id: Uuid) -> Option<&ClauseAcknowledgement> {
        self.acknowledgements
            .iter()
            .find(|a| a.clause_id == clause_id)
    }

    /// The required clauses without an acknowledgement, in order.
    pub fn missing_required(&self) -> Vec<MissingClause> {
        self.sections
            .iter()
            .flat_map(|s| s.clauses.iter().map(move |c| (s, c)))
            .filter(|(_, c)| c.required && self.acknowledged(c.id).is_none())
            .map(|(s, c)| MissingClause {
                clause_id: c.id,
                section_id: s.id,
                section_title: s.title.clone(),
                text: c.text.clone(),
            })
            .collect()
    }

    /// Signed and not revoked.
    pub fn is_active(&self) -> bool {
        self.status == ConsentStatus::Signed
    }

    /// Why this consent cannot be signed as it stands (its status), if it cannot.
    pub fn sign_refusal(&self) -> Option<DomainError> {
        match self.status {
            ConsentStatus::Pending => None,
            ConsentStatus::Revoked => Some(DomainError::Conflict(format!(
                "consent {} was revoked and can never be signed again; create a new consent for the patient",
                self.id
            ))),
            ConsentStatus::Signed => Some(DomainError::IllegalTransition {
                action: "sign".into(),
                from: "signed".into(),
                allowed: "pending".into(),
            }),
        }
    }

    /// The consent as it is once signed with `signatures` at `at` (without its document:
    /// the state the evidence document shows).
    pub fn signed_with(&self, signatures: &[ConsentSignature], at: DateTime<Utc>) -> Consent {
        let mut c = self.clone();
        c.status = ConsentStatus::Signed;
        c.signatures = signatures.to_vec();
        c.signed_at = Some(at);
        c
    }
}

/// One signature as given.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureInput {
    /// The signer's name (1-200 characters).
    pub signer_name: String,
    pub role: SignerRole,
    pub method: SignatureMethod,
}

/// The most signatures one signing takes.
pub const MAX_SIGNATURES: usize = 5;

/// Check the signatures of a signing: 1..=5, named; a patient or guardian among them; a
/// verbal consent needs a witness who signs.
pub fn parse_signatures(
    input: &[SignatureInput],
    recorded_by: Uuid,
    at: DateTime<Utc>,
) -> Result<Vec<ConsentSignature>, DomainError> {
    if input.is_empty() || input.len() > MAX_SIGNATURES {
        return Err(DomainError::invalid(
            "signatures",
            format!("signing takes 1-{MAX_SIGNATURES} signatures"),
        ));
    }
    let mut out = Vec::with_capacity(input.len());
    for (i, s) in input.iter().enumerate() {
        let name = s.signer_name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                &format!("signatures[{i}].signer_name"),
                "signer_name must be 1-200 characters without control characters",
            ));
        }
        out.push(ConsentSignature {
            signer_name: name.to_owned(),
            role: s.role,
            method: s.method,
            signed_at: at,
            recorded_by,
        });
    }
    if !out
        .iter()
        .any(|s| matches!(s.role, SignerRole::Patient | SignerRole::Guardian))
    {
        return Err(DomainError::invalid(
            "signatures",
            "the patient or a guardian must sign (a witness alone cannot consent)",
        ));
    }
    if out
        .iter()
        .any(|s| s.method == SignatureMethod::VerbalWitnessed)
        && !out.iter().any(|s| s.role == SignerRole::Witness)
    {
        return Err(DomainError::invalid(
            "signatures",
            "a verbal_witnessed consent needs the witness's signature too",
        ));
    }
    Ok(out)
}

/// A new consent for a patient.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    pub patient_id: Uuid,
    pub template_id: Uuid,
    /// A published version of the template; the newest published one when left out.
    #[serde(default)]
    pub template_version: Option<u32>,
    /// FHIR elements Salus does not model, kept with the consent (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

/// The body of `POST /consents/{id}/{action}`: `clause_id` (and optionally
/// `acknowledged_by`) to acknowledge, `signatures` to sign, `reason` (and optionally
/// `requested_by`) to revoke.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentActionInput {
    #[serde(default)]
    pub clause_id: Option<Uuid>,
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    #[serde(default)]
    pub signatures: Option<Vec<SignatureInput>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// The actions of `POST /consents/{id}/{action}`.
pub const ACTIONS: &[&str] = &["acknowledge", "sign", "revoke"];

fn optional_name(field: &str, s: Option<&str>) -> Result<Option<String>, DomainError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(n) if n.chars().count() <= 200 && !n.chars().any(char::is_control) => {
            Ok(Some(n.to_owned()))
        }
        Some(_) => Err(DomainError::invalid(
            field,
            format!("{field} must be at most 200 characters without control characters"),
        )),
    }
}

impl ConsentActionInput {
    /// The command of `acknowledge` or `revoke` (signing goes through [`super::sign`]).
    pub fn command(
        &self,
        action: &str,
        by: Uuid,
        at: DateTime<Utc>,
    ) -> Result<ConsentCommand, DomainError> {
        match action {
            "acknowledge" => Ok(ConsentCommand::Acknowledge {
                clause_id: self.clause_id.ok_or_else(|| {
                    DomainError::invalid("clause_id", "acknowledge needs the clause_id")
                })?,
                acknowledged_by: optional_name("acknowledged_by", self.acknowledged_by.as_deref())?,
                recorded_by: by,
                at,
            }),
            "revoke" => {
                let reason = self
                    .reason
                    .as_deref()
                    .map(str::trim)
                    .filter(|r| !r.is_empty() && r.chars().count() <= 1000)
                    .ok_or_else(|| {
                        DomainError::invalid("reason", "revoke needs a reason of 1-1000 characters")
                    })?;
                Ok(ConsentCommand::Revoke(ConsentRevocation {
                    revoked_by: by,
                    requested_by: optional_name("requested_by", self.requested_by.as_deref())?,
                    reason: reason.to_owned(),
                    revoked_at: at,
                }))
            }
            other => Err(DomainError::invalid(
                "action",
                format!("'{other}' is not acknowledge or revoke"),
            )),
        }
    }
}

/// What the service gathers before a consent is created.
#[derive(Debug, Clone)]
pub struct CreateFacts {
    pub patient_open: bool,
    pub template: Option<ConsentTemplate>,
    pub created_by: Uuid,
}

#[derive(Debug, Clone)]
pub enum ConsentCommand {
    Create {
        id: Uuid,
        input: ConsentInput,
        facts: Box<CreateFacts>,
    },
    Acknowledge {
        clause_id: Uuid,
        acknowledged_by: Option<String>,
        recorded_by: Uuid,
        at: DateTime<Utc>,
    },
    Sign {
        signatures: Vec<ConsentSignature>,
        at: DateTime<Utc>,
        document: ConsentDocument,
    },
    Revoke(ConsentRevocation),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signed {
    pub signatures: Vec<ConsentSignature>,
    pub at: DateTime<Utc>,
    pub document: ConsentDocument,
}

domain_events! {
    pub enum ConsentEvent {
        Created(Consent) = "consent.created" @ 2,
        ClauseAcknowledged(ClauseAcknowledgement) = "consent.clause_acknowledged",
        Signed(Signed) = "consent.signed",
        Revoked(ConsentRevocation) = "consent.revoked",
    }
}

impl Aggregate for Consent {
    const STREAM_TYPE: &'static str = "consent";
    type Command = ConsentCommand;
    type Event = ConsentEvent;

    fn decide(
        state: Option<&Self>,
        command: &ConsentCommand,
    ) -> Result<Vec<ConsentEvent>, DomainError> {
        match (state, command) {
            (None, ConsentCommand::Create { id, input, facts }) => {
                if !facts.patient_open {
                    return Err(DomainError::invalid(
                        "patient_id",
                        format!(
                            "patient {} does not exist in this tenant or is retired",
                            input.patient_id
                        ),
                    ));
                }
                let template = facts.template.as_ref().ok_or_else(|| {
                    DomainError::invalid(
                        "template_id",
                        format!("no consent template {} in this tenant", input.template_id),
                    )
                })?;
                let version = match input.template_version {
                    Some(v) => {
                        let found = template.version(v).ok_or_else(|| {
                            DomainError::invalid(
                                "template_version",
                                format!("template {} has no version {v}", template.id),
                            )
                        })?;
                        template.published(Some(v)).ok_or_else(|| {
                            DomainError::invalid(
                                "template_version",
                                format!(
                                    "version {} of template {} is a {}; only a published version can be consented to",
                                    v,
                                    template.id,
                                    found.status.as_str()
                                ),
                            )
                        })?
                    }
                    None => template.published(None).ok_or_else(|| {
                        DomainError::invalid(
                            "template_id",
                            format!("template {} has no published version yet", template.id),
                        )
                    })?,
                };
                Ok(vec![ConsentEvent::Created(Consent {
                    id: *id,
                    patient_id: input.patient_id,
                    template_id: template.id,
                    template_version: version.version,
                    kind: template.kind.clone(),
                    title: version.content.title.clone(),
                    sections: version.content.sections.clone(),
                    status: ConsentStatus::Pending,
                    acknowledgements: Vec::new(),
                    signatures: Vec::new(),
                    signed_at: None,
                    document: None,
                    revocation: None,
                    created_by: facts.created_by,
                    fhir_elements: crate::clinical::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), ConsentCommand::Create { .. }) => {
                Err(DomainError::Rule("consent already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("consent".into())),
            (
                Some(c),
                ConsentCommand::Acknowledge {
                    clause_id,
                    acknowledged_by,
                    recorded_by,
                    at,
                },
            ) => {
                if c.status != ConsentStatus::Pending {
                    return Err(DomainError::IllegalTransition {
                        action: "acknowledge".into(),
                        from: c.status.as_str().into(),
                        allowed: "pending".into(),
                    });
                }
                let (section, clause) = c
                    .sections
                    .iter()
                    .flat_map(|s| s.clauses.iter().map(move |cl| (s, cl)))
                    .find(|(_, cl)| cl.id == *clause_id)
                    .ok_or_else(|| {
                        DomainError::invalid(
                            "clause_id",
                            format!(
                                "clause {clause_id} is not in version {} of template {}",
                                c.template_version, c.template_id
                            ),
                        )
                    })?;
                if c.acknowledged(*clause_id).is_some() {
                    // Acknowledged already: the first snapshot stands.
                    return Ok(vec![]);
                }
                Ok(vec![ConsentEvent::ClauseAcknowledged(
                    ClauseAcknowledgement {
                        clause_id: clause.id,
                        section_id: section.id,
                        text_sha256: Hash32::sha256(clause.text.as_bytes()).to_hex(),
                        text: clause.text.clone(),
                        acknowledged_by: acknowledged_by.clone(),
                        recorded_by: *recorded_by,
                        acknowledged_at: *at,
                    },
                )])
            }
            (
                Some(c),
                ConsentCommand::Sign {
                    signatures,
                    at,
                    document,
                },
            ) => {
                if let Some(refusal) = c.sign_refusal() {
                    return Err(refusal);
                }
                let missing = c.missing_required();
                if !missing.is_empty() {
                    return Err(DomainError::Conflict(incomplete_message(&missing)));
                }
                if signatures.is_empty() {
                    return Err(DomainError::invalid(
                        "signatures",
                        "signing needs a signature",
                    ));
                }
                Ok(vec![ConsentEvent::Signed(Signed {
                    signatures: signatures.clone(),
                    at: *at,
                    document: document.clone(),
                })])
            }
            (Some(c), ConsentCommand::Revoke(r)) => {
                if c.status == ConsentStatus::Revoked {
                    return Err(DomainError::IllegalTransition {
                        action: "revoke".into(),
                        from: "revoked".into(),
                        allowed: "pending, signed".into(),
                    });
                }
                Ok(vec![ConsentEvent::Revoked(r.clone())])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ConsentEvent) -> Option<Self> {
        match (state, event) {
            (_, ConsentEvent::Created(c)) => Some(c.clone()),
            (None, _) => None,
            (Some(mut c), ConsentEvent::ClauseAcknowledged(a)) => {
                c.acknowledgements.push(a.clone());
                Some(c)
            }
            (Some(c), ConsentEvent::Signed(s)) => {
                let mut c = c.signed_with(&s.signatures, s.at);
                c.document = Some(s.document.clone());
                Some(c)
            }
            (Some(mut c), ConsentEvent::Revoked(r)) => {
                c.status = ConsentStatus::Revoked;
                c.revocation = Some(r.clone());
                Some(c)
            }
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<ConsentEvent, serde_json::Error> {
        ConsentEvent::decode(event_type, payload)
    }

    /// Version 2 of `consent.created` added the optional `fhir_elements`: a version 1
    /// payload reads as it is.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        match (event_type, from) {
            ("consent.created", 1) => Ok(payload),
            _ => Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            )),
        }
    }
}

/// The refusal of a signing with required clauses unacknowledged.
pub fn incomplete_message(missing: &[MissingClause]) -> String {
    format!(
        "the consent cannot be signed until every required clause is acknowledged; {} {} not: {}",
        missing.len(),
        if missing.len() == 1 { "is" } else { "are" },
        missing
            .iter()
            .map(|m| m.clause_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Projected for Consent {
    const RESOURCE_TYPE: &'static str = "consent";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("template", self.template_id.to_string()),
            SearchRow::new("kind", self.kind.clone()),
            SearchRow::new("status", self.status.as_str()),
        ]
        .into_iter()
        .chain(crate::clinical::fhir_view::rows(Self::STREAM_TYPE, self))
        .collect()
    }
}
