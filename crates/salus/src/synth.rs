//! `salus synth`: write a synthetic population ([`salus_fhir::synth`]) to a directory, as
//! FHIR transaction Bundles or Bulk Data NDJSON, and print its counts by resource type.
//!
//! Layout of `--out DIR` (which must be empty or not exist yet):
//! - `bundles` (default): `patient-0000001.json`, … one `transaction` Bundle per patient,
//!   each a request body for `POST /fhir/R4` as it stands;
//! - `ndjson`: `<ResourceType>.ndjson` (`Patient.ndjson`, `Observation.ndjson`, …), one
//!   resource a line with its `id`, references as `Type/id` (the Bulk Data export form).
//!
//! The same `--patients`, `--seed` and `--as-of` write the same bytes.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use salus_fhir::synth::{self, Config, Summary};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Patients to generate.
    #[arg(long)]
    pub patients: u64,
    /// The seed: the same seed (and --as-of) writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory to write into (created; must be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// bundles: one transaction Bundle per patient (patient-NNNNNNN.json);
    /// ndjson: one <ResourceType>.ndjson file per resource type (Bulk Data form).
    #[arg(long, value_enum, default_value_t = SynthFormat::Bundles)]
    pub format: SynthFormat,
    /// The population's "today" (YYYY-MM-DD): no event lies after it [default: 2025-01-01].
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// The id of a Salus clinician who sees every patient (each Encounter's participant,
    /// each Procedure's performer); without it each record holds its patient's own general
    /// practitioner (a Practitioner entry).
    #[arg(long)]
    pub practitioner: Option<uuid::Uuid>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SynthFormat {
    Bundles,
    Ndjson,
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let config = Config {
        seed: args.seed,
        patients: args.patients,
        as_of: args.as_of.unwrap_or_else(synth::default_as_of),
        practitioner: args.practitioner,
    };
    prepare(&args.out)?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.patients)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} patients",
    ) {
        bar.set_style(style);
    }
    let started = Instant::now();
    let summary = match args.format {
        SynthFormat::Bundles => write_bundles(&config, &args.out, &bar)?,
        SynthFormat::Ndjson => write_ndjson(&config, &args.out, &bar)?,
    };
    bar.finish_and_clear();
    let took = started.elapsed();
    println!("{summary}");
    println!(
        "{} patients, {} resources written to {} in {:.1} s (seed {}, as of {})",
        summary.patients,
        summary.total(),
        args.out.display(),
        took.as_secs_f64(),
        config.seed,
        config.as_of
    );
    Ok(ExitCode::SUCCESS)
}

/// Create `dir`, or accept it if it exists and is empty: files of an earlier run left
/// beside these would read as part of this population.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if entries.next().is_some() {
        anyhow::bail!(
            "{} is not empty: give a new or empty directory",
            dir.display()
        );
    }
    Ok(())
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn write_bundles(config: &Config, out: &Path, bar: &ProgressBar) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for record in synth::population(config) {
        summary.add(&record);
        let path = out.join(format!("patient-{:07}.json", record.index + 1));
        let mut w = create(&path)?;
        serde_json::to_writer(&mut w, &record.transaction())?;
        w.write_all(b"\n")?;
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        bar.inc(1);
    }
    Ok(summary)
}

fn write_ndjson(config: &Config, out: &Path, bar: &ProgressBar) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut files: BTreeMap<&'static str, BufWriter<File>> = BTreeMap::new();
    for record in synth::population(config) {
        summary.add(&record);
        for (resource_type, resource) in record.bulk_resources() {
            let w = match files.entry(resource_type) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(create(&out.join(format!("{resource_type}.ndjson")))?)
                }
            };
            serde_json::to_writer(&mut *w, &resource)?;
            w.write_all(b"\n")?;
        }
        bar.inc(1);
    }
    for (resource_type, mut w) in files {
        w.flush()
            .with_context(|| format!("cannot write {resource_type}.ndjson"))?;
    }
    Ok(summary)
}
