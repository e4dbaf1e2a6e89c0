//! `salus import --kind fhir`: FHIR R4 files into a tenant, against the data directory or
//! `--database-url` directly, as the tenant's system actor, through the same transaction
//! code as `POST /fhir/R4` ([`salus_api::fhir::bundle::run_bundle`]): no side door.
//!
//! - A `.json` file is one `transaction` or `batch` Bundle (as `salus synth` writes them),
//!   posted as it is.
//! - A `.ndjson` file is one resource a line (the Bulk Data form), read as a stream and
//!   sent `--batch` lines (500) at a time as one transaction: a resource with an `id` is a
//!   `PUT Type/id` (kept under its id), except for the types whose ids Salus mints (its
//!   aggregates': Patient, Observation, Condition, AllergyIntolerance, Encounter,
//!   Procedure): those are creates (a Patient's conditional on
//!   its first identifier), and later references to `Type/<old id>` are rewritten to the
//!   id it got. A transaction that fails is sent again as a batch, so the good lines land
//!   and each bad one is reported with its file and line.
//! - A directory: its `.json` and `.ndjson` files, `Patient.ndjson` first, then
//!   `Organization.ndjson`, then `Practitioner.ndjson` and `Location.ndjson`, then
//!   `Encounter.ndjson`, then the other minted types' files, then the rest.
//!
//! Shows a progress bar (bytes) on stderr, ends with a summary (resources, per type, the
//! errors as `file:line: reason`); exits 0 when every resource was imported, 1 when any
//! failed, 2 on a usage error.

use crate::bulk::{ImportArgs, peak_rss_mib};
use crate::config::Settings;
use crate::server;
use anyhow::Context;
use axum::http::HeaderMap;
use indicatif::{ProgressBar, ProgressStyle};
use salus_api::AppState;
use salus_api::auth::Actor;
use salus_api::fhir::FhirError;
use salus_api::fhir::bundle::run_bundle;
use salus_api::metrics::Metrics;
use salus_domain::service::Services;
use salus_kernel::SystemClock;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncBufReadExt;

/// NDJSON lines per transaction.
pub const DEFAULT_BATCH: usize = 500;

/// The base URL the importer's bundles are read against (full URLs are not this server's).
const BASE: &str = "urn:salus-import";

/// One resource (or file) that could not be imported.
#[derive(Debug, Clone)]
pub struct ImportError {
    pub file: String,
    /// `line N` of an NDJSON file, `entry N` of a Bundle, or empty for the whole file.
    pub at: String,
    pub reason: String,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.at, self.reason)
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub resources: u64,
    pub by_type: BTreeMap<String, u64>,
    pub errors: Vec<ImportError>,
}

/// The files a path names: itself, or a directory's `.json` and `.ndjson` files
/// (`Patient.ndjson` first, so that references to patients can follow them).
pub fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(extension(p).as_deref(), Some("json" | "ndjson")))
        .collect();
    // Patients and Organizations (which Locations name) first, then Practitioners and
    // Locations, then Encounters (which name all of them, and which what is recorded in
    // them names), then the other types whose ids Salus mints, then the rest, so that
    // references to minted ids can be rewritten as they follow.
    files.sort_by_key(|p| {
        let stem = p.file_stem().map(|n| n.to_string_lossy().into_owned());
        let minted =
            p.extension().is_some_and(|e| e == "ndjson") && stem.as_deref().is_some_and(mints_ids);
        let rank = match stem.as_deref() {
            Some("Patient") if minted => 0,
            Some("Organization") if minted => 1,
            Some("Practitioner" | "Location") if minted => 2,
            Some("Encounter") if minted => 3,
            _ if minted => 4,
            _ => 5,
        };
        (rank, p.clone())
    });
    Ok(files)
}

/// Whether Salus mints the ids of resources of type `t` (its aggregates' types): such a
/// resource is created, not kept under its id, and references to it are rewritten.
fn mints_ids(t: &str) -> bool {
    salus_api::fhir::documents::DOMAIN_TYPES.contains(&t) && t != "AuditEvent"
}

