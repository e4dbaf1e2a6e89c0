//! FHIR Consent ⇄ a patient's consent ([`Consent`]), both ways.
//!
//! Rendered: `status` (`proposed` while pending, `active` once signed, `inactive` when
//! revoked after signing, `rejected` when revoked before; the revocation's reason in the
//! [`STATUS_REASON`] extension), `scope` (the consent kind as a code of the HL7 consent
//! scope system where it is one of those, [`SCOPES`], else as text), `category` (LOINC
//! 59284-0 Patient Consent, and the kind as a coding of [`KIND_SYSTEM`]), `patient`,
//! `dateTime` (when signed), `performer` (each signer by name and role), `policy` (the
//! pinned template version, [`policy_uri`]), and `sourceAttachment` (the signed PDF: its
//! content type, size and download path). Every other element a FHIR create sent
//! (provision, organization, verification, …) is kept as sent and merged back.
//!
//! A create names the patient and the template in `policy[0].uri`, and is `proposed`:
//! clauses are acknowledged and the consent signed through `/api/v1/consents/{id}`, which
//! FHIR Consent cannot say. An update may only revoke it (`status` `inactive` or
//! `rejected`); anything else is refused, naming the element.

use crate::datatypes::*;
use crate::outcome::Issue;
use salus_domain::clinical::consent::{Consent, ConsentStatus};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The HL7 consent scope code system.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";

/// The code system of Salus consent kinds (a template's `kind`).
pub const KIND_SYSTEM: &str = "urn:salus:consent-kind";

/// The prefix of the policy URI naming a consent template (`…:<template id>:v<version>`).
pub const POLICY_PREFIX: &str = "urn:salus:consent-template:";

/// Consent kinds that are HL7 consent scopes, and their codes.
pub const SCOPES: &[(&str, &str)] = &[
    ("research", "research"),
    ("treatment", "treatment"),
    ("privacy", "patient-privacy"),
    ("patient_privacy", "patient-privacy"),
    ("patient-privacy", "patient-privacy"),
    ("data_sharing", "patient-privacy"),
    ("adr", "adr"),
];

const T: &str = "Consent";

/// The elements Salus renders from the signing: who signed, when, and the PDF.
pub const SIGNING: [&str; 3] = ["dateTime", "performer", "sourceAttachment"];

/// The policy URI of a template version.
pub fn policy_uri(template: Uuid, version: u32) -> String {
    format!("{POLICY_PREFIX}{template}:v{version}")
}

fn scope_of(kind: &str) -> Value {
    match SCOPES.iter().find(|(k, _)| *k == kind) {
        Some((_, code)) => json!({ "coding": [{ "system": SCOPE_SYSTEM, "code": code }] }),
        None => json!({ "text": kind }),
    }
}

fn category_of(kind: &str) -> Value {
    json!([
        { "coding": [{ "system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent" }] },
        { "coding": [{ "system": KIND_SYSTEM, "code": kind }] },
    ])
}

/// The FHIR status of a consent.
pub fn status_of(c: &Consent) -> &'static str {
    match c.status {
        ConsentStatus::Pending => "proposed",
        ConsentStatus::Signed => "active",
        ConsentStatus::Revoked if c.signed_at.is_some() => "inactive",
        ConsentStatus::Revoked => "rejected",
    }
}

