//! FHIR Practitioner, Organization and Location, served by the staff Clinician, Department
//! and Location aggregates, over real HTTP on both backends: a write through FHIR is read
//! through `/api/v1` at the same version and the other way round; an update is one
//! revision; a delete deactivates; search on the types' R4 parameters; a transaction
//! creates a department with a location; errors name the element; every resource
//! answered is validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, api_get, content, ids};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    practitioners_map_both_ways_with_the_same_versions,
    organizations_and_locations_map_both_ways_with_the_same_versions,
    staff_resources_are_found_by_their_r4_parameters,
    a_transaction_creates_a_department_with_its_location,
    staff_errors_name_the_element_and_the_types_are_listed,
);

const CREDENTIAL: &str = "urn:salus:credential";
const CODE: &str = "urn:salus:department-code";
const KIND: &str = "urn:salus:location-kind";
const SPECIALTY: &str = "urn:salus:fhir:extension:specialty";
const ORG_UNIT: &str = "urn:salus:fhir:extension:org-unit";
const PHYSICAL: &str = "http://terminology.hl7.org/CodeSystem/location-physical-type";

fn house(credential: &str) -> Value {
    json!({
        "resourceType": "Practitioner",
        "identifier": [
            {"system": CREDENTIAL, "value": credential, "use": "official"},
            {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
        ],
        "active": true,
        "name": [{"use": "official", "family": "House", "given": ["Gregory"], "prefix": ["Dr"]}],
        "extension": [
            {"url": SPECIALTY, "valueString": "Diagnostics"},
            {"url": ORG_UNIT, "valueString": "Internal medicine"}
        ],
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "work"}],
        "address": [{"city": "Princeton", "state": "NJ"}],
        "gender": "male",
        "birthDate": "1959-06-11",
        "qualification": [{"code": {"text": "MD"}}],
    })
}

fn organization(code: &str, name: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "identifier": [{"system": CODE, "value": code}],
        "active": true,
        "name": name,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "dept"}]}],
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000"}],
    })
}

fn ward(org: &str) -> Value {
    json!({
        "resourceType": "Location",
        "status": "active",
        "name": "Ward 7",
        "alias": ["Seven"],
        "mode": "instance",
        "physicalType": {"coding": [{"system": PHYSICAL, "code": "wa", "display": "Ward"}]},
        "managingOrganization": {"reference": format!("Organization/{org}"), "display": "Cardiology"},
        "position": {"longitude": -0.1, "latitude": 51.5},
        "address": {"city": "London"},
    })
}

async fn api_action(app: &TestApp, path: &str, version: &str) -> u16 {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.token)
        .header("if-match", format!("\"{version}\""))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