fn extension(p: &Path) -> Option<String> {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

fn outcome_text(e: &FhirError) -> String {
    let parts: Vec<String> = e.issues.iter().map(|i| i.diagnostics.clone()).collect();
    format!("{} ({})", parts.join("; "), e.status.as_u16())
}

fn response_outcome_text(entry: &Value) -> String {
    let status = entry["response"]["status"].as_str().unwrap_or("?");
    let issues: Vec<&str> = entry["response"]["outcome"]["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect();
    if issues.is_empty() {
        status.to_owned()
    } else {
        format!("{} ({status})", issues.join("; "))
    }
}

fn is_success(entry: &Value) -> bool {
    entry["response"]["status"]
        .as_str()
        .is_some_and(|s| s.starts_with('2'))
}

/// Rewrite every `reference` that `map` knows.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    if let Some(to) = map.get(s.as_str()) {
                        *s = to.clone();
                    }
                } else {
                    rewrite_references(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_references(x, map)),
        _ => {}
    }
}

/// One NDJSON line waiting for its transaction.
struct Pending {
    line: u64,
    resource_type: String,
    /// The id in the file of a resource whose id Salus mints, to map to the id it gets.
    minted_id: Option<String>,
    entry: Value,
}

/// The transaction entry for one NDJSON resource.
fn entry_for(mut r: Value) -> Result<(String, Option<String>, Value), String> {
    let t = r
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the line is not a FHIR resource (no resourceType)")?
        .to_owned();
    let id = r.get("id").and_then(Value::as_str).map(str::to_owned);
    if t == "Patient" {
        // Salus mints patient ids: a create, found again by its identifier on a re-run.
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
        let mut request = json!({"method": "POST", "url": "Patient"});
        let first = r["identifier"].as_array().and_then(|ids| {
            ids.iter().find_map(|i| {
                Some(format!(
                    "identifier={}|{}",
                    i["system"].as_str()?,
                    i["value"].as_str()?
                ))
            })
        });
        if let Some(cond) = first {
            request["ifNoneExist"] = json!(cond);
        }
        let mut entry = json!({"resource": r, "request": request});
        if let Some(id) = &id {
            entry["fullUrl"] = json!(format!("Patient/{id}"));
        }
        return Ok((t, id, entry));
    }
    if mints_ids(&t) {
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
        let mut entry = json!({"resource": r, "request": {"method": "POST", "url": t}});
        if let Some(id) = &id {
            entry["fullUrl"] = json!(format!("{t}/{id}"));
        }
        return Ok((t, id, entry));
    }
    let request = match &id {
        Some(id) => json!({"method": "PUT", "url": format!("{t}/{id}")}),
        None => json!({"method": "POST", "url": t}),
    };
    Ok((t, None, json!({"resource": r, "request": request})))
}

/// The id a response entry names (`Type/id/_history/n`, or the resource it holds).
fn answered_id(entry: &Value) -> Option<String> {
    if let Some(l) = entry["response"]["location"].as_str() {
        let mut parts = l.split('/');
        parts.next()?;
        return parts.next().map(str::to_owned);
    }
    entry["resource"]["id"].as_str().map(str::to_owned)
}

struct Importer {
    state: AppState,
    actor: Actor,
    headers: HeaderMap,
    /// `Type/<id in the file>` → `Type/<id in Salus>`, for the types whose ids Salus mints.
    minted: HashMap<String, String>,
    summary: Summary,
    bar: ProgressBar,
}

impl Importer {
    fn fail(&mut self, file: &str, at: String, reason: String) {
        self.summary.errors.push(ImportError {
            file: file.to_owned(),
            at,
            reason,
        });
    }

    fn imported(&mut self, resource_type: &str) {
        self.summary.resources += 1;
        *self
            .summary
            .by_type
            .entry(resource_type.to_owned())
            .or_default() += 1;
    }

    fn show(&self) {
        self.bar.set_message(format!(
            "{} resources, {} failed",
            self.summary.resources,
            self.summary.errors.len()
        ));
    }

