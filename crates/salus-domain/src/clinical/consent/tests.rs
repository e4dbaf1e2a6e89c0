//! The consent invariants, decided without a store.

use super::instance::*;
use super::template::*;
use super::*;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use salus_kernel::{Aggregate, DomainError, Hash32};

fn counter() -> impl FnMut() -> Uuid {
    let mut n = 0u128;
    move || {
        n += 1;
        Uuid::from_u128(n)
    }
}

fn at() -> DateTime<Utc> {
    "2026-03-01T10:00:00Z".parse().unwrap()
}

fn template(required: &[bool], publish: bool) -> ConsentTemplate {
    let sections = vec![SectionInput {
        title: "Use of data".into(),
        clauses: required
            .iter()
            .enumerate()
            .map(|(i, r)| ClauseInput {
                text: format!("ConsentClause number {i}: I agree to item {i}."),
                required: *r,
            })
            .collect(),
    }];
    let content = TemplateContent::parse("Research", None, &sections, &mut counter()).unwrap();
    let mut t = ConsentTemplate::decide(
        None,
        &TemplateCommand::Create {
            id: Uuid::from_u128(1000),
            kind: "research".into(),
            content,
        },
    )
    .unwrap()
    .iter()
    .fold(None, ConsentTemplate::evolve)
    .unwrap();
    if publish {
        t = ConsentTemplate::decide(
            Some(&t),
            &TemplateCommand::Publish {
                by: Uuid::nil(),
                at: at(),
            },
        )
        .unwrap()
        .iter()
        .fold(Some(t), ConsentTemplate::evolve)
        .unwrap();
    }
    t
}

fn create(t: &ConsentTemplate, version: Option<u32>) -> Result<Consent, DomainError> {
    let cmd = ConsentCommand::Create {
        id: Uuid::from_u128(2000),
        input: ConsentInput {
            patient_id: Uuid::from_u128(3000),
            template_id: t.id,
            template_version: version,
            fhir_elements: None,
        },
        facts: Box::new(instance::CreateFacts {
            patient_open: true,
            template: Some(t.clone()),
            created_by: Uuid::nil(),
        }),
    };
    Ok(Consent::decide(None, &cmd)?
        .iter()
        .fold(None, Consent::evolve)
        .unwrap())
}

fn step(c: &Consent, cmd: ConsentCommand) -> Result<Consent, DomainError> {
    Ok(Consent::decide(Some(c), &cmd)?
        .iter()
        .fold(Some(c.clone()), Consent::evolve)
        .unwrap())
}

fn ack(c: &Consent, clause: Uuid) -> Result<Consent, DomainError> {
    step(
        c,
        ConsentCommand::Acknowledge {
            clause_id: clause,
            acknowledged_by: Some("Ada Patient".into()),
            recorded_by: Uuid::nil(),
            at: at(),
        },
    )
}

fn signatures() -> Vec<ConsentSignature> {
    parse_signatures(
        &[SignatureInput {
            signer_name: "Ada Patient".into(),
            role: instance::SignerRole::Patient,
            method: instance::SignatureMethod::Electronic,
        }],
        Uuid::nil(),
        at(),
    )
    .unwrap()
}

fn sign_cmd() -> ConsentCommand {
    ConsentCommand::Sign {
        signatures: signatures(),
        at: at(),
        document: ConsentDocument {
            sha256: "00".repeat(32),
            size: 1,
            content_type: "application/pdf".into(),
        },
    }
}

fn clause_ids(c: &Consent) -> Vec<Uuid> {
    c.sections
        .iter()
        .flat_map(|s| s.clauses.iter().map(|c| c.id))
        .collect()
}

#[test]
fn only_a_published_version_can_be_consented_to() {
    let draft = template(&[true], false);
    assert!(
        matches!(create(&draft, None), Err(DomainError::Invalid { field: Some(f), .. }) if f == "template_id")
    );
    assert!(
        matches!(create(&draft, Some(1)), Err(DomainError::Invalid { field: Some(f), .. }) if f == "template_version")
    );
    let published = template(&[true], true);
    assert!(create(&published, Some(2)).is_err());
    let c = create(&published, None).unwrap();
    assert_eq!((c.template_version, c.status), (1, ConsentStatus::Pending));
    assert_eq!(c.sections, published.versions[0].content.sections);
}

