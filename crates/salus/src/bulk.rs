//! `salus import` and `salus export`: bulk files against the data directory or database
//! directly (like `salus user create`), as the tenant's system actor. Import shows a
//! progress bar (bytes of the file, rows and rows/s), ends with a one-line summary, and
//! exits 0 when every row passed, 1 when any failed or the file could not be read, 2 on a
//! usage error. Every import is recorded as an import job in the tenant's event log.

use crate::config::Settings;
use crate::server;
use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use salus_api::bulk::{self, Format};
use salus_domain::bulk::Kind;
use salus_domain::bulk::import::{DEFAULT_CONCURRENCY, ImportOptions, Progress, Report};
use salus_domain::bulk::job::{self, JobSpec};
use salus_domain::service::Services;
use salus_kernel::SystemClock;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).map_err(|e| e.to_string())
}

/// What `--kind` names: a kind of Salus record, or FHIR resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Records(Kind),
    /// FHIR transaction/batch Bundles (`.json`) and NDJSON files (`.ndjson`), or a
    /// directory of them (see [`crate::fhir_import`]).
    Fhir,
}

fn parse_import_kind(s: &str) -> Result<ImportKind, String> {
    if s == "fhir" {
        Ok(ImportKind::Fhir)
    } else {
        parse_kind(s).map(ImportKind::Records)
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("'{s}' is not one of {}", Format::ALL.join(", ")))
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import (`-` reads standard input); with `--kind fhir` also a directory.
    pub file: PathBuf,
    /// patients | interactions | encounters | observations | fhir (FHIR Bundles and NDJSON)
    #[arg(long, value_parser = parse_import_kind)]
    pub kind: ImportKind,
    /// csv | json | ndjson [default: from the file's extension]
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Tenant name or id.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Check every row against the current data and report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write nothing unless every row passes (a validation pass first).
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Rows in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Write every row error here as CSV (row,field,reason).
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// FHIR NDJSON resources per transaction (with `--kind fhir`).
    #[arg(long, default_value_t = crate::fhir_import::DEFAULT_BATCH)]
    pub batch: usize,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// patients | interactions | encounters | observations
    #[arg(long, value_parser = parse_kind)]
    pub kind: Kind,
    /// csv | json | ndjson [default: from --out's extension, else csv]
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Tenant name or id.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

async fn services(settings: &Settings) -> anyhow::Result<Services> {
    let store = server::open_existing_store(settings).await?;
    Ok(Services::new(store, Arc::new(SystemClock)))
}

/// Peak resident memory of this process (Linux), for the summary.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn progress_bar(quiet: bool, total: u64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Copy standard input to a file (imports read their file more than once under
/// all-or-nothing, and report progress against its size).
async fn spool_stdin(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("stdin-{}", uuid::Uuid::now_v7()));
    let mut file = tokio::fs::File::create(&path).await?;
    tokio::io::copy(&mut tokio::io::stdin(), &mut file).await?;
    file.flush().await?;
    Ok(path)
}

pub async fn import(settings: &Settings, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.kind {
        ImportKind::Fhir => return crate::fhir_import::run(settings, &args).await,
        ImportKind::Records(k) => k,
    };
    let stdin = args.file.as_os_str() == "-";
    let Some(format) = args.format.or_else(|| Format::from_path(&args.file)) else {
        eprintln!(
            "error: cannot tell the format of {}; give --format csv|json|ndjson",
            args.file.display()
        );
        return Ok(ExitCode::from(2));
    };
    let services = services(settings).await?;
    let tenant = server::find_tenant(services.store.as_ref(), &args.tenant).await?;
    let ctx = server::system_ctx(tenant.id);
    let path = if stdin {
        spool_stdin(&settings.data_dir.join("imports")).await?
    } else {
        args.file.clone()
    };
    let outcome = run_import(&services, &ctx, &path, format, kind, &args).await;
    if stdin {
        let _ = std::fs::remove_file(&path);
    }
    services.store.shutdown().await;
    outcome
}