/// The resource a consent is: `version` and `updated` make its `meta` (`None` for the
/// search index).
pub fn to_fhir(c: &Consent, version: Option<(i64, chrono::DateTime<chrono::Utc>)>) -> Value {
    let mut r = json!({ "resourceType": T, "id": c.id.to_string(), "status": status_of(c) });
    if let Some((v, at)) = version {
        r["meta"] = meta(v, at);
    }
    let kept = c.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    if let Some(rev) = &c.revocation {
        r["extension"] = json!([status_reason_extension(&rev.reason)]);
    }
    r["scope"] = part("scope").cloned().unwrap_or_else(|| scope_of(&c.kind));
    r["category"] = part("category")
        .cloned()
        .unwrap_or_else(|| category_of(&c.kind));
    r["patient"] = reference("Patient", c.patient_id, part("patient"));
    if let Some(at) = c.signed_at {
        r["dateTime"] = json!(date_time(at));
    }
    if !c.signatures.is_empty() {
        r["performer"] = Value::Array(
            c.signatures
                .iter()
                .map(|s| json!({ "display": format!("{} ({})", s.signer_name, s.role.as_str()) }))
                .collect(),
        );
    }
    let mut policy = json!({ "uri": policy_uri(c.template_id, c.template_version) });
    let kept_policy = part("policy").and_then(Value::as_array);
    if let Some(rest) = kept_policy.and_then(|a| a.first()) {
        merge(&mut policy, rest);
    }
    let mut policies = vec![policy];
    policies.extend(kept_policy.into_iter().flatten().skip(1).cloned());
    r["policy"] = Value::Array(policies);
    if let Some(d) = &c.document {
        r["sourceAttachment"] = json!({
            "contentType": d.content_type,
            "url": format!("/api/v1/consents/{}/document", c.id),
            "size": d.size,
            "title": c.title,
        });
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in ["scope", "category", "patient", "policy"] {
            rest.remove(k);
        }
        merge(&mut r, &Value::Object(rest));
    }
    r
}

/// What a FHIR Consent says, in the consent's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentWrite {
    pub id: Option<String>,
    pub patient_id: Uuid,
    pub template_id: Uuid,
    /// The pinned version; `None`: the newest published one.
    pub template_version: Option<u32>,
    /// The FHIR status as sent.
    pub status: String,
    /// The reason of a revocation (the status-reason extension).
    pub reason: Option<String>,
    /// The elements the signing records ([`SIGNING`]) as sent: a create has none, an
    /// update has what the consent shows.
    pub signing: Map<String, Value>,
    /// Every element not modelled, kept as sent.
    pub kept: Map<String, Value>,
}

/// The template (and version) `policy[0].uri` names, and what else that policy holds.
fn take_policy(o: &mut Map<String, Value>) -> Result<(Uuid, Option<u32>), Issue> {
    let path = format!("{T}.policy[0].uri");
    let want = || {
        required(
            &path,
            format!(
                "a Salus consent pins a consent template: policy[0].uri is {POLICY_PREFIX}<template id> (or …:v<version>)"
            ),
        )
    };
    let Some(Value::Array(policies)) = o.get("policy") else {
        return Err(want());
    };
    let first = policies
        .first()
        .and_then(Value::as_object)
        .ok_or_else(want)?;
    let uri = first.get("uri").and_then(Value::as_str).ok_or_else(want)?;
    let rest = uri.strip_prefix(POLICY_PREFIX).ok_or_else(want)?;
    let (id, version) = match rest.split_once(":v") {
        Some((id, v)) => (id, Some(v)),
        None => (rest, None),
    };
    let id = Uuid::parse_str(id)
        .map_err(|_| invalid(&path, format!("'{uri}' does not name a template id")))?;
    let version = match version {
        Some(v) => Some(
            v.parse::<u32>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| invalid(&path, format!("'{uri}' does not name a version")))?,
        ),
        None => None,
    };
    let mut first_rest = first.clone();
    first_rest.remove("uri");
    let mut kept = vec![Value::Object(first_rest)];
    kept.extend(policies.iter().skip(1).cloned());
    if kept.len() == 1 && kept[0].as_object().is_some_and(Map::is_empty) {
        o.remove("policy");
    } else {
        o.insert("policy".into(), Value::Array(kept));
    }
    Ok((id, version))
}

/// Read a FHIR Consent: structural validation first, then what the consent keeps.
pub fn from_fhir(r: &Value) -> Result<ConsentWrite, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid(T, "a Consent is a JSON object")]);
    };
    let mut o = obj.clone();
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let status = o
        .remove("status")
        .and_then(|s| s.as_str().map(str::to_owned))
        .unwrap_or_default();
    let reason = take_status_reason(&mut o, T).unwrap_or_else(|e| {
        issues.push(e);
        None
    });
    let patient_id = take_required_reference(
        &mut o,
        "patient",
        "Patient",
        T,
        "a Salus consent is a patient's: patient is Patient/<id>",
        &mut issues,
    );
    let template = take_policy(&mut o).map_err(|e| issues.push(e)).ok();
    // What the signing records (scope and category are kept as sent when they are not
    // what the template's kind renders, see [`ConsentWrite::settle`]).
    let mut signing = Map::new();
    for k in SIGNING {
        if let Some(v) = o.remove(k) {
            signing.insert(k.to_owned(), v);
        }
    }
    match (issues.is_empty(), patient_id, template) {
        (true, Some(patient_id), Some((template_id, template_version))) => Ok(ConsentWrite {
            id,
            patient_id,
            template_id,
            template_version,
            status,
            reason,
            signing,
            kept: o,
        }),
        _ => Err(issues),
    }
}

