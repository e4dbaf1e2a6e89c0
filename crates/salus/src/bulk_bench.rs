//! `salus bench-import`: the bulk import benchmark of BENCHMARKS.md. Generates a patient CSV
//! of `--rows` rows (streamed to a file in the work directory), then for each backend runs
//! the real `salus import` in a child process against a fresh store (SQLite in a fresh
//! data directory; PostgreSQL in a database `salus_bench_import`, dropped and created), and
//! reports rows/s and the child's resident memory over the run (sampled every 100 ms from
//! `/proc`), so that a flat line shows memory does not grow with the file.
//!
//! The backend `discard` runs the same import in this process against a store that does
//! the caller's share of a commit (canonical JSON, event digests) and then drops the write:
//! the ceiling of the bulk path above the store.

use crate::config::Settings;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchImportArgs {
    /// Rows of the generated patient CSV.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Backends to measure, comma-separated: sqlite, postgres, discard (no store: the
    /// bulk path's own ceiling).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<String>,
    /// Where the CSV and the SQLite data directory go [default: the system temp directory].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// PostgreSQL server to create the benchmark database on [default:
    /// SALUS_BENCH_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres].
    #[arg(long)]
    pub admin_url: Option<String>,
    /// Rows in flight (passed to `salus import --concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

const DATABASE: &str = "salus_bench_import";
const FAMILIES: &[&str] = &[
    "Smith",
    "Jones",
    "Williams",
    "Brown",
    "Taylor",
    "Davies",
    "Müller",
    "García",
    "Nguyen",
    "Okafor",
    "Kowalski",
    "Rossi",
    "Novak",
    "Yilmaz",
    "Johansson",
    "Dubois",
];
const GIVEN: &[&str] = &[
    "Ada", "Grace", "Alan", "Zoë", "Mary", "Chidi", "Li", "Ana", "Ömer", "Ingrid", "Luca", "Hana",
];

/// Write the benchmark's patient CSV: one identifier each, a name, birth date, gender,
/// phone and e-mail (about 130 bytes a row).
pub fn generate(path: &Path, rows: u64) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(w, "identifiers,family,given,birth_date,gender,phones,email")?;
    for i in 0..rows {
        let family = FAMILIES[(i % FAMILIES.len() as u64) as usize];
        let given = GIVEN[((i / 7) % GIVEN.len() as u64) as usize];
        let year = 1930 + (i % 90);
        let month = 1 + (i % 12);
        let day = 1 + (i % 28);
        let gender = ["female", "male", "other", "unknown"][(i % 4) as usize];
        writeln!(
            w,
            "urn:salus:bench:mrn|{i:09},{family},{given},{year}-{month:02}-{day:02},{gender},+44 20 {:04} {:04},p{i}@example.org",
            (i / 10_000) % 10_000,
            i % 10_000
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// What one measured import did.
struct Measured {
    backend: String,
    seconds: f64,
    rows_per_s: f64,
    /// (seconds since start, VmRSS MiB) every 100 ms.
    samples: Vec<(f64, f64)>,
    peak_mib: f64,
    summary: String,
}

fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn salus(args: &[String], cmd: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(args)
        .args(cmd)
        .env("SALUS_LOG", "warn")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "salus {} failed: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn measure_import(
    backend: &str,
    store_args: &[String],
    csv: &Path,
    rows: u64,
    concurrency: Option<usize>,
) -> anyhow::Result<Measured> {
    salus(store_args, &["migrate"])?;
    salus(store_args, &["tenant", "create", "bench"])?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(store_args)
        .arg("import")
        .arg(csv)
        .args(["--kind", "patients", "--tenant", "bench", "--quiet"])
        .env("SALUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(c) = concurrency {
        cmd.args(["--concurrency", &c.to_string()]);
    }
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut samples = Vec::new();
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Some(rss) = proc_status_mib(pid, "VmRSS:") {
            samples.push((started.elapsed().as_secs_f64(), rss));
        }
        if let Some(hwm) = proc_status_mib(pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    let out = child.wait_with_output()?;
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        status.success(),
        "the {backend} import failed: {summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Measured {
        backend: backend.to_owned(),
        seconds,
        rows_per_s: rows as f64 / seconds,
        samples,
        peak_mib: peak,
        summary,
    })
}

/// VmRSS at a fraction of the run.
fn rss_at(samples: &[(f64, f64)], fraction: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let i = ((samples.len() - 1) as f64 * fraction).round() as usize;
    samples[i.min(samples.len() - 1)].1
}

pub async fn run(_settings: &Settings, args: BenchImportArgs) -> anyhow::Result<ExitCode> {
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("salus-bench-import"));
    std::fs::create_dir_all(&work)?;
    let csv = work.join(format!("patients-{}.csv", args.rows));
    eprintln!(
        "generating {} patient rows into {}",
        args.rows,
        csv.display()
    );
    let bytes = generate(&csv, args.rows)?;
    let admin = args
        .admin_url
        .clone()
        .or_else(|| std::env::var("SALUS_BENCH_DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut results = Vec::new();
    for backend in &args.backends {
        let data = work.join(format!("{backend}-data"));
        let _ = std::fs::remove_dir_all(&data);
        let mut store_args = vec![
            "--data-dir".to_string(),
            data.to_string_lossy().into_owned(),
        ];
        let scratch = if backend == "postgres" {
            let db = salus_store::postgres::ScratchDatabase::create(&admin, DATABASE)
                .await
                .context("cannot create the benchmark database")?;
            store_args.push("--database-url".into());
            store_args.push(db.url.clone());
            Some(db)
        } else if backend == "sqlite" || backend == "discard" {
            None
        } else {
            anyhow::bail!("unknown backend '{backend}' (sqlite, postgres, discard)");
        };
        if backend == "discard" {
            eprintln!("importing into a discarding store");
            results.push(discard(&csv, args.rows, args.concurrency).await?);
            continue;
        }
        eprintln!("importing into {backend}");
        let (csv2, rows, conc) = (csv.clone(), args.rows, args.concurrency);
        let b = backend.clone();
        let m =
            tokio::task::spawn_blocking(move || measure_import(&b, &store_args, &csv2, rows, conc))
                .await??;
        eprintln!("{}", m.summary);
        results.push(m);
        drop(scratch);
        let _ = std::fs::remove_dir_all(&data);
    }
    println!(
        "{} patient rows, {:.0} MiB CSV ({})",
        args.rows,
        bytes as f64 / 1048576.0,
        csv.display()
    );
    println!();
    println!(
        "| backend | seconds | rows/s | target | RSS at 25% | 50% | 75% | end | peak (VmHWM) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        let target = if m.backend != "postgres" {
            100_000.0
        } else {
            50_000.0
        };
        println!(
            "| {} | {:.1} | {:.0} | {:.0} ({}) | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
            m.backend,
            m.seconds,
            m.rows_per_s,
            target,
            if m.rows_per_s >= target {
                "met"
            } else {
                "missed"
            },
            rss_at(&m.samples, 0.25),
            rss_at(&m.samples, 0.5),
            rss_at(&m.samples, 0.75),
            rss_at(&m.samples, 1.0),
            m.peak_mib
        );
    }
    let _ = std::fs::remove_file(&csv);
    Ok(ExitCode::SUCCESS)
}

/// A store that takes every write and keeps nothing: the caller's share of a commit
/// (what `CommitQueue::submit` does before queueing) is done, the write is dropped.
struct Discard;

#[async_trait::async_trait]
impl salus_store::Store for Discard {
    fn backend(&self) -> &'static str {
        "discard"
    }
    async fn commit(
        &self,
        ctx: &salus_kernel::TenantContext,
        write: salus_store::Write,
    ) -> Result<salus_store::Committed, salus_store::StoreError> {
        let version = write.expected_version + write.events.len() as i64;
        let prepared = salus_store::commit::Prepared::new(ctx, write);
        std::hint::black_box(&prepared);
        Ok(salus_store::Committed {
            version,
            events: Vec::new(),
            recorded_at: chrono::Utc::now(),
        })
    }
    async fn resource(
        &self,
        _: &salus_kernel::TenantContext,
        _: &str,
        _: uuid::Uuid,
    ) -> Result<Option<salus_store::ResourceRow>, salus_store::StoreError> {
        Ok(None)
    }
    async fn resource_text(
        &self,
        _: &salus_kernel::TenantContext,
        _: &str,
        _: uuid::Uuid,
    ) -> Result<Option<salus_store::ResourceText>, salus_store::StoreError> {
        Ok(None)
    }
    async fn log_access(
        &self,
        _: &salus_kernel::TenantContext,
        _: Vec<salus_store::access::AccessEntry>,
    ) -> Result<(), salus_store::StoreError> {
        Ok(())
    }
    async fn access_log(
        &self,
        _: &salus_kernel::TenantContext,
        _: &salus_store::access::AccessQuery,
    ) -> Result<Vec<salus_store::access::AccessRecord>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn access_entries_after(
        &self,
        _: salus_kernel::TenantId,
        _: i64,
        _: u32,
    ) -> Result<Vec<salus_store::access::AccessRecord>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn event_hashes_after(
        &self,
        _: salus_kernel::TenantId,
        _: i64,
        _: i64,
    ) -> Result<Vec<(i64, salus_kernel::Hash32)>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn stream(
        &self,
        _: &salus_kernel::TenantContext,
        _: uuid::Uuid,
        _: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<salus_kernel::EventEnvelope>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn search(
        &self,
        _: &salus_kernel::TenantContext,
        _: &salus_store::SearchQuery,
    ) -> Result<Vec<salus_store::ResourceRow>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn count(
        &self,
        _: &salus_kernel::TenantContext,
        _: &salus_store::SearchQuery,
    ) -> Result<u64, salus_store::StoreError> {
        Ok(0)
    }
    async fn search_text(
        &self,
        _: &salus_kernel::TenantContext,
        _: &str,
        _: &str,
        _: u32,
    ) -> Result<Vec<salus_store::TextHit>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn unique_owner(
        &self,
        _: &salus_kernel::TenantContext,
        _: &str,
        _: &str,
    ) -> Result<Option<uuid::Uuid>, salus_store::StoreError> {
        Ok(None)
    }
    async fn idempotency(
        &self,
        _: &salus_kernel::TenantContext,
        _: &str,
    ) -> Result<Option<salus_store::IdempotencyRecord>, salus_store::StoreError> {
        Ok(None)
    }
    async fn purge_idempotency(
        &self,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, salus_store::StoreError> {
        Ok(0)
    }
    async fn create_tenant(&self, _: &salus_store::Tenant) -> Result<(), salus_store::StoreError> {
        Ok(())
    }
    async fn tenants(&self) -> Result<Vec<salus_store::Tenant>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn events_after(
        &self,
        _: salus_kernel::TenantId,
        _: i64,
        _: i64,
    ) -> Result<Vec<salus_kernel::EventEnvelope>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn audit_events(
        &self,
        _: &salus_kernel::TenantContext,
        _: &salus_store::audit::EventQuery,
    ) -> Result<Vec<salus_kernel::EventEnvelope>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn event_by_id(
        &self,
        _: uuid::Uuid,
    ) -> Result<Option<salus_kernel::EventEnvelope>, salus_store::StoreError> {
        Ok(None)
    }
    async fn ledger_head(&self, _: salus_kernel::TenantId) -> Result<i64, salus_store::StoreError> {
        Ok(0)
    }
    async fn stream_heads(
        &self,
        _: salus_kernel::TenantId,
    ) -> Result<Vec<salus_store::StreamHead>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn tree_heads(
        &self,
        _: salus_kernel::TenantId,
    ) -> Result<Vec<salus_store::TreeHead>, salus_store::StoreError> {
        Ok(Vec::new())
    }
    async fn put_tree_head(
        &self,
        _: &salus_store::TreeHead,
    ) -> Result<(), salus_store::StoreError> {
        Ok(())
    }
    async fn ready(&self) -> Result<(), salus_store::StoreError> {
        Ok(())
    }
    async fn shutdown(&self) {}
}

async fn discard(csv: &Path, rows: u64, concurrency: Option<usize>) -> anyhow::Result<Measured> {
    use salus_domain::bulk::import::{ImportOptions, Progress};
    let services = salus_domain::service::Services::new(
        std::sync::Arc::new(Discard),
        std::sync::Arc::new(salus_kernel::SystemClock),
    );
    let ctx = crate::server::system_ctx(salus_kernel::TenantId(uuid::Uuid::now_v7()));
    let mut options = ImportOptions::new(salus_domain::bulk::Kind::Patients);
    if let Some(c) = concurrency {
        options.concurrency = c.max(1);
    }
    let progress = std::sync::Arc::new(Progress::default());
    let started = Instant::now();
    let report = salus_api::bulk::import_file(
        &services,
        &ctx,
        csv,
        salus_api::bulk::Format::Csv,
        &options,
        progress,
        &mut |_| {},
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.is_clean(), "the discard import failed: {report:?}");
    let peak = crate::bulk::peak_rss_mib().unwrap_or(0.0);
    Ok(Measured {
        backend: "discard".into(),
        seconds,
        rows_per_s: rows as f64 / seconds,
        samples: vec![(seconds, peak)],
        peak_mib: peak,
        summary: format!("{} rows created in {seconds:.1} s", report.counts.created),
    })
}
