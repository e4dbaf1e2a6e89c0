//! `salus bench-fhir`: the FHIR targets of BENCHMARKS.md ("FHIR import and search").
//!
//! For each backend, a fresh server in a child process (as `salus bench` starts it, with a
//! larger `--body-limit` so that a patient's whole record fits one request), then:
//!
//! 1. **import**: the synthetic population of [`salus_fhir::synth`], one `transaction`
//!    Bundle per patient as `salus synth` writes it, `POST /fhir/R4` by closed-loop clients
//!    at each `--import-clients` count (each count imports `--patients` patients of its
//!    own; the Bundles are made before the phase, so the load generator only sends them);
//! 2. **load**: Observations until the store holds `--observations` of them (counting the
//!    import's): the next patients of the same population, each as its Patient and its
//!    Observations (the `encounter` reference dropped, the Encounters not being sent),
//!    several patients to a transaction of about `--load-entries` entries, made on the fly
//!    by a thread of the bench and sent by `--load-clients` clients;
//! 3. **search**: closed-loop clients at each `--search-clients` count for `--seconds`:
//!    `Observation?code=http://loinc.org|<code>&_count=50` (a random code of those loaded),
//!    the same without the system, and `Observation?subject=Patient/<id>` (a random patient
//!    of the load).
//!
//! Every import or load answer must be 200 and every search 200. Prints a Markdown table
//! (stdout), the targets with how far each is missed, and a one-line summary.

use super::client::{Conn, Endpoint};
use super::{
    BENCH_DATABASE, Backend, CpuSnapshot, CpuSplit, MAX_ERROR_SAMPLES, ServerProcess, admin_url,
    fmt_cores, fmt_mib, fmt_ms, fmt_rate, http_client, micros, percentile, proc_status_kb, redact,
    sample, snippet, wait_ready,
};
use crate::config::Settings;
use anyhow::Context;
use reqwest::header::HeaderValue;
use salus_fhir::synth::{self, Config, codes::LOINC};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// The targets of the issue.
const TARGET_IMPORT_SQLITE: f64 = 50_000.0;
const TARGET_IMPORT_POSTGRES: f64 = 20_000.0;
const TARGET_SEARCH_P99_MS: f64 = 10.0;
const TARGET_OBSERVATIONS: u64 = 1_000_000;
/// The server's request body limit during the bench: a patient's whole record is one
/// Bundle (a few hundred KiB, more for long histories), a load Bundle about 1.3 MiB.
const BODY_LIMIT: usize = 64 * 1024 * 1024;
const FHIR_BASE: &str = "/fhir/R4";

/// Measure FHIR transaction-Bundle import (resources/s) and Observation search latency
/// over a large store, on SQLite and PostgreSQL (see BENCHMARKS.md).
///
/// PostgreSQL: the database salus_bench, dropped and created afresh on the server of
/// --database-url if it is a postgres:// URL, else of SALUS_BENCH_DATABASE_URL, else of
/// postgres://postgres@127.0.0.1:5432/postgres. SQLite: a fresh data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchFhirArgs {
    /// Backend to measure; repeat for several [default: sqlite and postgres].
    #[arg(long, value_enum)]
    pub backend: Vec<Backend>,
    /// Patients imported at each --import-clients count (one transaction Bundle each,
    /// ~330 resources of which ~215 Observations).
    #[arg(long, default_value_t = 1000)]
    pub patients: u64,
    /// Numbers of concurrent import clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub import_clients: Vec<usize>,
    /// Longest an import phase runs: no Bundle is sent after it (the phase's figures are
    /// of what was imported).
    #[arg(long, default_value_t = 300)]
    pub import_seconds: u64,
    /// Observations the store holds before the searches (the import's count towards it).
    #[arg(long, default_value_t = TARGET_OBSERVATIONS)]
    pub observations: u64,
    /// Entries per load transaction (whole patients: their Patient and Observations).
    #[arg(long, default_value_t = 1000)]
    pub load_entries: usize,
    /// Concurrent clients of the load phase.
    #[arg(long, default_value_t = 4)]
    pub load_clients: usize,
    /// Longest the load phase runs.
    #[arg(long, default_value_t = 3600)]
    pub load_seconds: u64,
    /// Seconds of each search phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Numbers of concurrent search clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub search_clients: Vec<usize>,
    /// Seed of the synthetic population.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the fresh data directories go [default: the system temporary directory]
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data directories after the run.
    #[arg(long)]
    pub keep: bool,
}

