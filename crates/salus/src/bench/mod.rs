//! `salus bench`: throughput and latency of the running system (see BENCHMARKS.md).
//!
//! For each backend the bench starts a fresh server in a child process (its own binary,
//! `salus serve`, on a free port with a fresh data directory and, for PostgreSQL, a fresh
//! database), so that the RSS it reads is the server's own. It then drives the HTTP API
//! with closed-loop clients, each on its own keep-alive HTTP/1.1 connection and all on one
//! thread of the bench (see [`client`]): patient creates
//! (`POST /api/v1/patients`, each must answer 201) and reads (`GET /api/v1/patients/{id}`
//! over the ids just created) at each client count for a fixed time, and prints a Markdown
//! table to standard output and the progress to standard error.
//!
//! With `--target URL --token T` it measures a server that is already running instead
//! (no RSS then, and the server's CPU is part of "other").

mod client;
pub mod fhir;

use crate::config::Settings;
use anyhow::Context;
use client::{Conn, Endpoint};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Default PostgreSQL server the bench creates its database in.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The database the bench (re)creates on that server; it is dropped and created afresh
/// at the start of every PostgreSQL run.
const BENCH_DATABASE: &str = "salus_bench";
/// Kernel clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// The targets of the issue.
const TARGET_CREATES_SQLITE: f64 = 20_000.0;
const TARGET_CREATES_POSTGRES: f64 = 15_000.0;
const TARGET_READS: f64 = 30_000.0;
const TARGET_READ_P99_MS: f64 = 5.0;
const TARGET_IDLE_RSS_MIB: f64 = 30.0;
/// The client count the throughput targets are stated at.
const TARGET_CLIENTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Measure patient creates and reads per second, their latency, and the server's RSS.
///
/// PostgreSQL: the server named by the global `--database-url` (or `SALUS_DATABASE_URL`)
/// when it is a postgres:// URL, else `SALUS_BENCH_DATABASE_URL`, else
/// postgres://postgres@127.0.0.1:5432/postgres; the bench (re)creates the database
/// `salus_bench` there. SQLite: a fresh data directory under `--work-dir`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Backend to measure; repeat for several [default: sqlite and postgres]. SQLite runs in
    /// a fresh data directory; PostgreSQL in the database salus_bench, dropped and created
    /// afresh on the server of --database-url if it is a postgres:// URL, else of
    /// SALUS_BENCH_DATABASE_URL, else of postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, value_enum)]
    pub backend: Vec<Backend>,
    /// Seconds of load per phase and client count.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Numbers of concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Measure an already running server at this base URL (http://host:port) instead of
    /// starting one; needs --token. No RSS is reported then.
    #[arg(long)]
    pub target: Option<String>,
    /// Bearer token for --target (patients:write and patients:read).
    #[arg(long, env = "SALUS_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the fresh data directories go [default: the system temporary directory]
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data directories after the run.
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let mut levels: Vec<usize> = Vec::new();
    for &c in &args.clients {
        if c > 0 && !levels.contains(&c) {
            levels.push(c);
        }
    }
    anyhow::ensure!(
        !levels.is_empty(),
        "--clients needs at least one positive number"
    );
    let max_clients = levels.iter().copied().max().unwrap_or(1);
    let client = http_client(max_clients)?;
    let duration = Duration::from_secs(args.seconds);

    let mut outcomes: Vec<(String, anyhow::Result<BackendResult>)> = Vec::new();
    if let Some(target) = &args.target {
        let token = args
            .token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .context("--target needs --token (or SALUS_BENCH_TOKEN)")?;
        let base = target.trim_end_matches('/').to_owned();
        let res = bench_target(&client, &base, token.trim(), &levels, duration).await;
        let label = match &res {
            Ok(r) => r.backend.clone(),
            Err(_) => base.clone(),
        };
        outcomes.push((label, res));
    } else {
        let mut backends: Vec<Backend> = Vec::new();
        for &b in &args.backend {
            if !backends.contains(&b) {
                backends.push(b);
            }
        }
        if backends.is_empty() {
            backends = vec![Backend::Sqlite, Backend::Postgres];
        }
        let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        for backend in backends {
            let res = bench_backend(
                settings, &args, &client, backend, &work_dir, &levels, duration,
            )
            .await;
            if let Err(e) = &res {
                eprintln!("{}: the bench failed: {e:#}", backend.name());
            }
            outcomes.push((backend.name().to_owned(), res));
        }
    }

    let report = render_report(&args, &outcomes);
    print!("{report}");
    let failed_runs = outcomes.iter().filter(|(_, r)| r.is_err()).count();
    let failed_requests: u64 = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|r| r.phases.iter())
        .map(|p| p.errors)
        .sum();
    if failed_runs > 0 || failed_requests > 0 {
        eprintln!(
            "salus bench: {failed_runs} backend run(s) failed, {failed_requests} request(s) failed"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn http_client(max_clients: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_clients.max(1) * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Read,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Read => "read",
        }
    }
}

