//! FHIR Consent: a patient's consent (`/api/v1/consents`), both ways; the mapping is
//! `salus_fhir::consent`. A create pins the template its `policy[0].uri` names and is
//! pending (`proposed`); clauses are acknowledged and the consent signed through
//! `/api/v1/consents/{id}` (FHIR Consent cannot carry clause acknowledgements or the
//! signing's evidence). An update may only revoke it; there is no delete. Every read
//! checks the acknowledged clause snapshots against their SHA-256.

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::clinical::consent::instance::CreateFacts;
use salus_domain::clinical::consent::{
    Consent, ConsentCommand, ConsentInput, ConsentTemplate, instance::ConsentRevocation,
};
use salus_fhir::consent as fconsent;

impl Mapped for Consent {
    const FHIR_TYPE: &'static str = "Consent";
    const READ: &'static str = "consents:read";
    const WRITE: &'static str = "consents:write";
    const DELETES: bool = false;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fconsent::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fconsent::path_of_field(field)
    }

    fn intact(&self) -> bool {
        self.verify()
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<ConsentCommand, FhirError> {
        let mut w = fconsent::from_fhir(body).map_err(FhirError::invalid)?;
        w.check_new().map_err(FhirError::invalid)?;
        if w.status != "proposed" {
            return Err(FhirError::invalid(vec![salus_fhir::datatypes::refused(
                "Consent.status",
                format!(
                    "a new Salus consent is proposed (not '{}'): its clauses are acknowledged and it is signed through /api/v1/consents/{{id}}",
                    w.status
                ),
            )]));
        }
        let template = state
            .services
            .load::<ConsentTemplate>(&actor.ctx, w.template_id)
            .await?
            .map(|t| t.state);
        if let Some(t) = &template {
            w.settle(&t.kind);
        }
        let patient_open = pending.patient_open(state, actor, w.patient_id).await?;
        Ok(ConsentCommand::Create {
            id,
            input: ConsentInput {
                patient_id: w.patient_id,
                template_id: w.template_id,
                template_version: w.template_version,
                fhir_elements: Some(Value::Object(w.kept)),
            },
            facts: Box::new(CreateFacts {
                patient_open,
                template,
                created_by: actor.ctx.actor.0,
            }),
        })
    }

    async fn update_command(
        state: &AppState,
        actor: &Actor,
        current: &Consent,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<ConsentCommand>, FhirError> {
        let w = fconsent::from_fhir(body).map_err(FhirError::invalid)?;
        let revokes = fconsent::update_revokes(current, &w).map_err(FhirError::invalid)?;
        Ok(revokes.map(|reason| {
            ConsentCommand::Revoke(ConsentRevocation {
                revoked_by: actor.ctx.actor.0,
                requested_by: None,
                reason: reason.unwrap_or_else(|| salus_fhir::datatypes::DEFAULT_REASON.into()),
                revoked_at: state.services.now(),
            })
        }))
    }

    fn delete_command(_current: &Consent) -> Option<ConsentCommand> {
        None
    }
}

/// What this module serves of Consent (its CapabilityStatement entry).
pub(super) fn capability() -> Value {
    rest::capability::<Consent>(&format!(
        "The Consent is a Salus patient consent (also /api/v1/consents). Rendered: status (proposed while pending, active once signed, inactive when revoked after signing, rejected when revoked before; the revocation's reason in the extension {}), scope (the template's kind as an HL7 consentscope code where it is research, treatment, privacy/data_sharing (patient-privacy) or adr, else as text), category (LOINC 59284-0 and the kind as a coding of {}), patient, dateTime (the signing), performer (each signer's name and role), policy (the pinned template version: {}<template id>:v<version>), sourceAttachment (the signed PDF's download path). A create names the patient and the template (policy[0].uri, a version or the newest published one) and is proposed; every other element is kept as sent. Clauses are acknowledged and the consent signed through /api/v1/consents/{{id}}; an update may only revoke it (status inactive or rejected). No delete.",
        salus_fhir::datatypes::STATUS_REASON,
        fconsent::KIND_SYSTEM,
        fconsent::POLICY_PREFIX,
    ))
}

/// The routes of FHIR Consent.
pub mod resource {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::consent::Consent;

    rest::mapped_routes!(
        patient Consent,
        read: "consents:read",
        write: "consents:write",
        type: "/fhir/R4/Consent",
        search: "/fhir/R4/Consent/_search",
        instance: "/fhir/R4/Consent/{id}",
        history: "/fhir/R4/Consent/{id}/_history",
        version: "/fhir/R4/Consent/{id}/_history/{vid}",
    );
}
