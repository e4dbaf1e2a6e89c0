//! Bulk files at the edge: their formats ([`Format`]), the CSV column mapping
//! ([`columns`]), streaming readers and writers ([`files`]), and the two ways they are
//! driven, shared by the HTTP endpoints (`imports`, `exports`) and the CLI:
//! [`import_file`] (a file on disk through the domain's import engine) and
//! [`export_stream`] (a kind's resources as a stream of bytes). The running import jobs'
//! live progress is kept in [`Jobs`].

pub mod columns;
pub mod files;

use bytes::Bytes;
use futures_util::Stream;
use salus_domain::bulk::Kind;
use salus_domain::bulk::RowError;
use salus_domain::bulk::export::Exporter;
use salus_domain::bulk::import::{self, ImportOptions, Input, Progress, Report};
use salus_domain::service::{ServiceError, Services};
use salus_kernel::TenantContext;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A bulk file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

impl Format {
    pub const ALL: &'static [&'static str] = &["csv", "json", "ndjson"];

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }

    /// The format a media type names (`text/csv`, `application/json`,
    /// `application/x-ndjson`).
    pub fn from_media_type(ct: &str) -> Option<Self> {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "text/csv" | "application/csv" => Some(Self::Csv),
            "application/json" => Some(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Self::Ndjson)
            }
            _ => None,
        }
    }

    /// The format a file name's extension names.
    pub fn from_path(path: &Path) -> Option<Self> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Self::parse)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Ndjson => "ndjson",
        }
    }

    pub fn media_type(&self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

/// Why a file cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("{0}")]
    File(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Check the start of a file (CSV header, JSON array) before an import is accepted.
pub async fn check_file(path: &Path, format: Format, kind: Kind) -> Result<(), BulkError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        files::check_start(std::io::BufReader::new(f), format, kind)
    })
    .await
    .map_err(|e| BulkError::File(format!("the file check stopped: {e}")))?
    .map_err(BulkError::File)
}

/// Rows decoded ahead of the engine.
const DECODED_AHEAD: usize = 2048;

/// Import the file at `path` through the domain's engine: a blocking thread reads and
/// decodes rows into a bounded channel, the engine keeps `options.concurrency` of them in
/// flight. `on_error` sees every row error.
pub async fn import_file(
    services: &Services,
    ctx: &TenantContext,
    path: &Path,
    format: Format,
    options: &ImportOptions,
    progress: Arc<Progress>,
    on_error: &mut (dyn FnMut(&RowError) + Send),
) -> Result<Report, BulkError> {
    let size = std::fs::metadata(path)
        .map_err(|e| BulkError::File(format!("cannot read {}: {e}", path.display())))?
        .len();
    progress
        .bytes_total
        .store(size, std::sync::atomic::Ordering::Relaxed);
    let kind = options.kind;
    let open = || {
        let (tx, rx) = tokio::sync::mpsc::channel::<Input>(DECODED_AHEAD);
        let path: PathBuf = path.to_owned();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(f) => {
                let counting = files::Counting {
                    inner: f,
                    progress: &progress,
                };
                let reader = std::io::BufReader::with_capacity(256 * 1024, counting);
                files::decode(reader, format, kind, &tx);
            }
            Err(e) => {
                let _ = tx.blocking_send(Input::Broken(format!(
                    "cannot open {}: {e}",
                    path.display()
                )));
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|input| (input, rx))
        })
    };
    Ok(import::run(services, ctx, options, open, &progress, on_error).await?)
}

/// A kind's resources in a format, as a stream of byte chunks (one per page). A failure
/// half-way ends the stream with an error (the client sees a cut-off body).
/// What an export tells the data-access log before each page's bytes go out: one entry per
/// patient exported (the first time the export reaches one), with this purpose, reason
/// and client. A failed write ends the export before the page.
#[derive(Debug, Clone)]
pub struct ExportLog {
    pub purpose: String,
    pub justification: Option<String>,
    pub break_glass: bool,
    pub client: Option<String>,
}

/// Log the patients of one exported page that the export has not logged yet.
async fn log_page(
    services: &Services,
    ctx: &TenantContext,
    kind: Kind,
    log: &ExportLog,
    seen: &mut std::collections::HashSet<Uuid>,
    items: &[salus_domain::bulk::export::ExportItem],
) -> Result<(), salus_store::StoreError> {
    let resource_type = kind.resource_type();
    let entries: Vec<salus_store::access::AccessEntry> = items
        .iter()
        .filter_map(|i| crate::access_log::patient_of(resource_type, &i.row.doc))
        .filter(|p| seen.insert(*p))
        .map(|patient| salus_store::access::AccessEntry {
            patient_id: patient,
            resource_type: resource_type.to_owned(),
            resource_id: None,
            action: salus_store::access::AccessAction::Export,
            purpose: log.purpose.clone(),
            justification: log.justification.clone(),
            break_glass: log.break_glass,
            client: log.client.clone(),
        })
        .collect();
    services.store.log_access(ctx, entries).await
}

pub fn export_stream(
    services: Services,
    ctx: TenantContext,
    kind: Kind,
    format: Format,
    log: ExportLog,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    enum Stage {
        Start,
        Pages,
        Done,
    }
    let logger = (
        services.clone(),
        ctx.clone(),
        log,
        std::collections::HashSet::new(),
    );
    let state = (
        Exporter::new(services, ctx, kind),
        files::Encoder::new(format, kind),
        Stage::Start,
        logger,
    );
    futures_util::stream::unfold(
        state,
        move |(mut exporter, mut encoder, stage, mut logger)| async move {
            match stage {
                Stage::Start => {
                    let head = encoder.start();
                    Some((
                        Ok(Bytes::from(head)),
                        (exporter, encoder, Stage::Pages, logger),
                    ))
                }
                Stage::Pages => match exporter.next_page().await {
                    Ok(Some(items)) => {
                        let (services, ctx, log, seen) = &mut logger;
                        if let Err(e) = log_page(services, ctx, kind, log, seen, &items).await {
                            tracing::error!(error = %e, "export stopped: the data-access log cannot be written");
                            return Some((
                                Err(std::io::Error::other(
                                    "the export stopped: the data-access log cannot be written",
                                )),
                                (exporter, encoder, Stage::Done, logger),
                            ));
                        }
                        let chunk = encoder.page(&items);
                        Some((
                            Ok(Bytes::from(chunk)),
                            (exporter, encoder, Stage::Pages, logger),
                        ))
                    }
                    Ok(None) => {
                        let tail = encoder.finish();
                        Some((
                            Ok(Bytes::from(tail)),
                            (exporter, encoder, Stage::Done, logger),
                        ))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "export stopped");
                        Some((
                            Err(std::io::Error::other(format!("the export stopped: {e}"))),
                            (exporter, encoder, Stage::Done, logger),
                        ))
                    }
                },
                Stage::Done => None,
            }
        },
    )
}

/// The live progress of the import jobs this server is running.
#[derive(Default)]
pub struct Jobs {
    live: Mutex<HashMap<Uuid, Arc<Progress>>>,
}

impl Jobs {
    pub fn insert(&self, id: Uuid, progress: Arc<Progress>) {
        if let Ok(mut m) = self.live.lock() {
            m.insert(id, progress);
        }
    }

    pub fn remove(&self, id: Uuid) {
        if let Ok(mut m) = self.live.lock() {
            m.remove(&id);
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Progress>> {
        self.live.lock().ok().and_then(|m| m.get(&id).cloned())
    }
}
