//! Record merge across the clinical lists: a `patient_id` filter follows merges, so the
//! survivor's lists include what was recorded against the records merged into it, a merged
//! record's lists are its survivor's, and unmerging separates them again.

use crate::app::{TestApp, on_both_backends, patient};
use serde_json::{Value, json};
use std::collections::BTreeSet;

on_both_backends!(patient_lists_follow_merges_and_unmerge_separates_them);

/// The lists that take a `patient_id`.
const LISTS: &[&str] = &[
    "/api/v1/interactions",
    "/api/v1/encounters",
    "/api/v1/observations",
    "/api/v1/procedures",
    "/api/v1/conditions",
    "/api/v1/allergies",
    "/api/v1/medical-records",
];

async fn patient_lists_follow_merges_and_unmerge_separates_them(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let t = &app.token;
    let id_of = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let survivor = id_of(&app.create_patient(&patient("MX-S", "Same", "Person")).await);
    let merged = id_of(&app.create_patient(&patient("MX-M", "Same", "Person")).await);
    let other = id_of(
        &app.create_patient(&patient("MX-O", "Other", "Person"))
            .await,
    );
    let clin = json!({"family": "Merge", "given": ["C"], "credential": "GMC-MX", "specialty": "GP", "org_unit": "A"});
    let r = app.post("/api/v1/clinicians", t, &clin).await;
    assert_eq!(r.status(), 201);
    let cid = id_of(&r.json().await.unwrap());
    let department = app.create_department("MX", "Merges").await;
    let sct = |code: &str| json!({"system": "http://snomed.info/sct", "code": code});

    // One entry of every kind for each patient; remember which is whose.
    let mut owned: Vec<(String, String, String)> = Vec::new(); // (list, patient, entry id)
    for pid in [&survivor, &merged, &other] {
        let bodies = [
            (
                "/api/v1/interactions",
                json!({"patient_id": pid, "kind": "call", "outcome": "healthy", "occurred_at": "2026-03-01T09:00:00Z"}),
            ),
            (
                "/api/v1/encounters",
                json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": department}),
            ),
            (
                "/api/v1/observations",
                json!({"patient_id": pid, "code": {"system": "http://loinc.org", "code": "8480-6"}, "value": {"type": "quantity", "value": 120.0, "unit": "mm[Hg]"}, "effective_at": "2026-03-01T09:00:00Z"}),
            ),
            (
                "/api/v1/procedures",
                json!({"patient_id": pid, "code": sct("80146002"), "performer_id": cid, "performed_at": "2026-03-01T10:00:00Z"}),
            ),
            (
                "/api/v1/conditions",
                json!({"patient_id": pid, "code": sct("38341003")}),
            ),
            (
                "/api/v1/allergies",
                json!({"patient_id": pid, "code": {"system": "urn:local:allergen", "code": "penicillin"}}),
            ),
            (
                "/api/v1/medical-records",
                json!({"patient_id": pid, "department_id": department}),
            ),
        ];
        for (list, body) in bodies {
            let r = app.post(list, t, &body).await;
            assert_eq!(r.status(), 201, "{list}: {:?}", r.text().await);
            owned.push((
                list.to_owned(),
                pid.clone(),
                id_of(&r.json().await.unwrap()),
            ));
        }
    }
    // A note in each medical record, for the full-text search.
    for (list, _, rid) in owned.clone() {
        if list == "/api/v1/medical-records" {
            let r = app
                .post(
                    &format!("/api/v1/medical-records/{rid}/notes"),
                    t,
                    &json!({"note_type": "progress", "text": "Mergetest stable."}),
                )
                .await;
            assert_eq!(r.status(), 201);
        }
    }
    let listed = |list: &'static str, pid: String| {
        let app = &app;
        async move {
            let r = app
                .get(&format!("{list}?patient_id={pid}"), &app.token)
                .await;
            assert_eq!(r.status(), 200, "{list}");
            let page: Value = r.json().await.unwrap();
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<BTreeSet<_>>()
        }
    };
    let notes_of = |pid: String| {
        let app = &app;
        async move {
            let page: Value = app
                .get(
                    &format!("/api/v1/notes?q=mergetest&patient_id={pid}"),
                    &app.token,
                )
                .await
                .json()
                .await
                .unwrap();
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["patient_id"].as_str().unwrap().to_owned())
                .collect::<BTreeSet<_>>()
        }
    };
    let entries = |list: &str, of: &[&String]| -> BTreeSet<String> {
        owned
            .iter()
            .filter(|(l, p, _)| l == list && of.contains(&p))
            .map(|(_, _, id)| id.clone())
            .collect()
    };
    let set = |ids: &[&String]| ids.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();
    let check = |of: String, expect: Vec<String>, when: &'static str| {
        let (listed, notes_of, entries) = (&listed, &notes_of, &entries);
        async move {
            let expect: Vec<&String> = expect.iter().collect();
            for list in LISTS {
                assert_eq!(
                    listed(list, of.clone()).await,
                    entries(list, &expect),
                    "{list} of {of} {when}"
                );
            }
            assert_eq!(
                notes_of(of.clone()).await,
                set(&expect),
                "notes of {of} {when}"
            );
        }
    };
    let (s, m, o) = (survivor.clone(), merged.clone(), other.clone());
    check(s.clone(), vec![s.clone()], "before the merge").await;
    check(m.clone(), vec![m.clone()], "before the merge").await;

    // Merge: the survivor's lists take in the merged record's entries; the merged record's
    // lists are the survivor's. Nothing moved: each entry still names its own patient.
    let act = |pid: String, action: &'static str, version: i64, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(app.url(&format!("/api/v1/patients/{pid}/{action}")))
                .bearer_auth(&app.token)
                .header("if-match", format!("\"{version}\""))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{action}: {:?}", r.text().await);
        }
    };
    act(m.clone(), "merge", 1, json!({"into": s})).await;
    check(s.clone(), vec![s.clone(), m.clone()], "after the merge").await;
    check(m.clone(), vec![s.clone(), m.clone()], "after the merge").await;
    check(o.clone(), vec![o.clone()], "after the merge").await;
    let first = app
        .get(&format!("/api/v1/interactions?patient_id={s}"), t)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let owners: BTreeSet<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(owners, [s.as_str(), m.as_str()].into_iter().collect());

    // Merges chain: the survivor merged on into a third record brings both along.
    let third = id_of(&app.create_patient(&patient("MX-T", "Same", "Person")).await);
    act(s.clone(), "merge", 1, json!({"into": third})).await;
    assert_eq!(
        listed("/api/v1/interactions", m.clone()).await,
        entries("/api/v1/interactions", &[&s, &m]),
        "the third record has no interactions of its own"
    );
    assert_eq!(
        listed("/api/v1/interactions", third.clone()).await,
        entries("/api/v1/interactions", &[&s, &m])
    );
    act(s.clone(), "unmerge", 2, json!({})).await;

    // Unmerge: separate lists again.
    act(m.clone(), "unmerge", 2, json!({})).await;
    check(s.clone(), vec![s.clone()], "after the unmerge").await;
    check(m.clone(), vec![m.clone()], "after the unmerge").await;
    app.stop().await;
}