#[test]
fn an_acknowledgement_snapshots_the_clause_text_and_its_hash_once() {
    let c = create(&template(&[true, false], true), None).unwrap();
    let id = clause_ids(&c)[0];
    let c = ack(&c, id).unwrap();
    let a = c.acknowledged(id).unwrap().clone();
    assert_eq!(a.text, c.sections[0].clauses[0].text);
    assert_eq!(a.text_sha256, Hash32::sha256(a.text.as_bytes()).to_hex());
    assert!(c.verify());
    // Acknowledging again changes nothing; an unknown clause is refused.
    assert!(
        Consent::decide(
            Some(&c),
            &ConsentCommand::Acknowledge {
                clause_id: id,
                acknowledged_by: None,
                recorded_by: Uuid::nil(),
                at: at()
            }
        )
        .unwrap()
        .is_empty()
    );
    assert!(matches!(
        ack(&c, Uuid::from_u128(99_999)),
        Err(DomainError::Invalid { .. })
    ));
    let mut altered = c.clone();
    altered.acknowledgements[0].text.push('!');
    assert!(!altered.verify());
}

#[test]
fn signing_lists_the_missing_required_clauses_and_a_revoked_consent_stays_unsigned() {
    let c = create(&template(&[true, false, true], true), None).unwrap();
    let ids = clause_ids(&c);
    let missing: Vec<Uuid> = c.missing_required().iter().map(|m| m.clause_id).collect();
    assert_eq!(missing, [ids[0], ids[2]]);
    let Err(DomainError::Conflict(m)) = step(&c, sign_cmd()) else {
        panic!("signing an incomplete consent must be a conflict")
    };
    assert!(
        m.contains(&ids[0].to_string()) && m.contains(&ids[2].to_string()),
        "{m}"
    );
    let c = ack(&ack(&c, ids[0]).unwrap(), ids[2]).unwrap();
    let signed = step(&c, sign_cmd()).unwrap();
    assert_eq!(signed.status, ConsentStatus::Signed);
    assert!(signed.is_active() && signed.document.is_some());
    assert!(matches!(
        step(&signed, sign_cmd()),
        Err(DomainError::IllegalTransition { .. })
    ));
    assert!(matches!(
        ack(&signed, ids[1]),
        Err(DomainError::IllegalTransition { .. })
    ));
    let revoke = ConsentActionInput {
        reason: Some("  changed my mind ".into()),
        requested_by: Some("Ada Patient".into()),
        ..Default::default()
    };
    assert!(
        ConsentActionInput::default()
            .command("revoke", Uuid::nil(), at())
            .is_err()
    );
    let revoked = step(
        &signed,
        revoke.command("revoke", Uuid::from_u128(7), at()).unwrap(),
    )
    .unwrap();
    let r = revoked.revocation.clone().unwrap();
    assert_eq!(
        (r.reason.as_str(), r.revoked_by),
        ("changed my mind", Uuid::from_u128(7))
    );
    assert!(!revoked.is_active());
    assert!(matches!(
        step(&revoked, sign_cmd()),
        Err(DomainError::Conflict(_))
    ));
    assert!(matches!(
        revoked.sign_refusal(),
        Some(DomainError::Conflict(_))
    ));
    assert!(matches!(
        step(
            &revoked,
            revoke.command("revoke", Uuid::nil(), at()).unwrap()
        ),
        Err(DomainError::IllegalTransition { .. })
    ));
    // A pending consent can be withdrawn too, and is then never signed.
    let withdrawn = step(&c, revoke.command("revoke", Uuid::nil(), at()).unwrap()).unwrap();
    assert!(matches!(
        step(&withdrawn, sign_cmd()),
        Err(DomainError::Conflict(_))
    ));
}

#[test]
fn signatures_need_the_patient_or_a_guardian_and_a_witness_for_verbal_consent() {
    use instance::{SignatureMethod as M, SignerRole as R};
    let s = |role, method| SignatureInput {
        signer_name: "Someone".into(),
        role,
        method,
    };
    assert!(parse_signatures(&[], Uuid::nil(), at()).is_err());
    assert!(parse_signatures(&[s(R::Witness, M::WetInkScan)], Uuid::nil(), at()).is_err());
    assert!(parse_signatures(&[s(R::Patient, M::VerbalWitnessed)], Uuid::nil(), at()).is_err());
    let ok = parse_signatures(
        &[
            s(R::Guardian, M::VerbalWitnessed),
            s(R::Witness, M::VerbalWitnessed),
        ],
        Uuid::nil(),
        at(),
    )
    .unwrap();
    assert_eq!(ok.len(), 2);
    let mut blank = s(R::Patient, M::Electronic);
    blank.signer_name = "  ".into();
    assert!(parse_signatures(&[blank], Uuid::nil(), at()).is_err());
}

