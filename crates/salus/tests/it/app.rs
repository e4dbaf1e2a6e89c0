//! Spawning the server for a test (model: zero2prod's `spawn_app`).

use reqwest::{Client, Response};
use salus::config::Settings;
use salus::server::{self, Running};
use salus_kernel::TenantId;
use salus_store::postgres::ScratchDatabase;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("SALUS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database, dropped with the returned value.
pub async fn fresh_postgres() -> ScratchDatabase {
    let name = format!("salus_it_{}", Uuid::now_v7().simple());
    ScratchDatabase::create(&admin_url(), &name)
        .await
        .expect("PostgreSQL must be running for the tests (see README)")
}

pub async fn settings_for(
    backend: &str,
    dir: &std::path::Path,
) -> (Settings, Option<ScratchDatabase>) {
    let mut s = Settings::for_data_dir(dir);
    s.listen = "127.0.0.1:0".into();
    s.seal_interval_secs = 1;
    let mut db = None;
    if backend == "postgres" {
        let d = fresh_postgres().await;
        s.database_url = Some(d.url.clone());
        db = Some(d);
    }
    (s, db)
}

/// What a stopped app leaves: its data directory and database, kept until dropped.
pub struct Leftovers {
    pub _dir: tempfile::TempDir,
    pub _db: Option<ScratchDatabase>,
}

pub struct TestApp {
    pub base: String,
    pub token: String,
    pub tenant: TenantId,
    pub client: Client,
    pub running: Option<Running>,
    pub settings: Settings,
    _dir: tempfile::TempDir,
    _db: Option<ScratchDatabase>,
}

impl TestApp {
    pub async fn spawn(backend: &str) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut settings, db) = settings_for(backend, dir.path()).await;
        tweak(&mut settings);
        let (running, boot) = server::start(&settings).await.expect("server starts");
        let boot = boot.expect("a fresh store bootstraps an admin");
        TestApp {
            base: format!("http://{}", running.addr),
            token: boot.token,
            tenant: boot.tenant,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            running: Some(running),
            settings,
            _dir: dir,
            _db: db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token for a new user with these roles, in the app's tenant.
    pub async fn token_for(&self, username: &str, roles: &[&str]) -> String {
        let running = self.running.as_ref().expect("running");
        let id = server::create_user(
            &running.services,
            self.tenant,
            username,
            username,
            roles.iter().map(|r| r.to_string()).collect(),
        )
        .await
        .expect("create user");
        running
            .auth
            .issue(id, self.tenant, Duration::from_secs(600))
            .expect("issue")
    }

    /// A patient-context token (SMART `scope`, confined to `patient`) for a new viewer.
    pub async fn patient_token(&self, username: &str, scope: &str, patient: &str) -> String {
        let running = self.running.as_ref().expect("running");
        let id = server::create_user(
            &running.services,
            self.tenant,
            username,
            username,
            vec!["viewer".to_owned()],
        )
        .await
        .expect("create user");
        running
            .auth
            .issue_limited(
                id,
                self.tenant,
                Duration::from_secs(600),
                salus_api::auth::TokenLimits {
                    scope: Some(scope.into()),
                    patient: Some(uuid::Uuid::parse_str(patient).expect("patient id")),
                },
            )
            .expect("issue")
    }

    /// A new tenant with its admin; returns the admin's token.
    pub async fn other_tenant(&self, name: &str) -> String {
        let running = self.running.as_ref().expect("running");
        let (tenant, admin) = server::create_tenant_with_admin(&running.services, name, "admin")
            .await
            .expect("tenant");
        running
            .auth
            .issue(admin, tenant, Duration::from_secs(600))
            .expect("issue")
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn create_patient(&self, body: &Value) -> Value {
        let r = self.post("/api/v1/patients/", &self.token, body).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.json().await.expect("json")
    }

    /// A new department (`code`, `name`); returns its id.
    pub async fn create_department(&self, code: &str, name: &str) -> String {
        let r = self
            .post(
                "/api/v1/departments",
                &self.token,
                &json!({"code": code, "name": name}),
            )
            .await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let d: Value = r.json().await.expect("json");
        d["id"].as_str().expect("id").to_owned()
    }

    /// Deactivate a department created by [`TestApp::create_department`] (at version 1).
    pub async fn deactivate_department(&self, id: &str) {
        let r = self
            .client
            .post(self.url(&format!("/api/v1/departments/{id}/deactivate")))
            .bearer_auth(&self.token)
            .header("if-match", "\"1\"")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    /// Stop the server cleanly; the data directory is handed back (it is deleted when the
    /// returned value is dropped).
    pub async fn stop(mut self) -> Leftovers {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        Leftovers {
            _dir: self._dir,
            _db: self._db,
        }
    }
}

pub fn patient(mrn: &str, family: &str, given: &str) -> Value {
    json!({
        "identifiers": [{"system": "urn:mrn", "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "birth_date": "1980-04-23",
        "gender": "female",
        "phones": ["+44 20 7946 0958"]
    })
}

/// Assert a problem+json response and return its body.
pub async fn problem(r: Response, status: u16, kind: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = r.json().await.expect("problem json");
    assert_eq!(body["type"], format!("urn:salus:problem:{kind}"), "{body}");
    assert_eq!(body["status"], status);
    body
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name("sqlite").await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name("postgres").await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;