async fn run_import(
    services: &Services,
    ctx: &salus_kernel::TenantContext,
    path: &Path,
    format: Format,
    kind: Kind,
    args: &ImportArgs,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = bulk::check_file(path, format, kind).await {
        eprintln!("error: {} cannot be imported: {e}", args.file.display());
        return Ok(ExitCode::from(1));
    }
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let spec = JobSpec {
        kind,
        format: format.as_str().to_owned(),
        dry_run: args.dry_run,
        all_or_nothing: args.all_or_nothing,
        bytes,
    };
    let job = job::start(services, ctx, spec, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the import job: {e}"))?;
    let mut options = ImportOptions::new(kind);
    options.dry_run = args.dry_run;
    options.all_or_nothing = args.all_or_nothing;
    options.concurrency = args.concurrency.max(1);
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(args.quiet, bytes);
    let started = Instant::now();
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let c = progress.counts();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_position(progress.bytes_read.load(Ordering::Relaxed));
                let phase = if progress.validating.load(Ordering::Relaxed) {
                    "validating "
                } else {
                    ""
                };
                bar.set_message(format!(
                    "{phase}{} rows ({:.0}/s), {} failed",
                    c.rows,
                    c.rows as f64 / secs,
                    c.failed
                ));
            }
        })
    };
    let mut errors_out = match &args.errors {
        Some(p) => {
            let mut w = csv::Writer::from_path(p)
                .with_context(|| format!("cannot write {}", p.display()))?;
            w.write_record(["row", "field", "reason"])?;
            Some(w)
        }
        None => None,
    };
    let mut on_error = |e: &salus_domain::bulk::RowError| {
        if let Some(w) = errors_out.as_mut() {
            let _ = w.write_record([
                e.row.to_string(),
                e.field.clone().unwrap_or_default(),
                e.reason.clone(),
            ]);
        }
    };
    let result = bulk::import_file(
        services,
        ctx,
        path,
        format,
        &options,
        progress.clone(),
        &mut on_error,
    )
    .await;
    ticker.abort();
    bar.finish_and_clear();
    if let Some(mut w) = errors_out {
        w.flush()?;
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => Report {
            failure: Some(e.to_string()),
            ..Report::default()
        },
    };
    if let Err(e) = job::finish(services, ctx, job.row.id, &report).await {
        eprintln!("warning: the import's report could not be stored: {e}");
    }
    let secs = started.elapsed().as_secs_f64();
    let c = report.counts;
    for e in report.errors.iter().take(10) {
        eprintln!(
            "row {}{}: {}",
            e.row,
            e.field
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            e.reason
        );
    }
    if c.failed > 10 {
        eprintln!(
            "... {} more row errors{}",
            c.failed - 10,
            if args.errors.is_some() {
                ""
            } else {
                " (write them all with --errors FILE)"
            }
        );
    }
    if let Some(f) = &report.failure {
        eprintln!("import failed: {f}");
    }
    println!(
        "{}{} {}: {} rows, {} created, {} updated, {} unchanged, {} failed in {:.1} s ({:.0} rows/s{}); job {}",
        if args.dry_run {
            "dry run (nothing written) of "
        } else {
            "imported "
        },
        kind.as_str(),
        args.file.display(),
        c.rows,
        c.created,
        c.updated,
        c.unchanged,
        c.failed,
        secs,
        c.rows as f64 / secs.max(0.001),
        peak_rss_mib()
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default(),
        job.row.id
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = args
        .format
        .or_else(|| args.out.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Csv);
    let services = services(settings).await?;
    let tenant = server::find_tenant(services.store.as_ref(), &args.tenant).await?;
    let ctx = server::system_ctx(tenant.id);
    let started = Instant::now();
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &args.out {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot write {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    // An operator's export is a disclosure like any other: logged per patient, as
    // healthcare operations by the command line.
    let log = bulk::ExportLog {
        purpose: "HOPERAT".into(),
        justification: Some("salus export (command line)".into()),
        break_glass: false,
        client: Some(format!("salus-cli/{}", env!("CARGO_PKG_VERSION"))),
    };
    let mut stream = Box::pin(bulk::export_stream(
        services.clone(),
        ctx,
        args.kind,
        format,
        log,
    ));
    let mut bytes = 0u64;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                bytes += b.len() as u64;
                out.write_all(&b).await?;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    out.flush().await?;
    services.store.shutdown().await;
    let mut err = std::io::stderr();
    if let Some(e) = failed {
        let _ = writeln!(err, "error: {e}");
        return Ok(ExitCode::from(1));
    }
    let _ = writeln!(
        err,
        "exported {} of tenant {} as {} ({bytes} bytes) in {:.1} s",
        args.kind.as_str(),
        tenant.name,
        format.as_str(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
