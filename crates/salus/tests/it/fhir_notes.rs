//! FHIR DocumentReference, served by the clinical note, over real HTTP on both backends: a
//! note written through `/api/v1` reads through FHIR at the same version and the other way
//! round; signing through either is the next version; an update may only sign; search on
//! the R4 DocumentReference parameters; amendments as `relatesTo`; a tampered note is
//! withheld; errors name the element; every resource answered is validated by
//! `fhir.resources`.

use crate::app::{TestApp, on_both_backends, patient};
use crate::fhir::{Fhir, content, ids};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    notes_map_both_ways_with_the_same_versions,
    notes_are_found_by_their_r4_parameters_and_amended,
    a_tampered_note_is_withheld_from_fhir,
    attachments_read_as_document_references_beside_the_notes,
    files_come_as_document_references_and_read_back_as_sent,
);

const LOINC: &str = "http://loinc.org";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn text_of(r: &Value) -> String {
    let d = r["content"][0]["attachment"]["data"].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(d).unwrap()).unwrap()
}

/// A patient with an open medical record in a new department: (patient, department, record).
async fn a_record(app: &TestApp, mrn: &str, dep: &str) -> (String, String, String) {
    let pid = app.create_patient(&patient(mrn, "Noted", "Ada")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let did = app.create_department(dep, "Ward").await;
    let r = app
        .post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": did}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    (pid, did, rec["id"].as_str().unwrap().to_owned())
}

fn discharge(pid: &str, did: Option<&str>, text: &str) -> Value {
    let mut r = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "18842-5", "display": "Discharge summary"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note"}]}],
        "subject": {"reference": format!("Patient/{pid}")},
        "date": "2024-05-01T10:00:00Z",
        "description": "Discharge after 3 days",
        "content": [{"attachment": {"contentType": "text/plain", "data": b64(text), "title": "discharge.txt"}}],
        "context": {"period": {"start": "2024-04-28", "end": "2024-05-01"}},
    });
    if let Some(d) = did {
        r["custodian"] = json!({"reference": format!("Organization/{d}")});
    }
    r
}