/// Distinct positive counts, in the order given.
fn levels(counts: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &c in counts {
        if c > 0 && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

pub async fn run(settings: &Settings, args: BenchFhirArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(args.patients >= 1, "--patients must be at least 1");
    anyhow::ensure!(
        (1..=salus_api::fhir::bundle::MAX_ENTRIES).contains(&args.load_entries),
        "--load-entries is from 1 to {}",
        salus_api::fhir::bundle::MAX_ENTRIES
    );
    anyhow::ensure!(args.load_clients >= 1, "--load-clients must be at least 1");
    let import_levels = levels(&args.import_clients);
    let search_levels = levels(&args.search_clients);
    anyhow::ensure!(
        !import_levels.is_empty() && !search_levels.is_empty(),
        "--import-clients and --search-clients need at least one positive number each"
    );
    let max_clients = import_levels
        .iter()
        .chain(search_levels.iter())
        .copied()
        .chain([args.load_clients])
        .max()
        .unwrap_or(1);
    let client = http_client(max_clients)?;
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
    let plan = Plan {
        import_levels,
        search_levels,
    };
    let mut outcomes: Vec<(String, anyhow::Result<Outcome>)> = Vec::new();
    for backend in backends {
        let res = bench_backend(settings, &args, &plan, &client, backend, &work_dir).await;
        if let Err(e) = &res {
            eprintln!("{}: the bench failed: {e:#}", backend.name());
        }
        outcomes.push((backend.name().to_owned(), res));
    }
    print!("{}", render(&args, &outcomes));
    let failed_runs = outcomes.iter().filter(|(_, r)| r.is_err()).count();
    let failed_requests: u64 = outcomes
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|r| r.steps.iter())
        .map(|s| s.errors)
        .sum();
    if failed_runs > 0 || failed_requests > 0 {
        eprintln!(
            "salus bench-fhir: {failed_runs} backend run(s) failed, {failed_requests} request(s) failed"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

struct Plan {
    import_levels: Vec<usize>,
    search_levels: Vec<usize>,
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Import,
    Load,
    /// `code=http://loinc.org|<code>`
    Token,
    /// `code=<code>`
    TokenCode,
    /// `subject=Patient/<id>`
    Subject,
}

impl StepKind {
    fn name(self) -> &'static str {
        match self {
            StepKind::Import => "import",
            StepKind::Load => "load",
            StepKind::Token => "search code=system|code",
            StepKind::TokenCode => "search code=code",
            StepKind::Subject => "search subject=Patient/id",
        }
    }

    /// The name in a Markdown table cell (its `|` escaped).
    fn cell(self) -> String {
        self.name().replace('|', "\\|")
    }

    fn is_write(self) -> bool {
        matches!(self, StepKind::Import | StepKind::Load)
    }
}

/// One measured phase.
#[derive(Debug)]
struct Step {
    kind: StepKind,
    clients: usize,
    /// Successful requests (Bundles or searches).
    ok: u64,
    /// Bundle entries committed (import and load).
    resources: u64,
    observations: u64,
    errors: u64,
    elapsed: Duration,
    /// Sorted latencies of the successful requests, microseconds.
    latencies: Vec<u32>,
    cpu: Option<CpuSplit>,
    error_samples: Vec<String>,
    /// Whether the phase stopped at its time limit with work left.
    cut: bool,
}

impl Step {
    fn per_s(&self, n: u64) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { n as f64 / s } else { 0.0 }
    }

    fn pct_ms(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|us| f64::from(us) / 1000.0)
    }
}

#[derive(Debug)]
struct Outcome {
    backend: String,
    steps: Vec<Step>,
    /// Observations committed (import and load).
    observations: u64,
    codes: usize,
    patients: usize,
    rss_idle_kb: Option<u64>,
    rss_loaded_kb: Option<u64>,
    rss_hwm_kb: Option<u64>,
    notes: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// One backend

async fn bench_backend(
    settings: &Settings,
    args: &BenchFhirArgs,
    plan: &Plan,
    client: &reqwest::Client,
    backend: Backend,
    work_dir: &Path,
) -> anyhow::Result<Outcome> {
    let dir = work_dir.join(format!(
        "salus-bench-fhir-{}",
        uuid::Uuid::now_v7().simple()
    ));
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
        let extra = vec!["--body-limit".to_owned(), BODY_LIMIT.to_string()];
        let mut server = ServerProcess::spawn_with(&dir, database_url.as_deref(), &extra).await?;
        let run = async {
            wait_ready(client, &server.base, &mut server.child).await?;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let rss_idle_kb = proc_status_kb(server.pid, "VmRSS:");
            eprintln!(
                "{}: server pid {} on {} is ready, idle RSS {}",
                backend.name(),
                server.pid,
                server.base,
                fmt_mib(rss_idle_kb)
            );
            let mut out = drive(
                args,
                plan,
                backend.name(),
                &server.base,
                &server.token,
                server.pid,
            )
            .await?;
            out.rss_idle_kb = rss_idle_kb;
            out.rss_hwm_kb = proc_status_kb(server.pid, "VmHWM:");
            anyhow::Ok(out)
        }
        .await;
        let stopped = server.stop().await;
        let mut out = run?;
        match stopped {
            Ok(note) => out.notes.extend(note),
            Err(e) => out.notes.push(format!("stopping the server: {e:#}")),
        }
        anyhow::Ok(out)
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

/// One request body to post: a transaction Bundle, with what it holds.
struct Bundle {
    body: String,
    entries: u64,
    observations: u64,
    /// Positions of its Patient entries (their answers name the ids the patients got).
    patients: Vec<usize>,
}

/// A patient's whole record as `salus synth` writes it.
fn import_bundle(config: &Config, index: u64) -> anyhow::Result<Bundle> {
    let record = synth::patient(config, index);
    let observations = record
        .entries
        .iter()
        .filter(|e| e.resource_type == "Observation")
        .count() as u64;
    let body = serde_json::to_string(&record.transaction())
        .context("cannot serialise a transaction Bundle")?;
    Ok(Bundle {
        body,
        entries: record.entries.len() as u64,
        observations,
        patients: Vec::new(),
    })
}

/// Patients `next..` as their Patient and Observations, until about `max_entries` entries
/// or `want` Observations; the LOINC codes of the Observations go into `codes`.
fn load_bundle(
    config: &Config,
    next: &mut u64,
    max_entries: usize,
    want: u64,
    codes: &mut BTreeSet<String>,
) -> anyhow::Result<Bundle> {
    let mut entries: Vec<Value> = Vec::new();
    let mut patients = Vec::new();
    let mut observations = 0u64;
    while observations < want && (entries.is_empty() || entries.len() < max_entries) {
        let record = synth::patient(config, *next);
        *next += 1;
        let tx = record.transaction();
        let Some(items) = tx.get("entry").and_then(Value::as_array) else {
            continue;
        };
        for e in items {
            match e["resource"]["resourceType"].as_str() {
                Some("Patient") => {
                    patients.push(entries.len());
                    entries.push(e.clone());
                }
                Some("Observation") if observations < want => {
                    let mut e = e.clone();
                    if let Some(r) = e.get_mut("resource").and_then(Value::as_object_mut) {
                        // The visit's Encounter is not sent.
                        r.remove("encounter");
                    }
                    for c in e["resource"]["code"]["coding"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if c["system"].as_str() == Some(LOINC)
                            && let Some(code) = c["code"].as_str()
                            && !codes.contains(code)
                        {
                            codes.insert(code.to_owned());
                        }
                    }
                    observations += 1;
                    entries.push(e);
                }
                _ => {}
            }
        }
    }
    let n = entries.len() as u64;
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    Ok(Bundle {
        body: serde_json::to_string(&bundle).context("cannot serialise a load Bundle")?,
        entries: n,
        observations,
        patients,
    })
}

/// Every phase against one server.
async fn drive(
    args: &BenchFhirArgs,
    plan: &Plan,
    backend: &str,
    base: &str,
    token: &str,
    server_pid: u32,
) -> anyhow::Result<Outcome> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token is not a valid header value")?;
    auth.set_sensitive(true);
    let endpoint = Endpoint::new(base, auth).await?;
    let config = Config::new(args.seed, 0);
    let mut steps = Vec::new();
    let mut rss_loaded_kb: Option<u64> = None;
    let mut observations = 0u64;
    let mut next_patient = 0u64;

    for &clients in &plan.import_levels {
        let from = next_patient;
        next_patient += args.patients;
        eprintln!(
            "{backend}: making the transaction Bundles of patients {}..{}",
            from + 1,
            next_patient
        );
        let mut bundles = Vec::with_capacity(usize::try_from(args.patients).unwrap_or(0));
        for i in from..next_patient {
            bundles.push(import_bundle(&config, i)?);
        }
        let (tx, rx) = mpsc::channel::<Bundle>(clients * 2 + 1);
        let feeder = std::thread::spawn(move || {
            for b in bundles {
                if tx.blocking_send(b).is_err() {
                    break;
                }
            }
        });
        let work = Work::Bundles {
            queue: Arc::new(Mutex::new(rx)),
            collect: false,
        };
        let deadline = Duration::from_secs(args.import_seconds.max(1));
        let (step, _, rss) = run_step(
            &endpoint,
            backend,
            StepKind::Import,
            clients,
            deadline,
            server_pid,
            work,
        )
        .await;
        let _ = feeder.join();
        observations += step.observations;
        rss_loaded_kb = rss_loaded_kb.max(rss);
        steps.push(step);
    }

    // Observations up to --observations, through transactions of whole patients.
    let want = args.observations.saturating_sub(observations);
    let mut patient_ids: Vec<String> = Vec::new();
    let mut codes: Vec<String> = Vec::new();
    if want > 0 {
        eprintln!("{backend}: loading {want} more Observations");
        let (tx, rx) = mpsc::channel::<Bundle>(args.load_clients * 2 + 1);
        let (start, max_entries) = (next_patient, args.load_entries);
        let producer = std::thread::spawn(move || {
            let mut codes = BTreeSet::new();
            let mut next = start;
            let mut left = want;
            while left > 0 {
                let b = load_bundle(&config, &mut next, max_entries, left, &mut codes)?;
                left = left.saturating_sub(b.observations);
                if tx.blocking_send(b).is_err() {
                    break;
                }
            }
            anyhow::Ok(codes)
        });
        let work = Work::Bundles {
            queue: Arc::new(Mutex::new(rx)),
            collect: true,
        };
        let (step, ids, rss) = run_step(
            &endpoint,
            backend,
            StepKind::Load,
            args.load_clients,
            Duration::from_secs(args.load_seconds.max(1)),
            server_pid,
            work,
        )
        .await;
        match producer.join() {
            Ok(Ok(c)) => codes = c.into_iter().collect(),
            Ok(Err(e)) => return Err(e.context("making the load Bundles")),
            Err(_) => anyhow::bail!("the thread making the load Bundles panicked"),
        }
        observations += step.observations;
        rss_loaded_kb = rss_loaded_kb.max(rss);
        patient_ids = ids;
        steps.push(step);
    }
    let mut notes = Vec::new();
    if codes.is_empty() {
        // Nothing loaded (the import alone reached --observations): the codes of the
        // population's first patients, which the import holds.
        let mut set = BTreeSet::new();
        for i in 0..args.patients.min(20) {
            for e in synth::patient(&config, i).entries {
                if e.resource_type == "Observation" {
                    for c in e.resource["code"]["coding"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if c["system"].as_str() == Some(LOINC)
                            && let Some(code) = c["code"].as_str()
                        {
                            set.insert(code.to_owned());
                        }
                    }
                }
            }
        }
        codes = set.into_iter().collect();
    }
    if patient_ids.is_empty() {
        notes.push(
            "no patient ids were learnt from a load phase, so subject searches were not measured"
                .to_owned(),
        );
    }
    let search = Arc::new(SearchPool {
        codes,
        patients: patient_ids,
    });
    let patients = search.patients.len();
    let ncodes = search.codes.len();
    eprintln!(
        "{backend}: {observations} Observations committed; searching over {ncodes} LOINC codes and {patients} patients"
    );
    if ncodes > 0 {
        preflight(&endpoint, &search).await?;
    }
    let mut phase_no = 0u64;
    for kind in [StepKind::Token, StepKind::TokenCode, StepKind::Subject] {
        if kind == StepKind::Subject && search.patients.is_empty() {
            continue;
        }
        if kind != StepKind::Subject && search.codes.is_empty() {
            continue;
        }
        for &clients in &plan.search_levels {
            phase_no += 1;
            let work = Work::Search {
                pool: search.clone(),
                kind,
                seed: phase_no.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            let (step, _, rss) = run_step(
                &endpoint,
                backend,
                kind,
                clients,
                Duration::from_secs(args.seconds),
                server_pid,
                work,
            )
            .await;
            rss_loaded_kb = rss_loaded_kb.max(rss);
            steps.push(step);
        }
    }
    Ok(Outcome {
        backend: backend.to_owned(),
        steps,
        observations,
        codes: ncodes,
        patients,
        rss_idle_kb: None,
        rss_loaded_kb,
        rss_hwm_kb: None,
        notes,
    })
}

/// What the searches draw from.
struct SearchPool {
    codes: Vec<String>,
    patients: Vec<String>,
}

/// One token search first: it must answer a searchset with matches, so that a broken
/// index fails here instead of measuring empty answers.
async fn preflight(endpoint: &Endpoint, pool: &SearchPool) -> anyhow::Result<()> {
    let Some(code) = pool.codes.first() else {
        return Ok(());
    };
    let mut conn = Conn::new(endpoint.clone());
    let path = search_path(StepKind::Token, code);
    let a = conn
        .send(&path, None)
        .await
        .with_context(|| format!("GET {path}"))?;
    anyhow::ensure!(
        a.status == 200,
        "GET {path} answered {}: {}",
        a.status,
        snippet(&a.body)
    );
    let v: Value = serde_json::from_slice(&a.body).context("the search answer is not JSON")?;
    let n = v["entry"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(n > 0, "GET {path} found nothing: {}", snippet(&a.body));
    Ok(())
}

fn search_path(kind: StepKind, value: &str) -> String {
    match kind {
        StepKind::Token => {
            format!("{FHIR_BASE}/Observation?code=http://loinc.org%7C{value}&_count=50")
        }
        StepKind::TokenCode => format!("{FHIR_BASE}/Observation?code={value}&_count=50"),
        _ => format!("{FHIR_BASE}/Observation?subject=Patient/{value}"),
    }
}

enum Work {
    /// Transaction Bundles, taken in order by whichever client is free; `collect`: learn
    /// the patients' ids from the answers.
    Bundles {
        queue: Arc<Mutex<mpsc::Receiver<Bundle>>>,
        collect: bool,
    },
    Search {
        pool: Arc<SearchPool>,
        kind: StepKind,
        seed: u64,
    },
}

impl Clone for Work {
    fn clone(&self) -> Self {
        match self {
            Work::Bundles { queue, collect } => Work::Bundles {
                queue: queue.clone(),
                collect: *collect,
            },
            Work::Search { pool, kind, seed } => Work::Search {
                pool: pool.clone(),
                kind: *kind,
                seed: *seed,
            },
        }
    }
}

#[derive(Default)]
struct ClientOut {
    latencies: Vec<u32>,
    resources: u64,
    observations: u64,
    errors: u64,
    ids: Vec<String>,
    error_samples: Vec<String>,
    cut: bool,
}

impl ClientOut {
    fn fail(&mut self, failed: &AtomicU64, msg: impl FnOnce() -> String) {
        self.errors += 1;
        failed.fetch_add(1, Ordering::Relaxed);
        sample(&mut self.error_samples, msg);
    }
}

/// The ids a transaction-response gives the entries at `at` (`Patient/<id>/_history/1`).
fn answered_ids(body: &[u8], at: &[usize]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    at.iter()
        .filter_map(|&i| {
            let loc = v["entry"][i]["response"]["location"].as_str()?;
            let mut parts = loc.split('/');
            (parts.next()? == "Patient").then_some(())?;
            parts.next().filter(|s| !s.is_empty()).map(str::to_owned)
        })
        .collect()
}

async fn client_loop(
    endpoint: Endpoint,
    work: Work,
    client_no: usize,
    deadline: Instant,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> ClientOut {
    let mut out = ClientOut::default();
    let mut conn = Conn::new(endpoint);
    match work {
        Work::Bundles { queue, collect } => loop {
            let next = {
                let mut rx = queue.lock().await;
                if Instant::now() >= deadline {
                    out.cut = rx.try_recv().is_ok();
                    break;
                }
                rx.recv().await
            };
            let Some(b) = next else { break };
            let start = Instant::now();
            match conn.send(FHIR_BASE, Some(b.body)).await {
                Ok(a) if a.status == 200 => {
                    out.latencies.push(micros(start.elapsed()));
                    out.resources += b.entries;
                    out.observations += b.observations;
                    ok.fetch_add(1, Ordering::Relaxed);
                    if collect {
                        out.ids.extend(answered_ids(&a.body, &b.patients));
                    }
                }
                Ok(a) => out.fail(&failed, || {
                    format!(
                        "POST {FHIR_BASE} answered {}: {}",
                        a.status,
                        snippet(&a.body)
                    )
                }),
                Err(e) => out.fail(&failed, || format!("POST {FHIR_BASE}: {e:#}")),
            }
        },
        Work::Search { pool, kind, seed } => {
            let values = if kind == StepKind::Subject {
                &pool.patients
            } else {
                &pool.codes
            };
            if values.is_empty() {
                return out;
            }
            // xorshift64*, as the patient bench's readers.
            let mut state = (seed ^ (client_no as u64 + 1).wrapping_mul(0x2545_F491)) | 1;
            while Instant::now() < deadline {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                let Some(value) = values.get((r % values.len() as u64) as usize) else {
                    continue;
                };
                let path = search_path(kind, value);
                let start = Instant::now();
                match conn.send(&path, None).await {
                    Ok(a) if a.status == 200 => {
                        out.latencies.push(micros(start.elapsed()));
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(a) => out.fail(&failed, || {
                        format!("GET {path} answered {}: {}", a.status, snippet(&a.body))
                    }),
                    Err(e) => out.fail(&failed, || format!("GET {path}: {e:#}")),
                }
            }
        }
    }
    out
}

/// One phase: `clients` closed loops on one thread of their own (as `salus bench` runs
/// them), the server's RSS sampled every 250 ms, CPU split from `/proc`.
async fn run_step(
    endpoint: &Endpoint,
    backend: &str,
    kind: StepKind,
    clients: usize,
    limit: Duration,
    server_pid: u32,
    work: Work,
) -> (Step, Vec<String>, Option<u64>) {
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
                        peak = peak.max(proc_status_kb(server_pid, "VmRSS:"));
                        pb.set_message(format!(
                            "{label}: {:.0}s, {} ok, {} errors",
                            started.elapsed().as_secs_f64(),
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
    let cpu_before = CpuSnapshot::take(Some(server_pid));
    let started = Instant::now();
    let deadline = started + limit;
    let load = {
        let (endpoint, ok, failed) = (endpoint.clone(), ok.clone(), failed.clone());
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            anyhow::Ok(rt.block_on(async move {
                let mut handles = Vec::with_capacity(clients);
                for c in 0..clients {
                    let fut = client_loop(
                        endpoint.clone(),
                        work.clone(),
                        c,
                        deadline,
                        ok.clone(),
                        failed.clone(),
                    );
                    handles.push(tokio::spawn(fut));
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
        Ok(Err(e)) => vec![Ok(ClientOut {
            errors: 1,
            error_samples: vec![format!("cannot start the load thread: {e}")],
            ..ClientOut::default()
        })],
        Err(e) => vec![Ok(ClientOut {
            errors: 1,
            error_samples: vec![format!("the load thread failed: {e}")],
            ..ClientOut::default()
        })],
    };
    let elapsed = started.elapsed();
    let cpu_after = CpuSnapshot::take(Some(server_pid));
    let _ = stop_tx.send(());
    let peak = sampler.await.unwrap_or(None);
    pb.finish_and_clear();
    let mut step = Step {
        kind,
        clients,
        ok: 0,
        resources: 0,
        observations: 0,
        errors: 0,
        elapsed,
        latencies: Vec::new(),
        cpu: CpuSnapshot::split(cpu_before, cpu_after, elapsed),
        error_samples: Vec::new(),
        cut: false,
    };
    let mut ids = Vec::new();
    for h in outs {
        match h {
            Ok(out) => {
                step.latencies.extend(out.latencies);
                step.resources += out.resources;
                step.observations += out.observations;
                step.errors += out.errors;
                step.cut |= out.cut;
                ids.extend(out.ids);
                for s in out.error_samples {
                    if step.error_samples.len() < MAX_ERROR_SAMPLES {
                        step.error_samples.push(s);
                    }
                }
            }
            Err(e) => {
                step.errors += 1;
                if step.error_samples.len() < MAX_ERROR_SAMPLES {
                    step.error_samples
                        .push(format!("a client task failed: {e}"));
                }
            }
        }
    }
    step.latencies.sort_unstable();
    step.ok = step.latencies.len() as u64;
    eprintln!(
        "{label}: {}{:.0} requests/s, p50 {} ms, p95 {} ms, p99 {} ms, {} errors{}",
        if kind.is_write() {
            format!("{:.0} resources/s, ", step.per_s(step.resources))
        } else {
            String::new()
        },
        step.per_s(step.ok),
        fmt_ms(step.pct_ms(50.0)),
        fmt_ms(step.pct_ms(95.0)),
        fmt_ms(step.pct_ms(99.0)),
        step.errors,
        if step.cut {
            " (stopped at its time limit)"
        } else {
            ""
        }
    );
    (step, ids, peak)
}

// ---------------------------------------------------------------------------------------
// Report

/// "met" or how far off, for a "higher is better" target; `short` for the summary line.
fn verdict_min(measured: f64, target: f64) -> String {
    if measured >= target {
        format!("met (+{:.0}%)", (measured / target - 1.0) * 100.0)
    } else if measured <= 0.0 {
        "**missed** (nothing measured)".into()
    } else {
        format!(
            "**missed** by {}/s ({:.0}% below; needs {:.1}×)",
            fmt_rate(target - measured),
            (1.0 - measured / target) * 100.0,
            target / measured
        )
    }
}

fn verdict_max(measured: f64, target: f64) -> String {
    if measured <= target {
        format!("met ({:.0}% under)", (1.0 - measured / target) * 100.0)
    } else {
        format!(
            "**missed** by {:.2} ms ({:.0}% over; needs {:.1}× faster)",
            measured - target,
            (measured / target - 1.0) * 100.0,
            measured / target
        )
    }
}

fn import_target(backend: &str) -> Option<f64> {
    match backend {
        "sqlite" => Some(TARGET_IMPORT_SQLITE),
        "postgres" => Some(TARGET_IMPORT_POSTGRES),
        _ => None,
    }
}

fn render(args: &BenchFhirArgs, outcomes: &[(String, anyhow::Result<Outcome>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## salus bench-fhir: {} patients per import phase (clients {}), {} Observations, searches {} s (clients {})\n",
        args.patients,
        join(&args.import_clients),
        fmt_rate(args.observations as f64),
        args.seconds,
        join(&args.search_clients),
    );
    let _ = writeln!(
        s,
        "| backend | phase | clients | resources/s | requests/s | p50 ms | p95 ms | p99 ms | errors | server CPU | bench CPU | other CPU |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (name, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                for p in &r.steps {
                    let _ = writeln!(
                        s,
                        "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        r.backend,
                        p.kind.cell(),
                        if p.cut { " (time limit)" } else { "" },
                        p.clients,
                        if p.kind.is_write() {
                            fmt_rate(p.per_s(p.resources))
                        } else {
                            "-".into()
                        },
                        fmt_rate(p.per_s(p.ok)),
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
                    "| {name} | (failed) | - | - | - | - | - | - | - | - | - | - |"
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nresources/s = Bundle entries committed ÷ wall time; requests/s = Bundles (import, \
         load) or searches per second; latencies are per request. CPU columns are in cores: \
         the server process, this load generator (during the load phase it also makes the \
         Bundles), everything else (PostgreSQL's backends, other work)."
    );
    let ok: Vec<&Outcome> = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .collect();
    if !ok.is_empty() {
        let _ = writeln!(s, "\n### Store and server memory\n");
        let _ = writeln!(
            s,
            "| backend | Observations committed | LOINC codes searched | patients searched | idle RSS | loaded RSS (peak sampled) | VmHWM |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for r in &ok {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.backend,
                fmt_rate(r.observations as f64),
                r.codes,
                fmt_rate(r.patients as f64),
                fmt_mib(r.rss_idle_kb),
                fmt_mib(r.rss_loaded_kb),
                fmt_mib(r.rss_hwm_kb)
            );
        }
    }

    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(s, "| target | backend | measured | verdict |");
    let _ = writeln!(s, "|---|---|---:|---|");
    let mut summary: Vec<String> = Vec::new();
    for r in &ok {
        if let Some(target) = import_target(&r.backend)
            && let Some(best) = r
                .steps
                .iter()
                .filter(|p| p.kind == StepKind::Import)
                .max_by(|a, b| a.per_s(a.resources).total_cmp(&b.per_s(b.resources)))
        {
            let rate = best.per_s(best.resources);
            let verdict = verdict_min(rate, target);
            let _ = writeln!(
                s,
                "| transaction import ≥ {} resources/s | {} | {}/s ({} clients) | {verdict} |",
                fmt_rate(target),
                r.backend,
                fmt_rate(rate),
                best.clients
            );
            summary.push(format!(
                "{} import {}/s vs ≥ {}/s: {}",
                r.backend,
                fmt_rate(rate),
                fmt_rate(target),
                verdict.replace("**", "")
            ));
        }
        let size_note = if r.observations < TARGET_OBSERVATIONS {
            format!(
                " (only {} Observations, not the target's {})",
                fmt_rate(r.observations as f64),
                fmt_rate(TARGET_OBSERVATIONS as f64)
            )
        } else {
            String::new()
        };
        for kind in [StepKind::Token, StepKind::TokenCode] {
            // Judged at the most clients run: the most demanding level.
            let Some(p) = r
                .steps
                .iter()
                .filter(|p| p.kind == kind)
                .max_by_key(|p| p.clients)
            else {
                continue;
            };
            let Some(p99) = p.pct_ms(99.0) else { continue };
            let verdict = verdict_max(p99, TARGET_SEARCH_P99_MS);
            let _ = writeln!(
                s,
                "| {} p99 ≤ {TARGET_SEARCH_P99_MS} ms over {} Observations | {} | {} ms ({} clients, {}/s){size_note} | {verdict} |",
                kind.cell(),
                fmt_rate(TARGET_OBSERVATIONS as f64),
                r.backend,
                fmt_ms(Some(p99)),
                p.clients,
                fmt_rate(p.per_s(p.ok)),
            );
            summary.push(format!(
                "{} {} p99 {} ms vs ≤ {TARGET_SEARCH_P99_MS} ms{size_note}: {}",
                r.backend,
                kind.name(),
                fmt_ms(Some(p99)),
                verdict.replace("**", "")
            ));
        }
    }

    let mut problems = String::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                for p in r.steps.iter().filter(|p| !p.error_samples.is_empty()) {
                    let _ = writeln!(
                        problems,
                        "- {} {} × {}: {} failed requests, e.g.:",
                        r.backend,
                        p.kind.cell(),
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
    let _ = writeln!(
        s,
        "\nsummary: {}",
        if summary.is_empty() {
            "nothing measured".to_owned()
        } else {
            summary.join("; ")
        }
    );
    s
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_bundles_hold_whole_patients_and_only_their_observations() {
        let config = Config::new(1, 0);
        let mut next = 0;
        let mut codes = BTreeSet::new();
        let b = load_bundle(&config, &mut next, 300, u64::MAX, &mut codes).unwrap();
        let v: Value = serde_json::from_str(&b.body).unwrap();
        let entries = v["entry"].as_array().unwrap();
        assert_eq!(entries.len() as u64, b.entries);
        assert!(next >= 1 && !b.patients.is_empty() && !codes.is_empty());
        for &i in &b.patients {
            assert_eq!(entries[i]["resource"]["resourceType"], "Patient");
        }
        let obs = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Observation")
            .inspect(|e| assert!(e["resource"].get("encounter").is_none()))
            .count() as u64;
        assert_eq!(obs, b.observations);
        assert_eq!(obs + b.patients.len() as u64, b.entries);
        // A bound on Observations stops inside a patient.
        let b = load_bundle(&config, &mut next, 300, 5, &mut codes).unwrap();
        assert_eq!(b.observations, 5);
    }

    #[test]
    fn patient_ids_come_from_the_answer_locations() {
        let body = br#"{"entry":[{"response":{"location":"Patient/abc/_history/1"}},{"response":{"location":"Observation/x/_history/1"}}]}"#;
        assert_eq!(answered_ids(body, &[0, 1]), vec!["abc".to_owned()]);
        assert!(answered_ids(b"not json", &[0]).is_empty());
    }

    #[test]
    fn verdicts_say_by_how_much() {
        assert!(verdict_min(60_000.0, 50_000.0).starts_with("met"));
        let v = verdict_min(10_000.0, 50_000.0);
        assert!(v.contains("40,000") && v.contains("5.0×"), "{v}");
        assert!(verdict_max(4.0, 10.0).starts_with("met"));
        assert!(verdict_max(20.0, 10.0).contains("100% over"));
    }
}
