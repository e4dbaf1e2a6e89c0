//! FHIR search result parameters over real HTTP on both backends: `_sort` (ascending,
//! descending, paged by offset), `_total`, `_summary`, `_elements`, `_include` and
//! `_revinclude` (with `:iterate`) on documents and on Patient, and type and system
//! history, conditional update and delete, `Prefer: return` in Bundle answers, AuditEvent
//! from the log; every resource answered
//! validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, a_patient, next_link};
use serde_json::{Value, json};

on_both_backends!(
    results_are_sorted_counted_summarised_and_paged,
    includes_and_revincludes_follow_references,
    type_and_system_history_list_every_version_newest_first,
    conditional_updates_and_deletes_act_on_the_one_match,
    bundle_answers_follow_prefer_return,
    audit_events_are_the_log_read_only,
);

fn immunization(patient: &str, vaccine: &str, date: &str) -> Value {
    json!({
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": vaccine}]},
        "patient": {"reference": format!("Patient/{patient}")},
        "occurrenceDateTime": date,
        "lotNumber": format!("LOT-{vaccine}")
    })
}

/// `(mode, Type/id)` of every entry but outcomes.
fn entries(b: &Value) -> Vec<(String, String)> {
    assert_eq!(b["type"], "searchset", "{b}");
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] != "outcome")
        .map(|e| {
            let r = &e["resource"];
            (
                e["search"]["mode"].as_str().unwrap().to_owned(),
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

fn lots(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            e["resource"]["occurrenceDateTime"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn results_are_sorted_counted_summarised_and_paged(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let a = a_patient(&app, "R-1", "Sorter").await;
    let b = a_patient(&app, "R-2", "Other").await;
    let dates = ["2024-03-01", "2021-07-15", "2025-01-20", "2023-11-30"];
    for (i, d) in dates.iter().enumerate() {
        let r = fhir
            .post(
                "/Immunization",
                &immunization(&a, &format!("20{i}"), d),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = fhir
        .post("/Immunization", &immunization(&b, "208", "2022-02-02"), &[])
        .await;
    assert_eq!(r.status, 201);

    // Ascending and descending by date, with the total of all matches.
    let up = fhir
        .get(&format!("/Immunization?patient=Patient/{a}&_sort=date"))
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(
        lots(&up.body),
        ["2021-07-15", "2023-11-30", "2024-03-01", "2025-01-20"]
    );
    assert_eq!(up.body["total"], 4);
    let down = fhir.get("/Immunization?_sort=-date").await;
    assert_eq!(
        lots(&down.body),
        [
            "2025-01-20",
            "2024-03-01",
            "2023-11-30",
            "2022-02-02",
            "2021-07-15"
        ]
    );

    // Sorted pages follow each other by their next links, each match once.
    let mut page = fhir.get("/Immunization?_sort=-date&_count=2").await;
    let mut seen = Vec::new();
    loop {
        assert_eq!(page.status, 200, "{}", page.body);
        let got = lots(&page.body);
        assert!(got.len() <= 2);
        seen.extend(got);
        match next_link(&page.body) {
            Some(next) => {
                assert!(
                    next.contains("_sort=-date") && next.contains("_offset="),
                    "{next}"
                );
                page = fhir.get(&next).await;
            }
            None => break,
        }
    }
    assert_eq!(seen, lots(&down.body), "paged the same as one page");

    // _total without sorting; none by default.
    let counted = fhir
        .get(&format!(
            "/Immunization?patient=Patient/{a}&_total=accurate&_count=1"
        ))
        .await;
    assert_eq!(counted.body["total"], 4, "{}", counted.body);
    assert_eq!(lots(&counted.body).len(), 1);
    let plain = fhir.get("/Immunization").await;
    assert!(plain.body.get("total").is_none());
    let counted = fhir.get("/Patient?_total=accurate&family=Sorter").await;
    assert_eq!(counted.body["total"], 1, "{}", counted.body);

    // The same by POST _search, the parameters in a form body.
    let posted = app
        .client
        .post(app.url("/fhir/R4/Patient/_search"))
        .bearer_auth(&app.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("family=Sorter&_total=accurate")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let posted: Value = posted.json().await.unwrap();
    assert_eq!(posted["total"], 1, "{posted}");
    assert_eq!(
        entries(&posted),
        [("match".to_owned(), format!("Patient/{a}"))]
    );

    // _summary=count: the total alone.
    let only = fhir.get("/Immunization?_summary=count").await;
    assert_eq!(only.status, 200);
    assert_eq!(only.body["total"], 5);
    assert!(entries(&only.body).is_empty());

    // _summary=true keeps the summary elements (and the mandatory ones), marked SUBSETTED.
    let summary = fhir
        .get(&format!("/Immunization?patient=Patient/{b}&_summary=true"))
        .await;
    let r = &summary.body["entry"][0]["resource"];
    assert_eq!(r["vaccineCode"]["coding"][0]["code"], "208", "{r}");
    assert!(
        r.get("lotNumber").is_none(),
        "lotNumber is not a summary element: {r}"
    );
    assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
    let data = fhir
        .get(&format!("/Immunization?patient=Patient/{b}&_summary=data"))
        .await;
    assert_eq!(data.body["entry"][0]["resource"]["lotNumber"], "LOT-208");
    let elements = fhir
        .get(&format!(
            "/Immunization?patient=Patient/{b}&_elements=lotNumber"
        ))
        .await;
    let r = &elements.body["entry"][0]["resource"];
    assert_eq!(r["lotNumber"], "LOT-208");
    assert!(r.get("patient").is_some(), "mandatory elements stay");

    // Bad result parameters are 400s, whatever the handling.
    for bad in [
        "_sort=nonsense",
        "_summary=maybe",
        "_total=some",
        "_include=Immunization:status",
        "_include=Observation:subject",
    ] {
        let r = fhir.get(&format!("/Immunization?{bad}")).await;
        assert_eq!(r.outcome(400).0, "invalid", "{bad}");
    }
    fhir.validate_all();
}

async fn includes_and_revincludes_follow_references(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let a = a_patient(&app, "I-1", "Included").await;
    let b = a_patient(&app, "I-2", "Alsoincluded").await;
    let mut imm = Vec::new();
    for (p, v) in [(&a, "207"), (&a, "208"), (&b, "140")] {
        let r = fhir
            .post("/Immunization", &immunization(p, v, "2024-01-01"), &[])
            .await;
        assert_eq!(r.status, 201);
        imm.push(format!("Immunization/{}", r.body["id"].as_str().unwrap()));
    }
    let prov = fhir
        .post(
            "/Provenance",
            &json!({
                "resourceType": "Provenance",
                "target": [{"reference": imm[0]}],
                "recorded": "2024-01-01T10:00:00Z",
                "agent": [{"who": {"display": "Dr Who"}}]
            }),
            &[],
        )
        .await;
    assert_eq!(prov.status, 201, "{}", prov.body);
    let prov = format!("Provenance/{}", prov.body["id"].as_str().unwrap());
    let (pa, pb) = (format!("Patient/{a}"), format!("Patient/{b}"));
    let has = |got: &[(String, String)], mode: &str, r: &str| {
        got.iter().any(|(m, x)| m == mode && x == r)
    };

    // _include: each referenced patient once, as an include.
    let r = fhir
        .get("/Immunization?_include=Immunization:patient")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = entries(&r.body);
    assert_eq!(got.iter().filter(|(m, _)| m == "match").count(), 3);
    assert!(
        has(&got, "include", &pa) && has(&got, "include", &pb),
        "{got:?}"
    );
    assert_eq!(got.iter().filter(|(m, _)| m == "include").count(), 2);
    // With a target type that does not match, nothing is included.
    let r = fhir
        .get("/Immunization?_include=Immunization:patient:Group")
        .await;
    assert!(entries(&r.body).iter().all(|(m, _)| m == "match"));

    // _revinclude from Patient: the patient's immunizations come along.
    let r = fhir
        .get(&format!(
            "/Patient?_id={a}&_revinclude=Immunization:patient"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = entries(&r.body);
    assert!(has(&got, "match", &pa));
    assert!(has(&got, "include", &imm[0]) && has(&got, "include", &imm[1]));
    assert!(!has(&got, "include", &imm[2]), "not patient a's: {got:?}");

    // _revinclude of Provenance, and :iterate from what was included.
    let r = fhir
        .get(&format!(
            "/Immunization?patient={pa}&_revinclude=Provenance:target"
        ))
        .await;
    let got = entries(&r.body);
    assert!(has(&got, "include", &prov), "{got:?}");
    let r = fhir
        .get("/Provenance?_include=Provenance:target&_include:iterate=Immunization:patient")
        .await;
    let got = entries(&r.body);
    assert!(has(&got, "match", &prov));
    assert!(has(&got, "include", &imm[0]), "{got:?}");
    assert!(
        has(&got, "include", &pa),
        "iterated to the patient: {got:?}"
    );
    assert!(!has(&got, "include", &pb));

    // Reverse chains: the patients an immunization with code 207 points at, the
    // immunizations a provenance targets.
    let r = fhir
        .get("/Patient?_has:Immunization:patient:vaccine-code=207")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(entries(&r.body), [("match".to_owned(), pa.clone())]);
    let r = fhir
        .get("/Patient?_has:Immunization:patient:vaccine-code=999")
        .await;
    assert!(entries(&r.body).is_empty(), "{}", r.body);
    let r = fhir
        .get("/Immunization?_has:Provenance:target:recorded=2024-01-01")
        .await;
    assert_eq!(entries(&r.body), [("match".to_owned(), imm[0].clone())]);
    let r = fhir
        .get("/Immunization?_has:Provenance:target:recorded=2024-01-01&_include=Immunization:patient")
        .await;
    assert!(has(&entries(&r.body), "include", &pa));
    let r = fhir
        .get("/Patient?_has:Immunization:status:status=completed")
        .await;
    assert_eq!(r.outcome(400).0, "invalid");

    // The same over the Observation aggregate.
    let o = fhir
        .post(
            "/Observation",
            &json!({
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": pa},
                "effectiveDateTime": "2024-05-01T10:00:00Z",
                "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
            }),
            &[],
        )
        .await;
    assert_eq!(o.status, 201, "{}", o.body);
    let obs = format!("Observation/{}", o.body["id"].as_str().unwrap());
    let r = fhir
        .get("/Observation?_include=Observation:subject&_total=accurate&_sort=-date")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 1);
    let got = entries(&r.body);
    assert!(
        has(&got, "match", &obs) && has(&got, "include", &pa),
        "{got:?}"
    );
    let r = fhir
        .get(&format!("/Patient?_id={a}&_revinclude=Observation:subject"))
        .await;
    assert!(has(&entries(&r.body), "include", &obs), "{}", r.body);
    // _has from the aggregate: the patients an Observation of that code is about.
    let has_patients = |q: &str| {
        let fhir = &fhir;
        let q = q.to_owned();
        async move {
            let r = fhir.get(&q).await;
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            crate::fhir::ids(&r.body)
                .into_iter()
                .map(|id| format!("Patient/{id}"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        has_patients("/Patient?_has:Observation:subject:code=8867-4").await,
        vec![pa.clone()]
    );
    assert_eq!(
        has_patients("/Patient?_has:Observation:subject:code=8310-5").await,
        Vec::<String>::new()
    );
    // The CapabilityStatement offers the aggregate's reverse includes.
    let cap = fhir.get("/metadata").await;
    let patient = cap.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert!(
        patient["searchRevInclude"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "Observation:subject"),
        "{patient}"
    );
    fhir.validate_all();
}

/// `(method, Type/id, version)` of every entry of a history Bundle.
fn versions(b: &Value) -> Vec<(String, String, String)> {
    assert_eq!(b["type"], "history", "{b}");
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let url = e["fullUrl"].as_str().unwrap();
            let tail: Vec<&str> = url.rsplit('/').take(2).collect();
            let etag = e["response"]["etag"].as_str().unwrap();
            (
                e["request"]["method"].as_str().unwrap().to_owned(),
                format!("{}/{}", tail[1], tail[0]),
                etag.trim_start_matches("W/").trim_matches('"').to_owned(),
            )
        })
        .collect()
}

async fn type_and_system_history_list_every_version_newest_first(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let a = a_patient(&app, "H-1", "Historic").await;
    let first = fhir
        .post("/Immunization", &immunization(&a, "207", "2024-01-01"), &[])
        .await;
    let i1 = first.body["id"].as_str().unwrap().to_owned();
    let second = fhir
        .post("/Immunization", &immunization(&a, "208", "2024-02-01"), &[])
        .await;
    let i2 = second.body["id"].as_str().unwrap().to_owned();
    let mut changed = immunization(&a, "207", "2024-01-02");
    changed["id"] = json!(i1);
    let r = fhir
        .put(&format!("/Immunization/{i1}"), &changed, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let since = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = app
        .client
        .delete(app.url(&format!("/fhir/R4/Immunization/{i2}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let goal = fhir
        .post(
            "/Goal",
            &json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": format!("Patient/{a}")}}),
            &[],
        )
        .await;
    let g = goal.body["id"].as_str().unwrap().to_owned();

    let (imm1, imm2) = (format!("Immunization/{i1}"), format!("Immunization/{i2}"));
    let s = |m: &str, r: &str, v: &str| (m.to_owned(), r.to_owned(), v.to_owned());
    // Type history: the type's versions only, newest first, the deletion included.
    let h = fhir.get("/Immunization/_history").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(
        versions(&h.body),
        [
            s("DELETE", &imm2, "2"),
            s("PUT", &imm1, "2"),
            s("POST", &imm2, "1"),
            s("POST", &imm1, "1"),
        ]
    );
    // Paged by the next link, the same versions.
    let mut page = fhir.get("/Immunization/_history?_count=3").await;
    let mut seen = Vec::new();
    loop {
        seen.extend(versions(&page.body));
        match next_link(&page.body) {
            Some(n) => page = fhir.get(&n).await,
            None => break,
        }
    }
    assert_eq!(seen, versions(&h.body));
    // _since: only what was recorded at or after it.
    let recent = fhir
        .get(&format!(
            "/Immunization/_history?_since={}",
            since
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        ))
        .await;
    assert_eq!(versions(&recent.body), [s("DELETE", &imm2, "2")]);
    // The Observation aggregate's history, and the system's: every type, the patient too.
    let o = fhir
        .post(
            "/Observation",
            &json!({
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{a}")},
                "effectiveDateTime": "2024-05-01T10:00:00Z",
                "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
            }),
            &[],
        )
        .await;
    assert_eq!(o.status, 201, "{}", o.body);
    let obs = format!("Observation/{}", o.body["id"].as_str().unwrap());
    let h = fhir.get("/Observation/_history").await;
    assert_eq!(versions(&h.body), [s("POST", &obs, "1")]);
    let all = fhir.get("/_history").await;
    let got = versions(&all.body);
    assert_eq!(got[0], s("POST", &obs, "1"));
    assert_eq!(got[1], s("POST", &format!("Goal/{g}"), "1"));
    assert!(
        got.contains(&s("POST", &format!("Patient/{a}"), "1")),
        "{got:?}"
    );
    assert_eq!(got.len(), 7);
    let patients = fhir.get("/Patient/_history").await;
    assert_eq!(
        versions(&patients.body),
        [s("POST", &format!("Patient/{a}"), "1")]
    );
    // Bad parameters.
    let r = fhir.get("/Immunization/_history?_since=yesterday").await;
    assert_eq!(r.outcome(400).0, "invalid");
    let r = fhir.get("/Immunization/_history?_at=2024").await;
    assert_eq!(r.outcome(400).0, "not-supported");
    let r = fhir.get("/NotAType/_history").await;
    assert_eq!(r.status, 404);
    fhir.validate_all();
}

async fn conditional_updates_and_deletes_act_on_the_one_match(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let a = a_patient(&app, "C-1", "Conditional").await;
    let lot = |v: &str| format!("/Immunization?lot-number=LOT-{v}");
    // No match and no id: created under a new id.
    let r = fhir
        .put(&lot("207"), &immunization(&a, "207", "2024-01-01"), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // One match: that one is replaced (a body without id is fine).
    let r = fhir
        .put(&lot("207"), &immunization(&a, "207", "2024-03-03"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["meta"]["versionId"], "2");
    assert_eq!(r.body["occurrenceDateTime"], "2024-03-03");
    // A body naming another id is refused; a stale If-Match too.
    let mut other = immunization(&a, "207", "2024-03-04");
    other["id"] = json!("someone-else");
    let r = fhir.put(&lot("207"), &other, &[]).await;
    assert_eq!(r.outcome(400).0, "invalid");
    let r = fhir
        .put(
            &lot("207"),
            &immunization(&a, "207", "2024-03-05"),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
    // No match, with an id: created under it.
    let mut mine = immunization(&a, "208", "2024-01-01");
    mine["id"] = json!("imm-208");
    let r = fhir.put(&lot("208"), &mine, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], "imm-208");
    // Two matches: 412, nothing changed.
    let r = fhir
        .put(
            &format!("/Immunization?patient=Patient/{a}"),
            &immunization(&a, "1", "2024-01-01"),
            &[],
        )
        .await;
    assert_eq!(r.status, 412, "{}", r.body);
    let r = fhir
        .put("/Immunization", &immunization(&a, "1", "2024-01-01"), &[])
        .await;
    assert_eq!(r.outcome(400).0, "invalid");

    let delete = |q: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&format!("/fhir/R4{q}")))
                .bearer_auth(&app.token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        delete(format!("/Immunization?patient=Patient/{a}")).await,
        412
    );
    assert_eq!(delete(lot("207")).await, 204);
    assert_eq!(fhir.get(&format!("/Immunization/{id}")).await.status, 410);
    assert_eq!(delete(lot("207")).await, 204, "nothing left to match");
    assert_eq!(fhir.get("/Immunization/imm-208").await.status, 200);
    fhir.validate_all();
}

async fn bundle_answers_follow_prefer_return(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let a = a_patient(&app, "P-1", "Preferring").await;
    let bundle = |kind: &str, v: &str| {
        json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"resource": immunization(&a, v, "2024-01-01"), "request": {"method": "POST", "url": "Immunization"}}
        ]})
    };
    for kind in ["transaction", "batch"] {
        // By default (and with return=representation) each entry carries what was stored.
        for prefer in [None, Some("return=representation")] {
            let h: Vec<(&str, &str)> = prefer.map(|p| ("prefer", p)).into_iter().collect();
            let r = fhir.post("", &bundle(kind, "207"), &h).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let e = &r.body["entry"][0];
            assert_eq!(
                e["response"]["status"].as_str().unwrap()[..3],
                *"201",
                "{e}"
            );
            assert_eq!(
                e["resource"]["resourceType"], "Immunization",
                "{kind} {prefer:?}: {e}"
            );
            assert_eq!(e["resource"]["meta"]["versionId"], "1");
        }
        let r = fhir
            .post("", &bundle(kind, "208"), &[("prefer", "return=minimal")])
            .await;
        let e = &r.body["entry"][0];
        assert!(e.get("resource").is_none(), "{kind}: {e}");
        assert!(
            e["response"]["location"]
                .as_str()
                .unwrap()
                .contains("Immunization/")
        );
        let r = fhir
            .post(
                "",
                &bundle(kind, "209"),
                &[("prefer", "return=OperationOutcome")],
            )
            .await;
        let e = &r.body["entry"][0];
        assert!(e.get("resource").is_none(), "{kind}: {e}");
        assert_eq!(
            e["response"]["outcome"]["resourceType"], "OperationOutcome",
            "{kind}: {e}"
        );
    }
    fhir.validate_all();
}

async fn audit_events_are_the_log_read_only(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let a = a_patient(&app, "A-1", "Audited").await;
    let imm = fhir
        .post("/Immunization", &immunization(&a, "207", "2024-01-01"), &[])
        .await;
    let imm_id = imm.body["id"].as_str().unwrap().to_owned();
    let r = app
        .client
        .delete(app.url(&format!("/fhir/R4/Immunization/{imm_id}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let of = |b: &Value| -> Vec<(String, String)> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = &e["resource"];
                assert_eq!(r["resourceType"], "AuditEvent");
                (
                    r["action"].as_str().unwrap().to_owned(),
                    r["subtype"][0]["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // One record's events, oldest first.
    let r = fhir
        .get(&format!("/AuditEvent?entity=Immunization/{imm_id}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        of(&r.body),
        [
            ("C".to_owned(), "fhir.resource.created".to_owned()),
            ("D".to_owned(), "fhir.resource.deleted".to_owned())
        ]
    );
    let first = &r.body["entry"][0]["resource"];
    assert_eq!(
        first["entity"][0]["what"]["reference"],
        format!("Immunization/{imm_id}")
    );
    // Read by id: the same event.
    let id = first["id"].as_str().unwrap();
    let one = fhir.get(&format!("/AuditEvent/{id}")).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body, *first);
    assert_eq!(
        fhir.get(&format!("/AuditEvent/{}", uuid::Uuid::now_v7()))
            .await
            .status,
        404
    );
    // The patient's record, by agent, by date, by event type; paged.
    let r = fhir.get(&format!("/AuditEvent?patient=Patient/{a}")).await;
    assert_eq!(
        of(&r.body)[0],
        ("C".to_owned(), "patient.registered".to_owned())
    );
    let user = first["agent"][0]["who"]["identifier"]["value"]
        .as_str()
        .unwrap();
    let r = fhir
        .get(&format!(
            "/AuditEvent?agent={user}&subtype=fhir.resource.created&date=ge{}",
            before.format("%Y-%m-%dT%H:%M:%SZ")
        ))
        .await;
    assert_eq!(
        of(&r.body),
        [("C".to_owned(), "fhir.resource.created".to_owned())]
    );
    let r = fhir.get("/AuditEvent?date=lt2000-01-01").await;
    assert!(of(&r.body).is_empty());
    let mut page = fhir.get("/AuditEvent?_count=2").await;
    let mut n = 0;
    loop {
        n += of(&page.body).len();
        match next_link(&page.body) {
            Some(next) => page = fhir.get(&next).await,
            None => break,
        }
    }
    let all = fhir.get("/AuditEvent?_count=200").await;
    assert_eq!(n, of(&all.body).len());
    assert!(n >= 3);
    // Read-only.
    let w = fhir.post("/AuditEvent", &first.clone(), &[]).await;
    assert_eq!(w.status, 405, "{}", w.body);
    fhir.validate_all();
}