async fn notes_map_both_ways_with_the_same_versions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let (pid, did, rid) = a_record(&app, "N-1", "NOTE").await;

    // /api/v1 → FHIR.
    let r = app
        .post(
            &format!("/api/v1/medical-records/{rid}/notes"),
            &app.token,
            &json!({"note_type": "progress", "text": "Stable. BP 120/80."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let note: Value = r.json().await.unwrap();
    let nid = note["id"].as_str().unwrap();
    let read = fhir.get(&format!("/DocumentReference/{nid}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("etag"), "W/\"1\"");
    assert_eq!(read.body["type"]["coding"][0]["code"], "11506-3");
    assert_eq!(read.body["docStatus"], "preliminary");
    assert_eq!(read.body["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        read.body["custodian"]["reference"],
        format!("Organization/{did}")
    );
    assert_eq!(text_of(&read.body), "Stable. BP 120/80.");
    assert_eq!(read.body["content"][0]["attachment"]["size"], 18);
    // Signing through the JSON API is version 2, final, through FHIR.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/notes/{nid}/sign")))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let read = fhir.get(&format!("/DocumentReference/{nid}")).await;
    assert_eq!(read.body["meta"]["versionId"], "2");
    assert_eq!(read.body["docStatus"], "final");
    assert_eq!(
        read.body["authenticator"], read.body["author"][0],
        "signed by its author"
    );
    // The same resource back is no new version; a changed text is refused: append-only.
    let same = fhir
        .put(&format!("/DocumentReference/{nid}"), &read.body, &[])
        .await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.header("etag"), "W/\"2\"");
    let mut changed = read.body.clone();
    changed["content"][0]["attachment"] =
        json!({"contentType": "text/plain", "data": b64("Unstable.")});
    let (_, at) = fhir
        .put(&format!("/DocumentReference/{nid}"), &changed, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content");
    let mut unsigned = read.body.clone();
    unsigned["docStatus"] = json!("preliminary");
    let (_, at) = fhir
        .put(&format!("/DocumentReference/{nid}"), &unsigned, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.docStatus");
    let r = fhir
        .send(
            Method::DELETE,
            &format!("/DocumentReference/{nid}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 405, "{}", r.body);

    // FHIR → /api/v1: a note in the custodian's record, everything sent read back.
    let sent = discharge(&pid, Some(&did), "Discharged home.\nFollow up in 2 weeks.");
    let created = fhir.post("/DocumentReference", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let fid = created.body["id"].as_str().unwrap().to_owned();
    for k in [
        "type",
        "category",
        "subject",
        "date",
        "description",
        "context",
        "custodian",
    ] {
        assert_eq!(created.body[k], sent[k], "{k}");
    }
    assert_eq!(
        created.body["content"][0]["attachment"]["title"],
        "discharge.txt"
    );
    assert_eq!(created.body["docStatus"], "preliminary");
    let api: Value = app
        .get(&format!("/api/v1/notes/{fid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(api["record_id"], rid.as_str());
    assert_eq!(api["note_type"], "discharge");
    assert_eq!(api["text"], "Discharged home.\nFollow up in 2 weeks.");
    // FHIR signs it: docStatus final is version 2 in both APIs.
    let mut sign = created.body.clone();
    sign["docStatus"] = json!("final");
    let signed = fhir
        .put(
            &format!("/DocumentReference/{fid}"),
            &sign,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert_eq!(signed.header("etag"), "W/\"2\"");
    let r = app.get(&format!("/api/v1/notes/{fid}"), &app.token).await;
    assert_eq!(r.headers()["etag"], "\"2\"");
    let api: Value = r.json().await.unwrap();
    assert!(api["signed_at"].is_string(), "{api}");
    let history = fhir
        .get(&format!("/DocumentReference/{fid}/_history"))
        .await;
    assert_eq!(history.body["total"], 2);
    // One that arrives final is signed as it is written; without custodian the patient's
    // only open record takes it.
    let mut fin = discharge(&pid, None, "Seen in clinic.");
    fin["docStatus"] = json!("final");
    let c = fhir.post("/DocumentReference", &fin, &[]).await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["docStatus"], "final");
    assert_eq!(
        c.body["custodian"]["reference"],
        format!("Organization/{did}")
    );

    // Errors name the element.
    let other = app
        .create_patient(&patient("N-2", "Unrecorded", "Bo"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, at) = fhir
        .post("/DocumentReference", &discharge(&other, None, "x"), &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.subject");
    let mut pdf = discharge(&pid, None, "x");
    pdf["content"][0]["attachment"]["contentType"] = json!("application/pdf");
    let (_, at) = fhir
        .post("/DocumentReference", &pdf, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.contentType");
    let mut blank = discharge(&pid, None, "   ");
    blank["docStatus"] = json!("preliminary");
    let (_, at) = fhir
        .post("/DocumentReference", &blank, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.data");
    fhir.validate_all();
    app.stop().await;
}

async fn notes_are_found_by_their_r4_parameters_and_amended(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let (ada, did, _) = a_record(&app, "N-3", "NOTEA").await;
    let (bob, _, _) = a_record(&app, "N-4", "NOTEB").await;
    let first = fhir
        .post(
            "/DocumentReference",
            &discharge(&ada, Some(&did), "Home."),
            &[],
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let fid = first.body["id"].as_str().unwrap().to_owned();
    let mut progress = discharge(&bob, None, "Day 2.");
    progress["type"] = json!({"coding": [{"system": LOINC, "code": "11506-3"}]});
    let other = fhir.post("/DocumentReference", &progress, &[]).await;
    assert_eq!(other.status, 201, "{}", other.body);
    let oid = other.body["id"].as_str().unwrap().to_owned();
    // An amendment appends to the first note.
    let mut amend = discharge(&ada, Some(&did), "Home, with oxygen.");
    amend["relatesTo"] =
        json!([{"code": "appends", "target": {"reference": format!("DocumentReference/{fid}")}}]);
    let amended = fhir.post("/DocumentReference", &amend, &[]).await;
    assert_eq!(amended.status, 201, "{}", amended.body);
    let aid = amended.body["id"].as_str().unwrap().to_owned();
    assert_eq!(amended.body["relatesTo"], amend["relatesTo"]);
    let api: Value = app
        .get(&format!("/api/v1/notes/{aid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(api["amends"], fid.as_str());
    // An amendment of a note in another record is refused.
    let mut stray = discharge(&bob, None, "x");
    stray["relatesTo"] =
        json!([{"code": "appends", "target": {"reference": format!("DocumentReference/{fid}")}}]);
    let (_, at) = fhir
        .post("/DocumentReference", &stray, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.relatesTo[0].target");

    for (query, want) in [
        (format!("patient={ada}"), vec![fid.clone(), aid.clone()]),
        (format!("subject=Patient/{bob}"), vec![oid.clone()]),
        (
            format!("type={LOINC}|18842-5"),
            vec![fid.clone(), aid.clone()],
        ),
        (format!("type={LOINC}|11506-3&patient={ada}"), vec![]),
        (
            format!("relatesto=DocumentReference/{fid}"),
            vec![aid.clone()],
        ),
        ("relation=appends".to_owned(), vec![aid.clone()]),
        (
            format!("custodian=Organization/{did}"),
            vec![fid.clone(), aid.clone()],
        ),
        (
            "contenttype=text/plain".to_owned(),
            vec![fid.clone(), oid.clone(), aid.clone()],
        ),
        (
            "date=ge2024-05-01".to_owned(),
            vec![fid.clone(), oid.clone(), aid.clone()],
        ),
        (
            "docstatus=preliminary".to_owned(),
            vec![fid.clone(), oid.clone(), aid.clone()],
        ),
        (
            "description:contains=3 days".to_owned(),
            vec![fid.clone(), oid.clone(), aid.clone()],
        ),
    ] {
        let b = fhir.get(&format!("/DocumentReference?{query}")).await;
        assert_eq!(b.status, 200, "{query}: {}", b.body);
        let mut got = ids(&b.body);
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{query}");
    }
    // _include of the amended note.
    let b = fhir
        .get(&format!(
            "/DocumentReference?_id={aid}&_include=DocumentReference:relatesto"
        ))
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    let mut got: Vec<String> = b.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![fid.clone(), aid.clone()];
    want.sort();
    assert_eq!(got, want);
    // Type history lists every version.
    let h = fhir.get("/DocumentReference/_history").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["entry"].as_array().unwrap().len(), 3);
    fhir.validate_all();
    app.stop().await;
}

async fn a_tampered_note_is_withheld_from_fhir(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let (pid, did, _) = a_record(&app, "N-5", "NOTET").await;
    let c = fhir
        .post(
            "/DocumentReference",
            &discharge(&pid, Some(&did), "Stable. BP 120/80."),
            &[],
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    let id = c.body["id"].as_str().unwrap().to_owned();
    match &app.settings.database_url {
        None => {
            let c = rusqlite::Connection::open(app.settings.sqlite_path()).unwrap();
            let n = c.execute("UPDATE resources SET doc = replace(doc, 'BP 120/80', 'BP 90/60') WHERE resource_type = 'clinical_note'", []).unwrap();
            assert_eq!(n, 1);
        }
        Some(url) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute("UPDATE resources SET doc = jsonb_set(doc, '{text}', '\"Stable. BP 90/60.\"') WHERE resource_type = 'clinical_note'").await.unwrap();
        }
    }
    for path in [
        format!("/DocumentReference/{id}"),
        format!("/DocumentReference?patient={pid}"),
    ] {
        let r = fhir.get(&path).await;
        assert_eq!(r.status, 500, "{path}: {}", r.body);
        assert!(!r.body.to_string().contains(&b64("Stable. BP 90/60.")));
        assert!(r.body.to_string().contains("integrity"), "{}", r.body);
    }
    app.stop().await;
}

async fn attachments_read_as_document_references_beside_the_notes(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let (pid, did, rid) = a_record(&app, "N-6", "NOTEF").await;
    let note = fhir
        .post(
            "/DocumentReference",
            &discharge(&pid, Some(&did), "Home."),
            &[],
        )
        .await;
    assert_eq!(note.status, 201, "{}", note.body);
    let nid = note.body["id"].as_str().unwrap().to_owned();
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n".to_vec();
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/medical-records/{rid}/attachments?filename=ecg.pdf"
        )))
        .bearer_auth(&app.token)
        .header("content-type", "application/pdf")
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    let aid = a["id"].as_str().unwrap().to_owned();

    let read = fhir.get(&format!("/DocumentReference/{aid}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("etag"), "W/\"1\"");
    let att = &read.body["content"][0]["attachment"];
    assert_eq!(att["contentType"], "application/pdf");
    assert_eq!(att["title"], "ecg.pdf");
    assert_eq!(att["size"], pdf.len());
    assert_eq!(read.body["subject"]["reference"], format!("Patient/{pid}"));
    // The download path serves the bytes.
    let got = app
        .get(att["url"].as_str().unwrap(), &app.token)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), pdf);
    let v = fhir
        .get(&format!("/DocumentReference/{aid}/_history/1"))
        .await;
    assert_eq!(v.status, 200, "{}", v.body);
    let h = fhir
        .get(&format!("/DocumentReference/{aid}/_history"))
        .await;
    assert_eq!(h.body["total"], 1);

    // Searches find notes and files together, in id order, and count both.
    let b = fhir
        .get(&format!("/DocumentReference?patient={pid}&_total=accurate"))
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(ids(&b.body), vec![nid.clone(), aid.clone()]);
    assert_eq!(b.body["total"], 2);
    let b = fhir
        .get("/DocumentReference?contenttype=application/pdf")
        .await;
    assert_eq!(ids(&b.body), vec![aid.clone()]);
    let b = fhir
        .get(&format!("/DocumentReference?patient={pid}&_count=1"))
        .await;
    assert_eq!(ids(&b.body), vec![nid.clone()]);
    let next = b.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = fhir.get(&next).await;
    assert_eq!(ids(&b.body), vec![aid.clone()]);
    // A file never changes through FHIR.
    let r = fhir
        .put(&format!("/DocumentReference/{aid}"), &read.body, &[])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    fhir.validate_all();
    app.stop().await;
}

/// A DocumentReference of an ECG tracing as another system sends it: a PDF with its
/// data, title, creation and format, and what else the document says.
fn ecg(pid: &str, did: &str, pdf: &[u8]) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"]},
        "identifier": [{"system": "urn:oid:1.2.3.4", "value": "ecg-77"}],
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note"}]}],
        "subject": {"reference": format!("Patient/{pid}"), "display": "Ada Noted"},
        "date": "2024-05-02T08:30:00Z",
        "author": [{"display": "Cardiology lab"}],
        "custodian": {"reference": format!("Organization/{did}")},
        "content": [{
            "attachment": {
                "contentType": "application/pdf",
                "data": base64::engine::general_purpose::STANDARD.encode(pdf),
                "title": "ECG 12-lead 1/2",
                "creation": "2024-05-02T08:25:00Z",
                "language": "en",
            },
            "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"},
        }],
    })
}

async fn files_come_as_document_references_and_read_back_as_sent(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let (pid, did, rid) = a_record(&app, "N-7", "CARDIO").await;
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n".to_vec();
    let sent = ecg(&pid, &did, &pdf);
    let c = fhir.post("/DocumentReference", &sent, &[]).await;
    assert_eq!(c.status, 201, "{}", c.body);
    let id = c.body["id"].as_str().unwrap().to_owned();

    // It is an attachment of the patient's record in the custodian's department.
    let (status, _, a) = crate::fhir::api_get(&app, &format!("/api/v1/attachments/{id}")).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["record_id"], rid.as_str());
    assert_eq!(a["content_type"], "application/pdf");
    assert_eq!(a["filename"], "ECG 12-lead 1_2");
    assert_eq!(a["size"], pdf.len());

    // It reads back as sent: the data is served by its download path, with its size and
    // SHA-1, and the bytes are the ones sent.
    let read = fhir.get(&format!("/DocumentReference/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("etag"), "W/\"1\"");
    let mut back = content(&read.body);
    let att = back["content"][0]["attachment"].as_object_mut().unwrap();
    let url = att.remove("url").unwrap();
    assert_eq!(att.remove("size").unwrap(), pdf.len());
    {
        use sha1::Digest;
        assert_eq!(
            att.remove("hash").unwrap(),
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&pdf))
        );
    }
    let mut expected = content(&sent);
    expected["content"][0]["attachment"]
        .as_object_mut()
        .unwrap()
        .remove("data");
    assert_eq!(back, expected);
    assert_eq!(read.body["meta"]["profile"], sent["meta"]["profile"]);
    let got = app.get(url.as_str().unwrap(), &app.token).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), pdf);

    // Found by what it says.
    let b = fhir
        .get(&format!("/DocumentReference?type={LOINC}|11524-6"))
        .await;
    assert_eq!(ids(&b.body), vec![id.clone()]);
    let b = fhir
        .get("/DocumentReference?identifier=urn:oid:1.2.3.4|ecg-77")
        .await;
    assert_eq!(ids(&b.body), vec![id.clone()]);

    // In a transaction, beside a note, for a department where the patient has no record
    // yet: one record is opened for both, in the same commit.
    let did2 = app.create_department("RADIO", "Radiology").await;
    let png = {
        let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
        p.extend_from_slice(&[
            0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0,
        ]);
        p
    };
    let mut image = ecg(&pid, &did2, &png);
    image["content"][0]["attachment"] = json!({
        "contentType": "image/png",
        "data": base64::engine::general_purpose::STANDARD.encode(&png),
    });
    image.as_object_mut().unwrap().remove("identifier");
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": image,
         "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": discharge(&pid, Some(&did2), "Chest film clear."),
         "request": {"method": "POST", "url": "DocumentReference"}},
    ]});
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = r.body["entry"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e["response"]["status"].as_str().unwrap().starts_with("201")),
        "{}",
        r.body
    );
    let file = &entries[0]["resource"];
    assert_eq!(file["content"][0]["attachment"]["contentType"], "image/png");
    assert_eq!(file["content"][0]["attachment"]["title"], "document.png");
    let (_, _, f) = crate::fhir::api_get(
        &app,
        &format!("/api/v1/attachments/{}", file["id"].as_str().unwrap()),
    )
    .await;
    let (_, _, n) = crate::fhir::api_get(
        &app,
        &format!(
            "/api/v1/notes/{}",
            entries[1]["resource"]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(f["record_id"], n["record_id"], "{f} {n}");
    assert_ne!(f["record_id"], rid.as_str());

    // Errors name the element, and nothing is written.
    let mut lying = ecg(&pid, &did, &pdf);
    lying["content"][0]["attachment"]["contentType"] = json!("image/png");
    let (_, at) = fhir
        .post("/DocumentReference", &lying, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.contentType");
    let mut hashed = ecg(&pid, &did, &pdf);
    hashed["content"][0]["attachment"]["hash"] = json!("AAAA");
    let (_, at) = fhir
        .post("/DocumentReference", &hashed, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.hash");
    let mut linked = ecg(&pid, &did, &pdf);
    linked["content"][0]["attachment"]["url"] = json!("https://example.org/ecg.pdf");
    let (_, at) = fhir
        .post("/DocumentReference", &linked, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.url");
    let mut exe = ecg(&pid, &did, b"MZ\x90\x00");
    exe["content"][0]["attachment"]["contentType"] = json!("application/x-msdownload");
    let (_, at) = fhir
        .post("/DocumentReference", &exe, &[])
        .await
        .outcome(422);
    assert_eq!(at, "DocumentReference.content[0].attachment.contentType");
    let b = fhir
        .get(&format!("/DocumentReference?patient={pid}&_total=accurate"))
        .await;
    assert_eq!(b.body["total"], 3, "{}", b.body);

    // A file never changes.
    let (_, _) = fhir
        .put(&format!("/DocumentReference/{id}"), &read.body, &[])
        .await
        .outcome(422);
    fhir.validate_all();
    app.stop().await;
}