    async fn bundle_file(&mut self, path: &Path, name: &str) {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) => return self.fail(name, String::new(), format!("cannot read: {e}")),
        };
        self.bar.inc(bytes.len() as u64);
        let bundle: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return self.fail(name, String::new(), format!("not JSON: {e}")),
        };
        drop(bytes);
        let types: Vec<String> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e["resource"]["resourceType"]
                    .as_str()
                    .or_else(|| e["request"]["url"].as_str())
                    .unwrap_or("")
                    .split(['/', '?'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        match run_bundle(&self.state, &self.actor, BASE, &self.headers, &bundle).await {
            Ok(answer) => {
                let entries = answer["entry"].as_array().cloned().unwrap_or_default();
                for (i, e) in entries.iter().enumerate() {
                    if is_success(e) {
                        let t = types.get(i).cloned().unwrap_or_default();
                        self.imported(&t);
                    } else {
                        self.fail(name, format!("entry {i}"), response_outcome_text(e));
                    }
                }
            }
            Err(e) => self.fail(name, String::new(), outcome_text(&e)),
        }
        self.show();
    }

    async fn ndjson_file(&mut self, path: &Path, name: &str, batch: usize) {
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => return self.fail(name, String::new(), format!("cannot read: {e}")),
        };
        let mut lines = tokio::io::BufReader::with_capacity(1 << 20, file).lines();
        let mut pending: Vec<Pending> = Vec::with_capacity(batch);
        let mut line = 0u64;
        loop {
            let text = match lines.next_line().await {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => {
                    self.fail(name, format!("{}", line + 1), format!("cannot read: {e}"));
                    break;
                }
            };
            line += 1;
            self.bar.inc(text.len() as u64 + 1);
            if text.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(entry_for);
            match parsed {
                Ok((resource_type, minted_id, entry)) => pending.push(Pending {
                    line,
                    resource_type,
                    minted_id,
                    entry,
                }),
                Err(reason) => self.fail(name, format!("{line}"), reason),
            }
            if pending.len() >= batch {
                self.flush(name, std::mem::take(&mut pending)).await;
            }
        }
        if !pending.is_empty() {
            self.flush(name, pending).await;
        }
    }

    /// Send the pending lines as one transaction; when it fails, as a batch.
    async fn flush(&mut self, name: &str, mut pending: Vec<Pending>) {
        for p in &mut pending {
            rewrite_references(&mut p.entry["resource"], &self.minted);
        }
        let entries: Vec<Value> = pending.iter().map(|p| p.entry.clone()).collect();
        let mut bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let answer = match run_bundle(&self.state, &self.actor, BASE, &self.headers, &bundle).await
        {
            Ok(a) => a,
            Err(_) => {
                bundle["type"] = json!("batch");
                match run_bundle(&self.state, &self.actor, BASE, &self.headers, &bundle).await {
                    Ok(a) => a,
                    Err(e) => {
                        let reason = outcome_text(&e);
                        for p in &pending {
                            self.fail(name, format!("{}", p.line), reason.clone());
                        }
                        self.show();
                        return;
                    }
                }
            }
        };
        let answered = answer["entry"].as_array().cloned().unwrap_or_default();
        for (p, e) in pending.iter().zip(answered.iter()) {
            if !is_success(e) {
                self.fail(name, format!("{}", p.line), response_outcome_text(e));
                continue;
            }
            if let (Some(old), Some(new)) = (&p.minted_id, answered_id(e)) {
                let t = &p.resource_type;
                self.minted
                    .insert(format!("{t}/{old}"), format!("{t}/{new}"));
            }
            self.imported(&p.resource_type);
        }
        self.show();
    }
}