/// CPU used during a phase, in cores (1.0 = one core busy for the whole phase).
#[derive(Debug, Clone, Copy)]
struct CpuSplit {
    server: Option<f64>,
    generator: f64,
    other: f64,
}

#[derive(Debug)]
struct Phase {
    kind: Kind,
    clients: usize,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Sorted latencies of the successful requests, microseconds.
    latencies: Vec<u32>,
    cpu: Option<CpuSplit>,
    error_samples: Vec<String>,
}

impl Phase {
    fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    /// Nearest-rank percentile in milliseconds.
    fn pct_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|us| f64::from(us) / 1000.0)
    }
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied()
}

#[derive(Debug)]
struct BackendResult {
    backend: String,
    phases: Vec<Phase>,
    /// kB (KiB) as `/proc/<pid>/status` reports them.
    rss_idle_kb: Option<u64>,
    rss_loaded_kb: Option<u64>,
    rss_hwm_kb: Option<u64>,
    notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Driving one backend

async fn bench_backend(
    settings: &Settings,
    args: &BenchArgs,
    client: &reqwest::Client,
    backend: Backend,
    work_dir: &Path,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<BackendResult> {
    let dir = work_dir.join(format!("salus-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let result = async {
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let admin = admin_url(settings);
                eprintln!(
                    "postgres: creating database {BENCH_DATABASE} on {}",
                    redact(&admin)
                );
                let url = salus_store::postgres::create_database(&admin, BENCH_DATABASE)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| {
                        format!(
                            "cannot create the database {BENCH_DATABASE} on {}",
                            redact(&admin)
                        )
                    })?;
                Some(url)
            }
        };
        let mut server = ServerProcess::spawn(&dir, database_url.as_deref()).await?;
        let run = async {
            wait_ready(client, &server.base, &mut server.child).await?;
            // Let start-up work (first seal, allocator warm-up) settle before "idle".
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let rss_idle_kb = proc_status_kb(server.pid, "VmRSS:");
            eprintln!(
                "{}: server pid {} on {} is ready, idle RSS {}",
                backend.name(),
                server.pid,
                server.base,
                fmt_mib(rss_idle_kb)
            );
            let mut result = drive(
                client,
                backend.name(),
                &server.base,
                &server.token,
                Some(server.pid),
                levels,
                duration,
            )
            .await?;
            result.rss_idle_kb = rss_idle_kb;
            result.rss_hwm_kb = proc_status_kb(server.pid, "VmHWM:");
            anyhow::Ok(result)
        }
        .await;
        let stopped = server.stop().await;
        let mut result = run?;
        match stopped {
            Ok(note) => result.notes.extend(note),
            Err(e) => result.notes.push(format!("stopping the server: {e:#}")),
        }
        anyhow::Ok(result)
    }
    .await;
    if args.keep {
        eprintln!(
            "{}: data directory kept at {}",
            backend.name(),
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The PostgreSQL server to create the bench database on.
fn admin_url(settings: &Settings) -> String {
    if let Some(url) = &settings.database_url
        && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return url.clone();
    }
    match std::env::var("SALUS_BENCH_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => DEFAULT_ADMIN_URL.to_owned(),
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn bench_target(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<BackendResult> {
    let resp = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}/readyz"))?;
    anyhow::ensure!(
        resp.status().as_u16() == 200,
        "{base}/readyz answered {}",
        resp.status()
    );
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let backend = body
        .get("backend")
        .and_then(|b| b.as_str())
        .unwrap_or("target")
        .to_owned();
    eprintln!("{backend}: measuring the running server at {base}");
    drive(client, &backend, base, token, None, levels, duration).await
}

/// All phases against one server: creates at each client count, then reads.
async fn drive(
    client: &reqwest::Client,
    backend: &str,
    base: &str,
    token: &str,
    server_pid: Option<u32>,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<BackendResult> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token is not a valid header value")?;
    auth.set_sensitive(true);
    let ctx = Arc::new(LoadCtx {
        client: client.clone(),
        create_url: reqwest::Url::parse(&format!("{base}/api/v1/patients"))
            .with_context(|| format!("'{base}' is not a base URL"))?,
        endpoint: Endpoint::new(base, auth.clone()).await?,
        read_base: "/api/v1/patients/".to_owned(),
        auth,
        tag: uuid::Uuid::now_v7().simple().to_string(),
        ids: Arc::new(Vec::new()),
    });
    // One create first, so that a wrong token or URL fails at once instead of filling
    // every phase with errors.
    let first = preflight(&ctx).await?;
    let mut phases = Vec::new();
    let mut ids: Vec<String> = vec![first];
    let mut rss_loaded_kb: Option<u64> = None;
    for &clients in levels {
        let (phase, new_ids, rss) = run_phase(
            &ctx,
            backend,
            Kind::Create,
            clients,
            duration,
            server_pid,
            phases.len(),
        )
        .await;
        ids.extend(new_ids);
        rss_loaded_kb = rss_loaded_kb.max(rss);
        phases.push(phase);
    }
    let mut notes = Vec::new();
    if ids.is_empty() {
        notes.push("no patient was created, so reads were not measured".to_owned());
    } else {
        let ctx = Arc::new(LoadCtx {
            ids: Arc::new(ids),
            client: ctx.client.clone(),
            create_url: ctx.create_url.clone(),
            endpoint: ctx.endpoint.clone(),
            read_base: ctx.read_base.clone(),
            auth: ctx.auth.clone(),
            tag: ctx.tag.clone(),
        });
        for &clients in levels {
            let (phase, _, rss) = run_phase(
                &ctx,
                backend,
                Kind::Read,
                clients,
                duration,
                server_pid,
                phases.len(),
            )
            .await;
            rss_loaded_kb = rss_loaded_kb.max(rss);
            phases.push(phase);
        }
    }
    Ok(BackendResult {
        backend: backend.to_owned(),
        phases,
        rss_idle_kb: None,
        rss_loaded_kb,
        rss_hwm_kb: None,
        notes,
    })
}

async fn preflight(ctx: &LoadCtx) -> anyhow::Result<String> {
    let body = format!(
        r#"{{"identifiers":[{{"system":"urn:bench","value":"{}-preflight"}}],"name":[{{"family":"Doe","given":["Jane"]}}],"birth_date":"1980-01-01","gender":"female"}}"#,
        ctx.tag
    );
    let resp = ctx
        .client
        .post(ctx.create_url.clone())
        .header(AUTHORIZATION, ctx.auth.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {}", ctx.create_url))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    anyhow::ensure!(
        status == 201,
        "the first patient create answered {status}, not 201: {}",
        snippet(&bytes)
    );
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .context("the created patient has no id")
}

struct LoadCtx {
    client: reqwest::Client,
    create_url: reqwest::Url,
    /// Where the load connections go.
    endpoint: Endpoint,
    read_base: String,
    auth: HeaderValue,
    /// Makes identifiers unique across runs against the same store.
    tag: String,
    /// Patients to read.
    ids: Arc<Vec<String>>,
}

struct WorkerOut {
    latencies: Vec<u32>,
    errors: u64,
    ids: Vec<String>,
    error_samples: Vec<String>,
}

impl WorkerOut {
    fn new() -> Self {
        Self {
            latencies: Vec::with_capacity(4096),
            errors: 0,
            ids: Vec::new(),
            error_samples: Vec::new(),
        }
    }

    /// A phase that could not run at all: one error.
    fn failed(why: String) -> Self {
        let mut out = Self::new();
        out.errors = 1;
        out.error_samples.push(why);
        out
    }

    fn fail(&mut self, failed: &AtomicU64, msg: impl FnOnce() -> String) {
        self.errors += 1;
        failed.fetch_add(1, Ordering::Relaxed);
        sample(&mut self.error_samples, msg);
    }
}

const MAX_ERROR_SAMPLES: usize = 5;

async fn run_phase(
    ctx: &Arc<LoadCtx>,
    backend: &str,
    kind: Kind,
    clients: usize,
    duration: Duration,
    server_pid: Option<u32>,
    phase_no: usize,
) -> (Phase, Vec<String>, Option<u64>) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let label = format!("{backend} {} × {clients} clients", kind.name());
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
        pb.set_style(style);
    }
    pb.set_message(label.clone());
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let (ok, failed, pb, label) = (ok.clone(), failed.clone(), pb.clone(), label.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            let mut peak: Option<u64> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {
                        if let Some(pid) = server_pid {
                            peak = peak.max(proc_status_kb(pid, "VmRSS:"));
                        }
                        pb.set_message(format!(
                            "{label}: {:.0}/{}s, {} ok, {} errors",
                            started.elapsed().as_secs_f64().min(duration.as_secs_f64()),
                            duration.as_secs(),
                            ok.load(Ordering::Relaxed),
                            failed.load(Ordering::Relaxed),
                        ));
                        pb.tick();
                    }
                }
            }
            peak
        })
    };

    let cpu_before = CpuSnapshot::take(server_pid);
    let started = Instant::now();
    let deadline = started + duration;
    // Every client of the phase runs on one thread with a runtime of its own: the load
    // generator then takes at most one core, and no time goes to moving tasks between
    // threads.
    let load = {
        let (ctx, ok, failed) = (ctx.clone(), ok.clone(), failed.clone());
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            anyhow::Ok(rt.block_on(async move {
                let mut handles = Vec::with_capacity(clients);
                for c in 0..clients {
                    let ctx = ctx.clone();
                    let (ok, failed) = (ok.clone(), failed.clone());
                    let seed =
                        (phase_no as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64 + 1);
                    handles.push(tokio::spawn(async move {
                        match kind {
                            Kind::Create => {
                                create_worker(ctx, phase_no, c, deadline, ok, failed).await
                            }
                            Kind::Read => read_worker(ctx, seed, deadline, ok, failed).await,
                        }
                    }));
                }
                let mut outs = Vec::with_capacity(clients);
                for h in handles {
                    outs.push(h.await);
                }
                outs
            }))
        })
    };
    let outs = match load.await {
        Ok(Ok(outs)) => outs,
        Ok(Err(e)) => vec![Ok(WorkerOut::failed(format!(
            "cannot start the load thread: {e}"
        )))],
        Err(e) => vec![Ok(WorkerOut::failed(format!(
            "the load thread failed: {e}"
        )))],
    };
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut ids = Vec::new();
    let mut error_samples = Vec::new();
    for h in outs {
        match h {
            Ok(out) => {
                latencies.extend(out.latencies);
                errors += out.errors;
                ids.extend(out.ids);
                for s in out.error_samples {
                    if error_samples.len() < MAX_ERROR_SAMPLES {
                        error_samples.push(s);
                    }
                }
            }
            Err(e) => {
                errors += 1;
                if error_samples.len() < MAX_ERROR_SAMPLES {
                    error_samples.push(format!("a client task failed: {e}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = CpuSnapshot::take(server_pid);
    let _ = stop_tx.send(());
    let peak = sampler.await.unwrap_or(None);
    pb.finish_and_clear();
    latencies.sort_unstable();
    let phase = Phase {
        kind,
        clients,
        ok: latencies.len() as u64,
        errors,
        elapsed,
        latencies,
        cpu: CpuSnapshot::split(cpu_before, cpu_after, elapsed),
        error_samples,
    };
    eprintln!(
        "{label}: {:.0}/s, p50 {} ms, p95 {} ms, p99 {} ms, {} errors{}",
        phase.rate(),
        fmt_ms(phase.pct_ms(50.0)),
        fmt_ms(phase.pct_ms(95.0)),
        fmt_ms(phase.pct_ms(99.0)),
        phase.errors,
        match phase.cpu {
            Some(c) => format!(
                "; CPU cores: server {}, bench {:.2}, other {:.2}",
                c.server.map_or("-".to_owned(), |s| format!("{s:.2}")),
                c.generator,
                c.other
            ),
            None => String::new(),
        }
    );
    (phase, ids, peak)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn sample(samples: &mut Vec<String>, msg: impl FnOnce() -> String) {
    if samples.len() < MAX_ERROR_SAMPLES {
        samples.push(msg());
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

async fn create_worker(
    ctx: Arc<LoadCtx>,
    phase_no: usize,
    client_no: usize,
    deadline: Instant,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> WorkerOut {
    let mut out = WorkerOut::new();
    let mut conn = Conn::new(ctx.endpoint.clone());
    let path = ctx.create_url.path().to_owned();
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let body = format!(
            r#"{{"identifiers":[{{"system":"urn:bench","value":"{}-{phase_no}-{client_no}-{n}"}}],"name":[{{"family":"Doe","given":["Jane"]}}],"birth_date":"1980-01-01","gender":"female"}}"#,
            ctx.tag
        );
        let start = Instant::now();
        match conn.send(&path, Some(body)).await {
            Ok(a) if a.status == 201 => {
                out.latencies.push(micros(start.elapsed()));
                ok.fetch_add(1, Ordering::Relaxed);
                let id = a
                    .location
                    .as_deref()
                    .and_then(|s| s.rsplit('/').next())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .or_else(|| {
                        serde_json::from_slice::<serde_json::Value>(&a.body)
                            .ok()
                            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                    });
                if let Some(id) = id {
                    out.ids.push(id);
                }
            }
            Ok(a) => out.fail(&failed, || {
                format!("POST answered {}: {}", a.status, snippet(&a.body))
            }),
            Err(e) => out.fail(&failed, || format!("POST: {e:#}")),
        }
    }
    out
}

async fn read_worker(
    ctx: Arc<LoadCtx>,
    seed: u64,
    deadline: Instant,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> WorkerOut {
    let mut out = WorkerOut::new();
    let ids = ctx.ids.clone();
    if ids.is_empty() {
        return out;
    }
    let mut conn = Conn::new(ctx.endpoint.clone());
    // xorshift64*: cheap, and spreads the reads over all the ids created.
    let mut state = seed | 1;
    let mut path = String::with_capacity(ctx.read_base.len() + 40);
    while Instant::now() < deadline {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let idx = (r % ids.len() as u64) as usize;
        let Some(id) = ids.get(idx) else { continue };
        path.clear();
        path.push_str(&ctx.read_base);
        path.push_str(id);
        let start = Instant::now();
        match conn.send(&path, None).await {
            Ok(a) if a.status == 200 => {
                out.latencies.push(micros(start.elapsed()));
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(a) => out.fail(&failed, || {
                format!("GET answered {}: {}", a.status, snippet(&a.body))
            }),
            Err(e) => out.fail(&failed, || format!("GET: {e:#}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The server child process

struct ServerProcess {
    child: tokio::process::Child,
    pid: u32,
    base: String,
    token: String,
}

impl ServerProcess {
    async fn spawn(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn_with(data_dir, database_url, &[]).await
    }

    /// [`Self::spawn`] with more arguments for `salus serve` (`--body-limit`, …).
    async fn spawn_with(
        data_dir: &Path,
        database_url: Option<&str>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the salus executable")?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--log-format")
            .arg("text");
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra);
        // The child must see only the settings given here, not the caller's SALUS_*.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SALUS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("SALUS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let pid = child.id().context("the server process exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("the server's standard output is not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        let token = tokio::time::timeout(Duration::from_secs(120), async {
            let mut header_seen = false;
            while let Some(line) = lines.next_line().await? {
                let line = line.trim();
                if line.starts_with("First-login token") {
                    header_seen = true;
                } else if header_seen && !line.is_empty() {
                    return anyhow::Ok(Some(line.to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let token = match token {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                anyhow::bail!(
                    "the server printed no first-login token (exit: {})",
                    match status {
                        Ok(Ok(s)) => s.to_string(),
                        _ => "still running".to_owned(),
                    }
                );
            }
            Ok(Err(e)) => return Err(e.context("cannot read the server's output")),
            Err(_) => anyhow::bail!("the server printed no first-login token within 120 s"),
        };
        // Keep draining its standard output so that it can never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess {
            child,
            pid,
            base: format!("http://{listen}"),
            token,
        })
    }

    /// SIGTERM, then SIGKILL after 10 s. Returns a note when the exit was not clean.
    async fn stop(mut self) -> anyhow::Result<Option<String>> {
        let term = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !matches!(&term, Ok(s) if s.success()) {
            self.child.kill().await.context("cannot kill the server")?;
            return Ok(Some("the server could not be sent SIGTERM; killed".into()));
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(None),
            Ok(Ok(status)) => Ok(Some(format!("the server exited with {status}"))),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("waiting for the server")),
            Err(_) => {
                self.child.kill().await.context("cannot kill the server")?;
                Ok(Some(
                    "the server did not stop within 10 s of SIGTERM; killed".into(),
                ))
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
) -> anyhow::Result<()> {
    let url = format!("{base}/readyz");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the server exited before it was ready ({status})");
        }
        match client.get(&url).send().await {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) if Instant::now() >= until => {
                anyhow::bail!("{url} still answers {} after 60 s", r.status())
            }
            Err(e) if Instant::now() >= until => {
                anyhow::bail!("{url} does not answer after 60 s: {e}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of the whole machine (all CPUs), from `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let busy = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum();
    Some(busy)
}

#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    server: Option<u64>,
    generator: Option<u64>,
    machine: Option<u64>,
}

impl CpuSnapshot {
    fn take(server_pid: Option<u32>) -> Self {
        CpuSnapshot {
            server: server_pid.and_then(|p| proc_cpu_ticks(&p.to_string())),
            generator: proc_cpu_ticks("self"),
            machine: machine_busy_ticks(),
        }
    }

    fn split(before: Self, after: Self, elapsed: Duration) -> Option<CpuSplit> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let cores = |a: u64, b: u64| b.saturating_sub(a) as f64 / USER_HZ / secs;
        let generator = cores(before.generator?, after.generator?);
        let machine = cores(before.machine?, after.machine?);
        let server = match (before.server, after.server) {
            (Some(a), Some(b)) => Some(cores(a, b)),
            _ => None,
        };
        Some(CpuSplit {
            server,
            generator,
            other: (machine - generator - server.unwrap_or(0.0)).max(0.0),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Report

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms < 10.0 => format!("{ms:.2}"),
        Some(ms) => format!("{ms:.1}"),
        None => "-".into(),
    }
}

fn fmt_mib(kb: Option<u64>) -> String {
    kb.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn fmt_cores(v: Option<f64>) -> String {
    v.map_or("-".into(), |c| format!("{c:.2}"))
}

/// "met" or how far off, for a "higher is better" target.
fn verdict_min(measured: f64, target: f64) -> String {
    if measured >= target {
        format!("met (+{:.0}%)", (measured / target - 1.0) * 100.0)
    } else if measured <= 0.0 {
        "**missed** (nothing measured)".into()
    } else {
        format!(
            "**missed** by {} ({:.0}% below; needs {:.1}×)",
            fmt_rate(target - measured),
            (1.0 - measured / target) * 100.0,
            target / measured
        )
    }
}

/// "met" or how far off, for a "lower is better" target.
fn verdict_max(measured: f64, target: f64, unit: &str) -> String {
    if measured <= target {
        format!("met ({:.0}% under)", (1.0 - measured / target) * 100.0)
    } else {
        format!(
            "**missed** by {:.2} {unit} ({:.0}% over)",
            measured - target,
            (measured / target - 1.0) * 100.0
        )
    }
}

/// The phase a target is judged on: the one at 64 clients, else the largest count run.
fn judged(r: &BackendResult, kind: Kind) -> Option<&Phase> {
    let phases = r.phases.iter().filter(|p| p.kind == kind);
    phases
        .clone()
        .find(|p| p.clients == TARGET_CLIENTS)
        .or_else(|| phases.max_by_key(|p| p.clients))
}

fn render_report(args: &BenchArgs, outcomes: &[(String, anyhow::Result<BackendResult>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## salus bench: {} s per phase, clients {}\n",
        args.seconds,
        args.clients
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("/")
    );
    let _ = writeln!(
        s,
        "| backend | phase | clients | ops/s | p50 ms | p95 ms | p99 ms | errors | server CPU | bench CPU | other CPU |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                for p in &r.phases {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.backend,
                        p.kind.name(),
                        p.clients,
                        fmt_rate(p.rate()),
                        fmt_ms(p.pct_ms(50.0)),
                        fmt_ms(p.pct_ms(95.0)),
                        fmt_ms(p.pct_ms(99.0)),
                        p.errors,
                        fmt_cores(p.cpu.and_then(|c| c.server)),
                        fmt_cores(p.cpu.map(|c| c.generator)),
                        fmt_cores(p.cpu.map(|c| c.other)),
                    );
                }
            }
            Err(_) => {
                let _ = writeln!(
                    s,
                    "| {name} | (failed) | - | - | - | - | - | - | - | - | - |"
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nCPU columns are in cores (1.00 = one core busy for the whole phase): the server \
         process, this load generator, and everything else on the machine (PostgreSQL's \
         backends, other work)."
    );

    let measured_rss = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .any(|r| r.rss_idle_kb.is_some());
    if measured_rss {
        let _ = writeln!(s, "\n### Server memory (RSS)\n");
        let _ = writeln!(
            s,
            "| backend | idle (after start, before load) | loaded (peak sampled during load) | peak (VmHWM) |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for r in outcomes.iter().filter_map(|(_, o)| o.as_ref().ok()) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.backend,
                fmt_mib(r.rss_idle_kb),
                fmt_mib(r.rss_loaded_kb),
                fmt_mib(r.rss_hwm_kb)
            );
        }
    }

    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(s, "| target | backend | measured | verdict |");
    let _ = writeln!(s, "|---|---|---:|---|");
    for r in outcomes.iter().filter_map(|(_, o)| o.as_ref().ok()) {
        let creates_target = match r.backend.as_str() {
            "sqlite" => Some(TARGET_CREATES_SQLITE),
            "postgres" => Some(TARGET_CREATES_POSTGRES),
            _ => None,
        };
        if let (Some(target), Some(p)) = (creates_target, judged(r, Kind::Create)) {
            let _ = writeln!(
                s,
                "| ≥ {} creates/s at {TARGET_CLIENTS} clients | {} | {}/s ({} clients) | {} |",
                fmt_rate(target),
                r.backend,
                fmt_rate(p.rate()),
                p.clients,
                verdict_min(p.rate(), target)
            );
        }
        if let Some(p) = judged(r, Kind::Read) {
            let _ = writeln!(
                s,
                "| ≥ {} reads/s at {TARGET_CLIENTS} clients | {} | {}/s ({} clients) | {} |",
                fmt_rate(TARGET_READS),
                r.backend,
                fmt_rate(p.rate()),
                p.clients,
                verdict_min(p.rate(), TARGET_READS)
            );
            if let Some(p99) = p.pct_ms(99.0) {
                let _ = writeln!(
                    s,
                    "| read p99 ≤ {TARGET_READ_P99_MS} ms at {TARGET_CLIENTS} clients | {} | {} ms ({} clients) | {} |",
                    r.backend,
                    fmt_ms(Some(p99)),
                    p.clients,
                    verdict_max(p99, TARGET_READ_P99_MS, "ms")
                );
            }
        }
        if let Some(kb) = r.rss_idle_kb {
            let mib = kb as f64 / 1024.0;
            let _ = writeln!(
                s,
                "| idle RSS ≤ {TARGET_IDLE_RSS_MIB} MiB | {} | {mib:.1} MiB | {} |",
                r.backend,
                verdict_max(mib, TARGET_IDLE_RSS_MIB, "MiB")
            );
        }
    }

    let mut problems = String::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                for p in r.phases.iter().filter(|p| !p.error_samples.is_empty()) {
                    let _ = writeln!(
                        problems,
                        "- {} {} × {}: {} failed requests, e.g.:",
                        r.backend,
                        p.kind.name(),
                        p.clients,
                        p.errors
                    );
                    for e in &p.error_samples {
                        let _ = writeln!(problems, "  - {e}");
                    }
                }
                for n in &r.notes {
                    let _ = writeln!(problems, "- {}: {n}", r.backend);
                }
            }
            Err(e) => {
                let _ = writeln!(problems, "- {name}: the run failed: {e:#}");
            }
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(s, "\n### Problems\n\n{problems}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rates_have_thousands_separators() {
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(999.4), "999");
        assert_eq!(fmt_rate(1234.0), "1,234");
        assert_eq!(fmt_rate(20000.0), "20,000");
        assert_eq!(fmt_rate(1234567.0), "1,234,567");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
    }

    #[test]
    fn verdicts_say_by_how_much() {
        assert!(verdict_min(25_000.0, 20_000.0).starts_with("met"));
        let v = verdict_min(5_000.0, 20_000.0);
        assert!(v.contains("15,000") && v.contains("75% below"), "{v}");
        assert!(verdict_max(4.0, 5.0, "ms").starts_with("met"));
        assert!(verdict_max(10.0, 5.0, "ms").contains("100% over"));
    }
}