fn id_of(r: &crate::fhir::Answer) -> String {
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn practitioners_map_both_ways_with_the_same_versions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);

    // /api/v1 → FHIR.
    let r = app
        .post(
            "/api/v1/clinicians",
            &app.token,
            &json!({"family": "Quinn", "given": ["Michaela"], "credential": "GMC-1",
                    "specialty": "General practice", "org_unit": "Primary care"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = fhir.get(&format!("/Practitioner/{cid}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.header("etag"), "W/\"1\"");
    assert_eq!(f.body["meta"]["versionId"], "1");
    assert_eq!(
        content(&f.body),
        json!({
            "resourceType": "Practitioner",
            "identifier": [{"system": CREDENTIAL, "value": "GMC-1"}],
            "active": true,
            "name": [{"family": "Quinn", "given": ["Michaela"]}],
            "extension": [
                {"url": SPECIALTY, "valueString": "General practice"},
                {"url": ORG_UNIT, "valueString": "Primary care"}
            ],
        })
    );
    // A deactivation through the JSON API is version 2 through FHIR.
    assert_eq!(
        api_action(&app, &format!("/api/v1/clinicians/{cid}/deactivate"), "1").await,
        200
    );
    let f = fhir.get(&format!("/Practitioner/{cid}")).await;
    assert_eq!(f.body["meta"]["versionId"], "2");
    assert_eq!(f.body["active"], false);

    // A FHIR update: reactivated, a phone and a gender added, one version (3).
    let mut up = f.body.clone();
    up["active"] = json!(true);
    up["telecom"] = json!([{"system": "phone", "value": "+1 555 0199"}]);
    up["gender"] = json!("female");
    let r = fhir
        .put(
            &format!("/Practitioner/{cid}"),
            &up,
            &[("if-match", "W/\"2\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"3\"");
    assert_eq!(r.body["gender"], "female");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/clinicians/{cid}")).await;
    assert_eq!(etag, "\"3\"");
    assert_eq!(api["status"], "active");
    // The same content again is no new version; a stale If-Match is a 412.
    let same = fhir.put(&format!("/Practitioner/{cid}"), &up, &[]).await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.header("etag"), "W/\"3\"");
    fhir.put(
        &format!("/Practitioner/{cid}"),
        &up,
        &[("if-match", "W/\"1\"")],
    )
    .await
    .outcome(412);
    // A new specialty and name through FHIR reach the JSON API.
    let mut up2 = r.body.clone();
    up2.as_object_mut().unwrap().remove("meta");
    up2["extension"][0]["valueString"] = json!("Cardiology");
    up2["name"][0]["family"] = json!("Quinn-Sully");
    let r = fhir.put(&format!("/Practitioner/{cid}"), &up2, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/clinicians/{cid}")).await;
    assert_eq!(etag, "\"4\"");
    assert_eq!(api["specialty"], "Cardiology");
    assert_eq!(api["name"]["family"], "Quinn-Sully");

    // History: the same versions through both APIs.
    let h = fhir.get(&format!("/Practitioner/{cid}/_history")).await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["total"], 4);
    let (_, _, api_h) = api_get(&app, &format!("/api/v1/clinicians/{cid}/history")).await;
    assert_eq!(api_h["items"].as_array().unwrap().len(), 4, "{api_h}");
    let v2 = fhir.get(&format!("/Practitioner/{cid}/_history/2")).await;
    assert_eq!(v2.status, 200);
    assert_eq!(v2.body["active"], false);
    let th = fhir.get("/Practitioner/_history").await;
    assert_eq!(th.status, 200, "{}", th.body);
    assert_eq!(th.body["entry"].as_array().unwrap().len(), 4);

    // FHIR → /api/v1: everything sent is kept and read back.
    let sent = house("GMC-7001");
    let created = fhir.post("/Practitioner", &sent, &[]).await;
    let hid = id_of(&created);
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert_eq!(content(&created.body), sent, "read back as sent");
    let (status, etag, api) = api_get(&app, &format!("/api/v1/clinicians/{hid}")).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["credential"], "GMC-7001");
    assert_eq!(api["name"]["family"], "House");
    assert_eq!(api["specialty"], "Diagnostics");
    assert_eq!(api["org_unit"], "Internal medicine");
    assert_eq!(api["status"], "active");
    // The JSON API's search sees it too.
    let r = app.get("/api/v1/clinicians?name=hou", &app.token).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    // A delete deactivates: version 2, still readable, inactive through both APIs.
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Practitioner/{hid}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.body);
    let f = fhir.get(&format!("/Practitioner/{hid}")).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body["meta"]["versionId"], "2");
    assert_eq!(f.body["active"], false);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/clinicians/{hid}")).await;
    assert_eq!(
        (etag.as_str(), &api["status"]),
        ("\"2\"", &json!("inactive"))
    );
    // Deleting again changes nothing.
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Practitioner/{hid}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.body);
    let f = fhir.get(&format!("/Practitioner/{hid}")).await;
    assert_eq!(f.body["meta"]["versionId"], "2");
    fhir.validate_all();
}