impl ConsentWrite {
    /// A new consent: refused when it says it was signed (the signing is Salus's).
    pub fn check_new(&self) -> Result<(), Vec<Issue>> {
        let issues: Vec<Issue> = self
            .signing
            .keys()
            .map(|k| {
                refused(
                    format!("{T}.{k}"),
                    format!(
                        "{k} is Salus's: the signing (POST /api/v1/consents/{{id}}/sign) records who signed, when, and the PDF"
                    ),
                )
            })
            .collect();
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    /// The kept elements of a new consent of `kind`: without the scope and category the
    /// rendering writes itself for that kind.
    pub fn settle(&mut self, kind: &str) {
        if self.kept.get("scope") == Some(&scope_of(kind)) {
            self.kept.remove("scope");
        }
        if self.kept.get("category") == Some(&category_of(kind)) {
            self.kept.remove("category");
        }
    }
}

/// What a FHIR update of `current` does: `Ok(Some(reason))` revokes it with that reason
/// (`None` in it: no reason sent), `Ok(None)` changes nothing; anything else is refused.
pub fn update_revokes(
    current: &Consent,
    w: &ConsentWrite,
) -> Result<Option<Option<String>>, Vec<Issue>> {
    let fixed = "cannot change through FHIR (acknowledge and sign through /api/v1/consents/{id}; revoke with status inactive)";
    let mut issues = Vec::new();
    if w.patient_id != current.patient_id {
        issues.push(refused(
            format!("{T}.patient"),
            format!("the patient {fixed}"),
        ));
    }
    if w.template_id != current.template_id
        || w.template_version
            .is_some_and(|v| v != current.template_version)
    {
        issues.push(refused(
            format!("{T}.policy[0].uri"),
            format!("the template {fixed}"),
        ));
    }
    let mut w = w.clone();
    w.settle(&current.kind);
    let now = kept_of(&current.fhir_elements);
    let mut keys: Vec<&String> = w
        .kept
        .keys()
        .chain(now.keys())
        .filter(|k| w.kept.get(*k) != now.get(*k))
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        issues.push(refused(format!("{T}.{k}"), format!("{k} {fixed}")));
    }
    let shown = to_fhir(current, None);
    for k in SIGNING {
        if w.signing.get(k) != shown.get(k) {
            issues.push(refused(
                format!("{T}.{k}"),
                format!("{k} is what the signing recorded and {fixed}"),
            ));
        }
    }
    let revoked = current.status == ConsentStatus::Revoked;
    let outcome = match w.status.as_str() {
        s if s == status_of(current) => None,
        "inactive" | "rejected" if !revoked => Some(w.reason.clone()),
        other => {
            issues.push(refused(
                format!("{T}.status"),
                format!(
                    "a {} consent cannot become {other} through FHIR: it is signed through POST /api/v1/consents/{{id}}/sign, revoked with status inactive, and a revoked one is never signed again",
                    status_of(current)
                ),
            ));
            None
        }
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(outcome)
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field(field: &str) -> String {
    match field {
        "patient_id" => format!("{T}.patient"),
        "template_id" | "template_version" => format!("{T}.policy[0].uri"),
        "reason" => format!("{T}.extension('{STATUS_REASON}')"),
        "fhir_elements" => T.to_owned(),
        other => format!("{T}.{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use salus_domain::clinical::consent::instance::{
        ConsentDocument, ConsentRevocation, ConsentSignature, SignatureMethod, SignerRole,
    };

    fn consent() -> Consent {
        Consent {
            id: Uuid::from_u128(1),
            patient_id: Uuid::from_u128(2),
            template_id: Uuid::from_u128(3),
            template_version: 2,
            kind: "research".into(),
            title: "Biobank".into(),
            sections: vec![],
            status: ConsentStatus::Pending,
            acknowledgements: vec![],
            signatures: vec![],
            signed_at: None,
            document: None,
            revocation: None,
            created_by: Uuid::from_u128(4),
            fhir_elements: None,
        }
    }

    #[test]
    fn a_pending_consent_reads_back_and_only_revokes() {
        let c = consent();
        let r = to_fhir(&c, None);
        assert_eq!(r["status"], "proposed");
        assert_eq!(r["scope"]["coding"][0]["code"], "research");
        assert_eq!(r["policy"][0]["uri"], policy_uri(c.template_id, 2));
        let mut w = from_fhir(&r).unwrap();
        w.settle(&c.kind);
        assert!(w.kept.is_empty(), "{:?}", w.kept);
        assert_eq!(w.template_version, Some(2));
        assert_eq!(update_revokes(&c, &w), Ok(None));
        let mut rev = r.clone();
        rev["status"] = json!("inactive");
        rev["extension"] = json!([status_reason_extension("withdrew")]);
        assert_eq!(
            update_revokes(&c, &from_fhir(&rev).unwrap()),
            Ok(Some(Some("withdrew".into())))
        );
        let mut sign = r.clone();
        sign["status"] = json!("active");
        let e = update_revokes(&c, &from_fhir(&sign).unwrap()).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Consent.status"));
    }

    #[test]
    fn a_signed_then_revoked_consent_shows_its_signers_document_and_reason() {
        let mut c = consent();
        let at = Utc::now();
        c.status = ConsentStatus::Revoked;
        c.signed_at = Some(at);
        c.signatures = vec![ConsentSignature {
            signer_name: "Ada Lovelace".into(),
            role: SignerRole::Patient,
            method: SignatureMethod::Electronic,
            signed_at: at,
            recorded_by: Uuid::nil(),
        }];
        c.document = Some(ConsentDocument {
            sha256: "00".into(),
            size: 1200,
            content_type: "application/pdf".into(),
        });
        c.revocation = Some(ConsentRevocation {
            revoked_by: Uuid::nil(),
            requested_by: None,
            reason: "moved away".into(),
            revoked_at: at,
        });
        c.kind = "photography".into();
        let r = to_fhir(&c, None);
        assert_eq!(r["status"], "inactive");
        assert_eq!(r["scope"], json!({"text": "photography"}));
        assert_eq!(r["performer"][0]["display"], "Ada Lovelace (patient)");
        assert_eq!(r["sourceAttachment"]["size"], 1200);
        assert_eq!(r["extension"][0]["valueString"], "moved away");
        c.signed_at = None;
        assert_eq!(to_fhir(&c, None)["status"], "rejected");
    }

    #[test]
    fn a_create_names_its_template_and_keeps_the_rest() {
        let sent = json!({
            "resourceType": "Consent",
            "status": "proposed",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "research"}], "text": "Biobank"},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{}", Uuid::from_u128(2))},
            "policy": [{"authority": "https://example.org", "uri": format!("{POLICY_PREFIX}{}", Uuid::from_u128(3))}],
            "provision": {"type": "permit", "period": {"start": "2024-01-01"}},
        });
        let mut w = from_fhir(&sent).unwrap();
        w.settle("research");
        assert_eq!(w.template_id, Uuid::from_u128(3));
        assert_eq!(w.template_version, None);
        let mut c = consent();
        c.fhir_elements = nonempty(w.kept);
        let mut back = to_fhir(&c, None);
        back.as_object_mut().unwrap().remove("id");
        let mut want = sent.clone();
        want["policy"][0]["uri"] = json!(policy_uri(c.template_id, 2));
        assert_eq!(back, want);
        let mut nope = sent.clone();
        nope["policy"] = json!([{"uri": "https://example.org/policy"}]);
        assert_eq!(
            from_fhir(&nope).unwrap_err()[0].expression.as_deref(),
            Some("Consent.policy[0].uri")
        );
        let mut signed = sent;
        signed["dateTime"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(
            from_fhir(&signed).unwrap().check_new().unwrap_err()[0]
                .expression
                .as_deref(),
            Some("Consent.dateTime")
        );
    }
}
