//! Crash safety: the real binary, concurrent writes, SIGKILL, restart. Every acknowledged
//! write must be there, nothing half-written, and `salus audit verify` must pass.

use crate::app::fresh_postgres;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_salus");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    token: Option<String>,
}

fn start(args: &[String]) -> Server {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("serve")
        .env("SALUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn salus");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut token = None;
    // The first start prints the token banner, then (always) the "listening" line.
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("Salus is listening") {
            break;
        }
        if line.starts_with("First-login token") {
            let _blank = lines.next();
            token = lines.next().and_then(|l| l.ok());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server { child, token }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

async fn kill_during_writes_loses_nothing(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut args = vec![
        "--data-dir".to_string(),
        dir.path().to_string_lossy().into_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--log-format".into(),
        "text".into(),
        "--seal-interval-secs".into(),
        "1".into(),
    ];
    let db = if backend == "postgres" {
        Some(fresh_postgres().await)
    } else {
        None
    };
    if let Some(d) = &db {
        args.push("--database-url".into());
        args.push(d.url.clone());
    }
    let base = format!("http://127.0.0.1:{port}");
    salus_api::jwks::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut server = start(&args);
    let token = server.token.clone().expect("first start prints a token");
    wait_ready(&client, &base).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, base, token, acked, stop) = (
            client.clone(),
            base.clone(),
            token.clone(),
            acked.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let body = crate::app::patient(&format!("K-{w}-{i}"), "Crash", "Test");
                match client
                    .post(format!("{base}/api/v1/patients"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        if let Ok(v) = r.json::<Value>().await
                            && let Some(id) = v["id"].as_str()
                        {
                            acked.lock().unwrap().push(id.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    // Let writes (and at least one seal) happen, then kill without warning.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} writes were acknowledged before the kill",
        acked.len()
    );

    // Restart on the same data; every acknowledged patient is there, whole.
    let mut server = start(&args);
    assert!(server.token.is_none(), "a restart does not bootstrap again");
    wait_ready(&client, &base).await;
    for id in &acked {
        let r = client
            .get(format!("{base}/api/v1/patients/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "acknowledged patient {id} is missing after the crash"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["version"], 1);
        let h: Value = client
            .get(format!("{base}/api/v1/patients/{id}/history"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            h["items"].as_array().unwrap().len(),
            1,
            "projection and log agree for {id}"
        );
    }
    // Let the restarted server seal what it inherited, stop it cleanly, then audit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status();
    let _ = server.child.wait();
    let out = Command::new(BIN)
        .args(&args)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_no_acknowledged_write_sqlite() {
    kill_during_writes_loses_nothing("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_no_acknowledged_write_postgres() {
    kill_during_writes_loses_nothing("postgres").await;
}