async fn organizations_and_locations_map_both_ways_with_the_same_versions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);

    // /api/v1 → FHIR: a department is an Organization, a location a Location.
    let dep = app.create_department("ONC", "Oncology").await;
    let f = fhir.get(&format!("/Organization/{dep}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.header("etag"), "W/\"1\"");
    assert_eq!(
        content(&f.body),
        json!({"resourceType": "Organization", "identifier": [{"system": CODE, "value": "ONC"}],
               "active": true, "name": "Oncology"})
    );
    let r = app
        .post(
            "/api/v1/locations",
            &app.token,
            &json!({"department_id": dep, "name": "Theatre 2", "kind": "theatre"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let lid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = fhir.get(&format!("/Location/{lid}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(
        content(&f.body),
        json!({"resourceType": "Location", "status": "active", "name": "Theatre 2",
               "physicalType": {"coding": [{"system": KIND, "code": "theatre"}]},
               "managingOrganization": {"reference": format!("Organization/{dep}")}})
    );
    // A FHIR update of the location: inactive and with an address (version 2).
    let mut up = f.body.clone();
    up["status"] = json!("inactive");
    up["address"] = json!({"city": "Leeds"});
    let r = fhir
        .put(&format!("/Location/{lid}"), &up, &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"2\"");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/locations/{lid}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["active"], false);
    // Reactivated through the JSON API: version 3 through FHIR, the address kept.
    assert_eq!(
        api_action(&app, &format!("/api/v1/locations/{lid}/reactivate"), "2").await,
        200
    );
    let f = fhir.get(&format!("/Location/{lid}")).await;
    assert_eq!(f.body["meta"]["versionId"], "3");
    assert_eq!(f.body["status"], "active");
    assert_eq!(f.body["address"]["city"], "Leeds");
    let h = fhir.get(&format!("/Location/{lid}/_history")).await;
    assert_eq!(h.body["total"], 3);

    // FHIR → /api/v1: an Organization and a Location read back as sent.
    let sent = organization("card", "Cardiology");
    let created = fhir.post("/Organization", &sent, &[]).await;
    let org = id_of(&created);
    let mut upper = sent.clone();
    upper["identifier"][0]["value"] = json!("CARD");
    assert_eq!(content(&created.body), upper, "the code is upper case");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/departments/{org}")).await;
    assert_eq!(etag, "\"1\"");
    assert_eq!(
        (&api["code"], &api["name"]),
        (&json!("CARD"), &json!("Cardiology"))
    );
    let sent = ward(&org);
    let created = fhir.post("/Location", &sent, &[]).await;
    let wid = id_of(&created);
    assert_eq!(content(&created.body), sent, "read back as sent");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/locations/{wid}")).await;
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["department_id"], org.as_str());
    assert_eq!(api["kind"], "ward");
    assert_eq!(api["name"], "Ward 7");
    // A rename of the Organization through FHIR reaches the JSON API (version 2).
    let mut up = upper.clone();
    up["id"] = json!(org);
    up["name"] = json!("Cardiology and vascular");
    let r = fhir
        .put(
            &format!("/Organization/{org}"),
            &up,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/departments/{org}")).await;
    assert_eq!(
        (etag.as_str(), &api["name"]),
        ("\"2\"", &json!("Cardiology and vascular"))
    );
    // A delete deactivates the department; a location in it is then refused.
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Organization/{org}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.body);
    let (_, _, api) = api_get(&app, &format!("/api/v1/departments/{org}")).await;
    assert_eq!(api["active"], false);
    let (_, at) = fhir.post("/Location", &ward(&org), &[]).await.outcome(422);
    assert_eq!(at, "Location.managingOrganization");
    // The department of a location never changes.
    let mut moved = created.body.clone();
    moved.as_object_mut().unwrap().remove("meta");
    moved["managingOrganization"]["reference"] = json!(format!("Organization/{dep}"));
    let (_, at) = fhir
        .put(&format!("/Location/{wid}"), &moved, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Location.managingOrganization");
    fhir.validate_all();
}

async fn staff_resources_are_found_by_their_r4_parameters(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let p1 = id_of(&fhir.post("/Practitioner", &house("GMC-1"), &[]).await);
    let mut wilson = house("GMC-2");
    wilson["name"] = json!([{"family": "Wilson", "given": ["James"]}]);
    wilson["active"] = json!(false);
    wilson["address"] = json!([{"city": "Trenton"}]);
    wilson["gender"] = json!("male");
    let p2 = id_of(&fhir.post("/Practitioner", &wilson, &[]).await);
    let parent = id_of(
        &fhir
            .post("/Organization", &organization("HOSP", "Plainsboro"), &[])
            .await,
    );
    let mut card = organization("CARD", "Cardiology");
    card["partOf"] = json!({"reference": format!("Organization/{parent}")});
    let o2 = id_of(&fhir.post("/Organization", &card, &[]).await);
    let l1 = id_of(&fhir.post("/Location", &ward(&o2), &[]).await);
    let mut room = ward(&parent);
    room["name"] = json!("Room 101");
    room["status"] = json!("inactive");
    room["physicalType"] = json!({"coding": [{"system": KIND, "code": "room"}]});
    room["partOf"] = json!({"reference": format!("Location/{l1}")});
    room["address"] = json!({"city": "Manchester"});
    let l2 = id_of(&fhir.post("/Location", &room, &[]).await);

    let q = |path: String| {
        let fhir = &fhir;
        async move {
            let r = fhir.get(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            let mut v = ids(&r.body);
            v.sort();
            v
        }
    };
    let one = |s: &str| vec![s.to_owned()];
    assert_eq!(q("/Practitioner?name=house".into()).await, one(&p1));
    assert_eq!(q("/Practitioner?family=Wilson".into()).await, one(&p2));
    assert_eq!(q("/Practitioner?given=greg".into()).await, one(&p1));
    assert_eq!(
        q(format!("/Practitioner?identifier={CREDENTIAL}|GMC-2")).await,
        one(&p2)
    );
    assert_eq!(q("/Practitioner?active=false".into()).await, one(&p2));
    assert_eq!(
        q("/Practitioner?address-city=Princeton".into()).await,
        one(&p1)
    );
    assert_eq!(
        q("/Practitioner?phone=%2B1%20555%200100".into())
            .await
            .len(),
        2
    );
    assert_eq!(q(format!("/Practitioner?_id={p2}")).await, one(&p2));
    assert_eq!(
        q("/Practitioner?_lastUpdated=gt2020-01-01".into())
            .await
            .len(),
        2
    );
    assert_eq!(q("/Organization?name=cardio".into()).await, one(&o2));
    assert_eq!(
        q("/Organization?identifier=HOSP".into()).await,
        one(&parent)
    );
    assert_eq!(
        q(format!("/Organization?partof=Organization/{parent}")).await,
        one(&o2)
    );
    assert_eq!(q("/Organization?type=dept".into()).await.len(), 2);
    assert_eq!(q("/Organization?active=true".into()).await.len(), 2);
    assert_eq!(q("/Location?name=room".into()).await, one(&l2));
    assert_eq!(q("/Location?status=inactive".into()).await, one(&l2));
    assert_eq!(
        q(format!("/Location?organization=Organization/{o2}")).await,
        one(&l1)
    );
    assert_eq!(
        q(format!("/Location?organization={parent}")).await,
        one(&l2)
    );
    assert_eq!(q(format!("/Location?partof={l1}")).await, one(&l2));
    assert_eq!(q("/Location?address-city=London".into()).await, one(&l1));
    // Chains through the domain-backed types.
    assert_eq!(
        q("/Location?organization.name=Cardiology".into()).await,
        one(&l1)
    );
    assert_eq!(
        q("/Location?organization.identifier=HOSP".into()).await,
        one(&l2)
    );
    // A search by POST and a Bundle of the resources as they read.
    let r = app
        .client
        .post(app.url("/fhir/R4/Location/_search"))
        .bearer_auth(&app.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=ward")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(ids(&b), one(&l1));
    fhir.validate_all();
}

async fn a_transaction_creates_a_department_with_its_location(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let org = "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-00000000d001";
    let mut loc = ward("x");
    loc["managingOrganization"] = json!({"reference": org});
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-00000000d002", "resource": loc, "request": {"method": "POST", "url": "Location"}},
        {"fullUrl": org, "resource": organization("RAD", "Radiology"), "request": {"method": "POST", "url": "Organization"}},
        {"resource": house("GMC-9"), "request": {"method": "POST", "url": "Practitioner"}},
    ]});
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at = |i: usize| {
        r.body["entry"][i]["response"]["location"]
            .as_str()
            .unwrap()
            .split('/')
            .take(2)
            .collect::<Vec<_>>()
            .join("/")
    };
    let (l, o, p) = (at(0), at(1), at(2));
    let oid = o.strip_prefix("Organization/").unwrap().to_owned();
    let lid = l.strip_prefix("Location/").unwrap().to_owned();
    assert!(p.starts_with("Practitioner/"), "{p}");
    let (_, _, api) = api_get(&app, &format!("/api/v1/locations/{lid}")).await;
    assert_eq!(api["department_id"], oid.as_str());
    let (_, _, api) = api_get(&app, &format!("/api/v1/departments/{oid}")).await;
    assert_eq!(api["code"], "RAD");
    let f = fhir.get(&format!("/{l}")).await;
    let mut want = ward(&oid);
    want["managingOrganization"] = json!({"reference": o});
    assert_eq!(content(&f.body), want);
    fhir.validate_all();
}

async fn staff_errors_name_the_element_and_the_types_are_listed(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let dep = app.create_department("CARD", "Cardiology").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/Practitioner",
            {
                let mut r = house("GMC-1");
                r["extension"] = json!([{"url": SPECIALTY, "valueCode": "Diagnostics"}]);
                r
            },
            "Practitioner.extension('urn:salus:fhir:extension:specialty')",
        ),
        (
            "/Practitioner",
            {
                let mut r = house("GMC-1");
                r["name"][0]["family"] = json!("x".repeat(300));
                r
            },
            "Practitioner.name[0].family",
        ),
        (
            "/Organization",
            {
                let mut r = organization("CARD", "Cardiology");
                r["identifier"][0]["value"] = json!("no spaces please");
                r
            },
            "Organization.identifier",
        ),
        (
            "/Location",
            {
                let mut r = ward("0190c3a0-0000-7000-8000-000000000001");
                r["status"] = json!("suspended");
                r
            },
            "Location.status",
        ),
        (
            "/Location",
            ward("0190c3a0-0000-7000-8000-000000000001"),
            "Location.managingOrganization",
        ),
        (
            "/Location",
            {
                let mut r = ward(&dep);
                r["physicalType"] = json!({"coding": [{"system": KIND, "code": "garage"}]});
                r
            },
            "Location.physicalType",
        ),
    ];
    for (path, body, want) in cases {
        let r = fhir.post(path, &body, &[]).await;
        let (_, at) = r.outcome(422);
        assert_eq!(at, want, "{}", r.body);
    }
    // A structural error is a 422 too, never a 500.
    let r = fhir
        .post(
            "/Location",
            &json!({"resourceType": "Location", "name": 7}),
            &[],
        )
        .await;
    r.outcome(422);
    // A credential or a code that is taken: 409.
    id_of(&fhir.post("/Practitioner", &house("GMC-1"), &[]).await);
    let r = fhir.post("/Practitioner", &house("GMC-1"), &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    // The CapabilityStatement lists the three types with their R4 parameters.
    let m = fhir.get("/metadata").await;
    let resources = m.body["rest"][0]["resource"].as_array().unwrap();
    for (t, param) in [
        ("Practitioner", "identifier"),
        ("Organization", "partof"),
        ("Location", "organization"),
    ] {
        let r = resources
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("{t} is not listed"));
        assert!(
            r["searchParam"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == param),
            "{t}: {r}"
        );
        assert!(r["documentation"].as_str().unwrap().contains("urn:salus"));
        assert!(
            r["interaction"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["code"] == "delete")
        );
    }
    fhir.validate_all();
}