pub async fn run(settings: &Settings, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run || args.all_or_nothing || args.format.is_some() || args.file.as_os_str() == "-"
    {
        eprintln!(
            "error: --kind fhir takes a file or directory (.json Bundles, .ndjson resources); --dry-run, --all-or-nothing, --format and standard input are for the other kinds"
        );
        return Ok(ExitCode::from(2));
    }
    if args.batch == 0 || args.batch > salus_api::fhir::bundle::MAX_ENTRIES {
        eprintln!(
            "error: --batch is from 1 to {}",
            salus_api::fhir::bundle::MAX_ENTRIES
        );
        return Ok(ExitCode::from(2));
    }
    let files = files_of(&args.file)?;
    for f in &files {
        if !matches!(extension(f).as_deref(), Some("json" | "ndjson")) {
            eprintln!(
                "error: {} is neither .json (a Bundle) nor .ndjson",
                f.display()
            );
            return Ok(ExitCode::from(2));
        }
    }
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .collect::<Result<Vec<u64>, _>>()
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .iter()
        .sum();
    let store = server::open_existing_store(settings).await?;
    let services = Services::new(store, Arc::new(SystemClock));
    let tenant = server::find_tenant(services.store.as_ref(), &args.tenant).await?;
    let ctx = server::system_ctx(tenant.id);
    salus_api::fhir::documents::register_indexer();
    let auth = server::authenticator(settings).await?;
    let state = AppState::new(
        services.clone(),
        Arc::new(auth),
        Metrics::new(),
        server::api_config(settings),
    );
    let actor = Actor::system(ctx, &format!("salus-cli/{}", env!("CARGO_PKG_VERSION")));
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    ) {
        bar.set_style(style);
    }
    let started = Instant::now();
    let mut importer = Importer {
        state,
        actor,
        headers: HeaderMap::new(),
        minted: HashMap::new(),
        summary: Summary::default(),
        bar: bar.clone(),
    };
    for f in &files {
        let name = f.display().to_string();
        if extension(f).as_deref() == Some("ndjson") {
            importer.ndjson_file(f, &name, args.batch).await;
        } else {
            importer.bundle_file(f, &name).await;
        }
    }
    bar.finish_and_clear();
    let summary = importer.summary;
    services.store.shutdown().await;
    let secs = started.elapsed().as_secs_f64();
    if let Some(path) = &args.errors {
        let mut w = csv::Writer::from_path(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        w.write_record(["file", "at", "reason"])?;
        for e in &summary.errors {
            w.write_record([&e.file, &e.at, &e.reason])?;
        }
        w.flush()?;
    }
    for e in summary.errors.iter().take(10) {
        eprintln!("{e}");
    }
    if summary.errors.len() > 10 {
        eprintln!(
            "... {} more errors{}",
            summary.errors.len() - 10,
            if args.errors.is_some() {
                ""
            } else {
                " (write them all with --errors FILE)"
            }
        );
    }
    for (t, n) in &summary.by_type {
        println!("{t:<28} {n:>9}");
    }
    println!(
        "imported fhir {}: {} resources of {} types from {} files, {} failed in {:.1} s ({:.0} resources/s{})",
        args.file.display(),
        summary.resources,
        summary.by_type.len(),
        files.len(),
        summary.errors.len(),
        secs,
        summary.resources as f64 / secs.max(0.001),
        peak_rss_mib()
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default(),
    );
    Ok(if summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_become_transaction_entries() {
        let (t, old, e) = entry_for(json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"value": "x"}, {"system": "urn:mrn", "value": "7"}]}))
        .unwrap();
        assert_eq!((t.as_str(), old.as_deref()), ("Patient", Some("p1")));
        assert_eq!(e["request"]["method"], "POST");
        assert_eq!(e["request"]["ifNoneExist"], "identifier=urn:mrn|7");
        assert!(e["resource"].get("id").is_none());
        let (_, _, e) = entry_for(json!({"resourceType": "Immunization", "id": "i1"})).unwrap();
        assert_eq!(e["request"]["method"], "PUT");
        assert_eq!(e["request"]["url"], "Immunization/i1");
        let (_, _, e) = entry_for(json!({"resourceType": "Immunization"})).unwrap();
        assert_eq!(e["request"]["method"], "POST");
        assert!(entry_for(json!({"id": "x"})).is_err());
        assert!(entry_for(json!([1])).is_err());
    }

    #[test]
    fn references_to_imported_patients_follow_their_new_ids() {
        let map = HashMap::from([("Patient/a".to_owned(), "Patient/b".to_owned())]);
        let mut r =
            json!({"subject": {"reference": "Patient/a"}, "x": [{"reference": "Patient/c"}]});
        rewrite_references(&mut r, &map);
        assert_eq!(r["subject"]["reference"], "Patient/b");
        assert_eq!(r["x"][0]["reference"], "Patient/c");
        assert_eq!(
            answered_id(&json!({"response": {"location": "Patient/9/_history/2"}})),
            Some("9".into())
        );
    }
}