#[test]
fn the_signed_pdf_holds_the_clause_texts_signatures_and_hashes() {
    let mut c = create(&template(&[true, false], true), None).unwrap();
    let ids = clause_ids(&c);
    c = ack(&c, ids[0]).unwrap();
    let signed = c.signed_with(&signatures(), at());
    let pdf = document::render(&signed, Some("Patient, Ada (born 1980-04-23)")).unwrap();
    assert!(pdf.starts_with(b"%PDF-1.5"));
    assert_eq!(
        pdf,
        document::render(&signed, Some("Patient, Ada (born 1980-04-23)")).unwrap(),
        "rendering is deterministic"
    );
    let text = document::extract_text(&pdf).unwrap();
    for cl in &signed.sections[0].clauses {
        assert!(text.contains(&cl.text), "{text}");
    }
    assert!(
        text.contains(&signed.acknowledgements[0].text_sha256),
        "{text}"
    );
    assert!(text.contains("Ada Patient (patient), electronic"), "{text}");
    assert!(text.contains("Not acknowledged"), "{text}");
    assert!(
        text.contains("Patient: Patient, Ada (born 1980-04-23)"),
        "{text}"
    );
}

#[test]
fn a_long_consent_flows_onto_more_pages_and_unencodable_text_is_marked() {
    let sections = vec![SectionInput {
        title: "Many".into(),
        clauses: (0..80)
            .map(|i| ClauseInput {
                text: format!("ConsentClause {i} says Zoë agrees, 同意."),
                required: false,
            })
            .collect(),
    }];
    let content = TemplateContent::parse("Long", None, &sections, &mut counter()).unwrap();
    let mut t = template(&[true], true);
    t.versions[0].content = content;
    let c = create(&t, None).unwrap();
    let pdf = document::render(&c, None).unwrap();
    let doc = lopdf::Document::load_mem(&pdf).unwrap();
    assert!(doc.get_pages().len() > 1);
    let text = document::extract_text(&pdf).unwrap();
    assert!(
        text.contains("ConsentClause 79 says Zoë agrees, ??."),
        "{text}"
    );
}

proptest! {
    /// Signing succeeds exactly when every required clause is acknowledged, whatever the
    /// template's required flags and whichever clauses were acknowledged.
    #[test]
    fn signing_succeeds_iff_every_required_clause_is_acknowledged(
        clauses in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..12)
    ) {
        let required: Vec<bool> = clauses.iter().map(|c| c.0).collect();
        let mut c = create(&template(&required, true), None).unwrap();
        let ids = clause_ids(&c);
        for (id, (_, acked)) in ids.iter().zip(&clauses) {
            if *acked {
                c = ack(&c, *id).unwrap();
            }
        }
        let complete = clauses.iter().all(|(req, acked)| !req || *acked);
        let result = step(&c, sign_cmd());
        prop_assert_eq!(result.is_ok(), complete);
        prop_assert_eq!(c.missing_required().is_empty(), complete);
        let missing = c.missing_required().len();
        prop_assert_eq!(missing, clauses.iter().filter(|(req, acked)| *req && !acked).count());
        if let Err(e) = result {
            prop_assert!(matches!(e, DomainError::Conflict(_)), "{e}");
        }
    }

    /// Whatever printable Latin text a clause has (parentheses, backslashes, accents), the
    /// signed PDF reads it back.
    #[test]
    fn the_pdf_reads_back_any_printable_clause_text(
        words in proptest::collection::vec("[!-~\u{e0}-\u{ff}]{1,20}", 1..40)
    ) {
        let text = words.join(" ");
        let mut t = template(&[true], true);
        t.versions[0].content.sections[0].clauses[0].text = text.clone();
        let c = create(&t, None).unwrap();
        let id = clause_ids(&c)[0];
        let c = ack(&c, id).unwrap().signed_with(&signatures(), at());
        let read = document::extract_text(&document::render(&c, None).unwrap()).unwrap();
        prop_assert!(read.replace('\n', " ").contains(&text), "{} not in {}", text, read);
    }

    /// Every acknowledgement's hash is the SHA-256 of the text it stores, and that text is
    /// the clause's as pinned.
    #[test]
    fn a_snapshot_hash_is_the_sha256_of_the_stored_text(text in "\\PC{1,300}") {
        prop_assume!(!text.trim().is_empty());
        let mut t = template(&[true], true);
        t.versions[0].content.sections[0].clauses[0].text = text.trim().to_owned();
        let c = create(&t, None).unwrap();
        let id = clause_ids(&c)[0];
        let c = ack(&c, id).unwrap();
        let a = c.acknowledged(id).unwrap();
        prop_assert_eq!(&a.text, text.trim());
        prop_assert_eq!(&a.text_sha256, &Hash32::sha256(a.text.as_bytes()).to_hex());
        prop_assert!(c.verify());
    }
}
