//! The import engine: decoded rows in, domain commands out, through
//! [`Services`] like any API request, so every row gets its events, projection, search
//! rows, unique keys and hash chain. Up to `concurrency` rows are in flight at once, which
//! lets the store's group commit put hundreds of them in one transaction; the bound keeps
//! memory flat whatever the file's size.
//!
//! Natural keys make a re-run idempotent: a patient is found by any of its identifiers
//! (the `patient.identifier` unique key), else by its `id`; interactions, encounters and
//! observations by their `id`. A row's `id` names the record with that id in the tenant
//! when there is one (a re-import into the same tenant); otherwise the record is created
//! under [`derived_id`](super::derived_id), which a later run finds again. A row whose
//! record exists is compared with it: the same → `unchanged`; a patient that differs is
//! updated (details, lifecycle, death, merge); a clinical entry that differs is refused
//! (corrections are amendments, never silent overwrites).
//!
//! Every command is first decided on a copy of the state (the aggregates are pure), so a
//! row is written only when all of its commands pass; a dry run stops there.

use super::records::{
    EncounterRecord, InteractionRecord, ObservationRecord, PatientRecord, PatientRef, Record,
};
use super::{Counts, Kind, RowError, derived_id};
use crate::clinical::encounter::{
    Encounter, EncounterCommand, EncounterInput, EncounterStatus, ScheduleFacts,
};
use crate::clinical::interaction::{
    AmendContext, Interaction, InteractionAmendment, InteractionCommand, InteractionInput,
    InteractionKind, InteractionStatus, RecordContext, parse_instant,
};
use crate::clinical::observation::{
    Observation, ObservationCommand, ObservationInput, ObservationStatus, RecordFacts,
};
use crate::registry::patient::{
    IDENTIFIER_SCOPE, PatientInput, TRANSITIONS as PATIENT_TRANSITIONS, parse_date,
};
use crate::registry::{Patient, PatientCommand, PatientDetails, PatientStatus};
use crate::service::{Current, Projected, ServiceError, Services};
use crate::staff::place::{DEPARTMENT_CODE_SCOPE, Department};
use crate::staff::{Clinician, ClinicianStatus};
use chrono::{DateTime, NaiveDate, Utc};
use futures_util::{Stream, StreamExt};
use salus_kernel::{Aggregate, DomainError, TenantContext};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// What the decoder hands over: one row (its number and its record, or why it could not be
/// read), or the news that the file cannot be read on (the import stops there).
#[derive(Debug)]
pub enum Input {
    Row(u64, Result<Record, RowError>),
    Broken(String),
}

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub kind: Kind,
    /// Check every row against the current data and report, writing nothing.
    pub dry_run: bool,
    /// Write nothing unless every row passes: a validation pass over the whole file first.
    pub all_or_nothing: bool,
    /// Rows in flight at once.
    pub concurrency: usize,
    /// Error entries kept in the report (the rest are counted).
    pub max_errors: usize,
}

impl ImportOptions {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            dry_run: false,
            all_or_nothing: false,
            concurrency: DEFAULT_CONCURRENCY,
            max_errors: MAX_REPORTED_ERRORS,
        }
    }
}

/// Rows in flight by default: enough to fill the group commit's batches.
pub const DEFAULT_CONCURRENCY: usize = 512;
/// Error entries a report keeps.
pub const MAX_REPORTED_ERRORS: usize = 1000;

/// Live counters of a running import, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: AtomicU64,
    pub created: AtomicU64,
    pub updated: AtomicU64,
    pub unchanged: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes of the file read so far (kept by the decoder).
    pub bytes_read: AtomicU64,
    /// The file's size when known.
    pub bytes_total: AtomicU64,
    /// The all-or-nothing validation pass is running.
    pub validating: AtomicBool,
}

impl Progress {
    pub fn counts(&self) -> Counts {
        Counts {
            rows: self.rows.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            updated: self.updated.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn reset_counts(&self) {
        for c in [
            &self.rows,
            &self.created,
            &self.updated,
            &self.unchanged,
            &self.failed,
            &self.bytes_read,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub counts: Counts,
    /// The first errors, in row order.
    pub errors: Vec<RowError>,
    /// Errors beyond those kept.
    pub errors_omitted: u64,
    /// Why the import as a whole failed or stopped, when it did.
    pub failure: Option<String>,
}

impl Report {
    /// No row failed and the import ran to its end.
    pub fn is_clean(&self) -> bool {
        self.failure.is_none() && self.counts.failed == 0
    }
}

/// What a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

/// Why a row did not complete.
#[derive(Debug)]
enum RowFail {
    Row(RowError),
    /// The store cannot go on (unavailable, shutting down, corrupt): the import stops.
    Fatal(String),
    /// The record to create exists already (under this id): take the update path.
    Exists(Uuid),
    /// The file cannot be read on.
    Broken(String),
}

fn fail(row: u64, e: ServiceError) -> RowFail {
    match e {
        ServiceError::Domain(d) => RowFail::Row(RowError::from_domain(row, &d)),
        ServiceError::NotFound { resource_type, id } => RowFail::Row(RowError::new(
            row,
            None,
            format!("{resource_type} {id} not found"),
        )),
        ServiceError::Precondition { .. } => RowFail::Row(RowError::new(
            row,
            None,
            "the record changed while it was imported; run the import again",
        )),
        ServiceError::Duplicate {
            scope,
            value,
            owner,
        } => RowFail::Row(RowError::new(
            row,
            None,
            format!("{scope} '{value}' is already used by {owner}"),
        )),
        ServiceError::IdempotencyKeyTaken => RowFail::Row(RowError::new(
            row,
            None,
            "the record is being written concurrently",
        )),
        ServiceError::IdTaken => RowFail::Row(RowError::new(row, None, "the id is taken")),
        ServiceError::Corrupt(m) => {
            RowFail::Fatal(format!("stored data failed an integrity check: {m}"))
        }
        ServiceError::Store(s) => RowFail::Fatal(s.to_string()),
        // An import commits row by row, never in groups.
        ServiceError::InGroup { source, .. } => fail(row, *source),
    }
}

fn invalid(row: u64, field: &str, reason: impl Into<String>) -> RowFail {
    RowFail::Row(RowError::new(row, Some(field), reason))
}

fn domain(row: u64, e: DomainError) -> RowFail {
    RowFail::Row(RowError::from_domain(row, &e))
}

/// Decide `commands` one after the other from `state`, purely; the state they lead to and
/// whether any produced an event.
fn fold<A: Aggregate>(
    mut state: Option<A>,
    commands: &[A::Command],
) -> Result<(Option<A>, bool), DomainError> {
    let mut changed = false;
    for c in commands {
        let events = A::decide(state.as_ref(), c)?;
        changed |= !events.is_empty();
        for e in &events {
            state = A::evolve(state, e);
        }
    }
    Ok((state, changed))
}

/// A clinician as encounters need it: its id and whether it is active.
type ClinicianFact = Option<(Uuid, bool)>;
/// How a row names a clinician: its id, its credential.
type ClinicianKey = (Option<Uuid>, Option<String>);

/// A department as encounters need it: its id and whether it is active.
type DepartmentFact = Option<(Uuid, bool)>;
/// How a row names a department: its id, its code.
type DepartmentKey = (Option<Uuid>, Option<String>);

/// Runs the rows of one import in one tenant. Shared by the rows' tasks.
pub struct Importer {
    services: Services,
    ctx: TenantContext,
    dry_run: bool,
    /// The tenant's active outcome codes, read once (interactions).
    outcomes: Vec<String>,
    /// Clinicians looked up by id or credential (encounters), kept for the import.
    clinicians: Mutex<HashMap<ClinicianKey, ClinicianFact>>,
    /// Departments looked up by id or code (encounters), kept for the import.
    departments: Mutex<HashMap<DepartmentKey, DepartmentFact>>,
}

/// Run an import. `open` yields the rows of the file; it is called twice under
/// all-or-nothing (a validation pass, then the import), once otherwise. `on_error` sees
/// every row error as it happens (the report keeps only the first `max_errors`).
pub async fn run<S, F>(
    services: &Services,
    ctx: &TenantContext,
    options: &ImportOptions,
    mut open: F,
    progress: &Progress,
    on_error: &mut (dyn FnMut(&RowError) + Send),
) -> Result<Report, ServiceError>
where
    F: FnMut() -> S,
    S: Stream<Item = Input>,
{
    let outcomes = if options.kind == Kind::Interactions {
        crate::clinical::outcome::active_codes(services, ctx).await?
    } else {
        Vec::new()
    };
    let importer = |dry_run: bool| {
        Arc::new(Importer {
            services: services.clone(),
            ctx: ctx.clone(),
            dry_run,
            outcomes: outcomes.clone(),
            clinicians: Mutex::new(HashMap::new()),
            departments: Mutex::new(HashMap::new()),
        })
    };
    if options.all_or_nothing && !options.dry_run {
        progress.validating.store(true, Ordering::Relaxed);
        let check = pass(importer(true), open(), options, false, progress, on_error).await;
        progress.validating.store(false, Ordering::Relaxed);
        if !check.is_clean() {
            let mut report = check;
            if report.failure.is_none() {
                report.failure = Some(format!(
                    "{} of {} rows failed validation; nothing was imported (all-or-nothing)",
                    report.counts.failed, report.counts.rows
                ));
            }
            return Ok(report);
        }
        progress.reset_counts();
    }
    Ok(pass(
        importer(options.dry_run),
        open(),
        options,
        options.all_or_nothing,
        progress,
        on_error,
    )
    .await)
}

/// One pass over the rows. Each row runs as its own task, so that rows are decided and
/// encoded on every core while the store's writer works.
async fn pass<S: Stream<Item = Input>>(
    importer: Arc<Importer>,
    rows: S,
    options: &ImportOptions,
    stop_on_failure: bool,
    progress: &Progress,
    on_error: &mut (dyn FnMut(&RowError) + Send),
) -> Report {
    let stop = AtomicBool::new(false);
    let mut report = Report::default();
    let results = rows
        .take_while(|_| std::future::ready(!stop.load(Ordering::Relaxed)))
        .map(|input| {
            let importer = importer.clone();
            async move {
                let row = match input {
                    Input::Row(row, Ok(r)) => (row, r),
                    Input::Row(_, Err(e)) => return Err(RowFail::Row(e)),
                    Input::Broken(m) => return Err(RowFail::Broken(m)),
                };
                tokio::spawn(async move { importer.import(row.0, row.1).await })
                    .await
                    .unwrap_or_else(|e| Err(RowFail::Fatal(format!("a row's task failed: {e}"))))
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    futures_util::pin_mut!(results);
    while let Some(result) = results.next().await {
        if let Err(RowFail::Broken(m)) = result {
            stop.store(true, Ordering::Relaxed);
            report.failure.get_or_insert(m);
            continue;
        }
        report.counts.rows += 1;
        progress.rows.fetch_add(1, Ordering::Relaxed);
        let counter = match result {
            Ok(Change::Created) => {
                report.counts.created += 1;
                &progress.created
            }
            Ok(Change::Updated) => {
                report.counts.updated += 1;
                &progress.updated
            }
            Ok(Change::Unchanged) => {
                report.counts.unchanged += 1;
                &progress.unchanged
            }
            Err(RowFail::Row(e)) => {
                report.counts.failed += 1;
                on_error(&e);
                if stop_on_failure && report.failure.is_none() {
                    stop.store(true, Ordering::Relaxed);
                    report.failure = Some(format!(
                        "row {} failed while writing after the whole file had passed validation; the import stopped there (rows already written stay)",
                        e.row
                    ));
                }
                if report.errors.len() < options.max_errors {
                    report.errors.push(e);
                } else {
                    report.errors_omitted += 1;
                }
                &progress.failed
            }
            Err(RowFail::Exists(id)) => {
                // Resolved inside each kind's path; counted as a failure if it escapes.
                report.counts.failed += 1;
                let e = RowError::new(0, None, format!("record {id} exists already"));
                on_error(&e);
                &progress.failed
            }
            Err(RowFail::Fatal(m) | RowFail::Broken(m)) => {
                report.counts.failed += 1;
                stop.store(true, Ordering::Relaxed);
                report.failure.get_or_insert(m);
                &progress.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    report.errors.sort_by_key(|e| e.row);
    report
}

impl Importer {
    async fn import(&self, row: u64, record: Record) -> Result<Change, RowFail> {
        match record {
            Record::Patient(r) => self.patient(row, *r).await,
            Record::Interaction(r) => self.interaction(row, *r).await,
            Record::Encounter(r) => self.encounter(row, *r).await,
            Record::Observation(r) => self.observation(row, *r).await,
        }
    }

    /// Run `commands` against `id` (creating it when `current` is none); in a dry run, only
    /// decide them. Every command is decided on a copy first.
    async fn apply<A: Projected>(
        &self,
        row: u64,
        id: Uuid,
        current: Option<A>,
        commands: Vec<A::Command>,
    ) -> Result<Change, RowFail>
    where
        A::Command: Clone + Send + 'static,
    {
        let creating = current.is_none();
        // A lone create is decided by the write itself (and always has an event); a longer
        // plan is decided whole first, so that no row is written half.
        if self.dry_run || !creating || commands.len() > 1 {
            let (_, changed) = fold::<A>(current, &commands).map_err(|e| domain(row, e))?;
            if !changed {
                return Ok(Change::Unchanged);
            }
        }
        if !self.dry_run {
            for (i, command) in commands.into_iter().enumerate() {
                let make = move |_: Option<&A>, _: DateTime<Utc>| Ok(command);
                let result = if i == 0 && creating {
                    self.services
                        .create::<A, _>(&self.ctx, id, make, None)
                        .await
                } else {
                    self.services
                        .execute::<A, _>(&self.ctx, id, None, make, None)
                        .await
                };
                match result {
                    Ok(_) => {}
                    Err(ServiceError::Duplicate { owner, .. }) if i == 0 && creating => {
                        return Err(RowFail::Exists(owner));
                    }
                    Err(ServiceError::Precondition { .. }) if i == 0 && creating => {
                        return Err(RowFail::Exists(id));
                    }
                    Err(e) => return Err(fail(row, e)),
                }
            }
        }
        Ok(if creating {
            Change::Created
        } else {
            Change::Updated
        })
    }

    /// The record a row's `id` names: the tenant's record with that id, else the one an
    /// earlier import created under the derived id. `Err(new id)` when there is none.
    async fn find<A: Projected>(
        &self,
        row: u64,
        source: Option<Uuid>,
    ) -> Result<Result<Current<A>, Uuid>, RowFail> {
        let Some(src) = source else {
            return Ok(Err(Uuid::now_v7()));
        };
        if let Some(c) = self
            .services
            .load::<A>(&self.ctx, src)
            .await
            .map_err(|e| fail(row, e))?
        {
            return Ok(Ok(c));
        }
        let derived = derived_id(self.ctx.tenant, A::RESOURCE_TYPE, src);
        match self
            .services
            .load::<A>(&self.ctx, derived)
            .await
            .map_err(|e| fail(row, e))?
        {
            Some(c) => Ok(Ok(c)),
            None => Ok(Err(derived)),
        }
    }

    async fn load<A: Projected>(&self, row: u64, id: Uuid) -> Result<Option<Current<A>>, RowFail> {
        self.services
            .load::<A>(&self.ctx, id)
            .await
            .map_err(|e| fail(row, e))
    }

    // ---- patients ----

    async fn patient(&self, row: u64, record: PatientRecord) -> Result<Change, RowFail> {
        let today = self.services.now().date_naive();
        let target = PatientTarget::parse(row, record, today)?;
        let survivor = match target.merged_into {
            Some(s) => Some(self.resolve_survivor(row, s).await?),
            None => None,
        };
        // A re-import into the same tenant names the record by its id; an earlier import
        // into this one created it under the derived id.
        let mut existing: Option<Current<Patient>> = None;
        let mut new_id = Uuid::now_v7();
        if let Some(src) = target.id {
            match self.find::<Patient>(row, Some(src)).await? {
                Ok(c) => existing = Some(c),
                Err(id) => new_id = id,
            }
        }
        if existing.is_none() && self.dry_run {
            // A real run learns of an existing identifier from the store's refusal.
            for i in &target.details.identifiers {
                let key = format!("{}|{}", i.system, i.value);
                if let Some(owner) = self
                    .services
                    .store
                    .unique_owner(&self.ctx, IDENTIFIER_SCOPE, &key)
                    .await
                    .map_err(|e| fail(row, e.into()))?
                {
                    existing = self.load::<Patient>(row, owner).await?;
                    break;
                }
            }
        }
        let current = match existing {
            Some(c) => c,
            None => {
                let commands = target.commands(row, None, new_id, survivor, today)?;
                match self.apply::<Patient>(row, new_id, None, commands).await {
                    Err(RowFail::Exists(owner)) => {
                        self.load::<Patient>(row, owner).await?.ok_or_else(|| {
                            RowFail::Row(RowError::new(
                                row,
                                None,
                                "the patient's identifier is taken by a record that cannot be read",
                            ))
                        })?
                    }
                    other => return other,
                }
            }
        };
        let id = current.row.id;
        let commands = target.commands(row, Some(&current.state), id, survivor, today)?;
        self.apply::<Patient>(row, id, Some(current.state), commands)
            .await
    }

    /// The surviving patient of a merge, by its id in the file's tenant.
    async fn resolve_survivor(&self, row: u64, source: Uuid) -> Result<Uuid, RowFail> {
        match self.find::<Patient>(row, Some(source)).await? {
            Ok(c) if c.state.merged_into.is_none() => Ok(c.row.id),
            Ok(c) => Err(invalid(
                row,
                "merged_into",
                format!("the surviving patient {} is itself merged", c.row.id),
            )),
            Err(_) => Err(invalid(
                row,
                "merged_into",
                format!(
                    "the surviving patient {source} is not in this tenant (yet); import it, then run this import again to merge"
                ),
            )),
        }
    }

    /// The patient a clinical entry names: by id (or the id an import derived from it),
    /// else by identifier `system|value`.
    async fn resolve_patient(&self, row: u64, r: PatientRef) -> Result<Current<Patient>, RowFail> {
        if let Some(src) = r.id
            && let Ok(c) = self.find::<Patient>(row, Some(src)).await?
        {
            return Ok(c);
        }
        if let Some(ident) = r
            .identifier
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((system, value)) = ident.split_once('|') else {
                return Err(invalid(
                    row,
                    "patient_identifier",
                    format!("patient_identifier '{ident}' is not system|value"),
                ));
            };
            let key = format!("{}|{}", system.trim(), value.trim());
            if let Some(owner) = self
                .services
                .store
                .unique_owner(&self.ctx, IDENTIFIER_SCOPE, &key)
                .await
                .map_err(|e| fail(row, e.into()))?
                && let Some(c) = self.load::<Patient>(row, owner).await?
            {
                return Ok(c);
            }
            return Err(invalid(
                row,
                "patient_identifier",
                format!("no patient with identifier '{key}' in this tenant"),
            ));
        }
        Err(match r.id {
            Some(src) => invalid(
                row,
                "patient_id",
                format!(
                    "no patient {src} in this tenant (import the patients first, or give patient_identifier)"
                ),
            ),
            None => invalid(row, "patient_id", "give patient_id or patient_identifier"),
        })
    }

    /// The encounter a clinical entry names (by id or derived id); it must be the patient's.
    async fn resolve_encounter(
        &self,
        row: u64,
        source: Option<Uuid>,
        patient: Uuid,
    ) -> Result<Option<Uuid>, RowFail> {
        let Some(src) = source else {
            return Ok(None);
        };
        match self.find::<Encounter>(row, Some(src)).await? {
            Ok(e) if e.state.patient_id == patient => Ok(Some(e.row.id)),
            Ok(e) => Err(invalid(
                row,
                "encounter_id",
                format!("encounter {} belongs to another patient", e.row.id),
            )),
            Err(_) => Err(invalid(
                row,
                "encounter_id",
                format!("no encounter {src} in this tenant (import the encounters first)"),
            )),
        }
    }

    // ---- interactions ----

    async fn interaction(&self, row: u64, r: InteractionRecord) -> Result<Change, RowFail> {
        let patient = self.resolve_patient(row, r.patient()).await?;
        let patient_id = patient.row.id;
        let encounter_id = self
            .resolve_encounter(row, r.encounter_id, patient_id)
            .await?;
        let target = match r.status.as_deref().map(str::trim) {
            None | Some("") => InteractionStatus::Final,
            Some(s) => InteractionStatus::parse(s).ok_or_else(|| {
                invalid(
                    row,
                    "status",
                    format!(
                        "status '{s}' is not one of {}",
                        InteractionStatus::ALL.join(", ")
                    ),
                )
            })?,
        };
        let reason = r.status_reason.clone().unwrap_or_default();
        let now = self.services.now();
        let (id, existing) = match self.find::<Interaction>(row, r.id).await? {
            Ok(c) => (c.row.id, Some(c.state)),
            Err(id) => (id, None),
        };
        let mut commands = Vec::new();
        let from = match &existing {
            Some(e) => {
                let mut differs = Vec::new();
                if e.patient_id != patient_id {
                    differs.push("patient_id");
                }
                if encounter_id != e.encounter_id {
                    differs.push("encounter_id");
                }
                unchanged_unless("interaction", row, e.id, &differs)?;
                e.status
            }
            None => {
                commands.push(InteractionCommand::Record {
                    id,
                    input: InteractionInput {
                        patient_id,
                        kind: r.kind.clone(),
                        occurred_at: r.occurred_at.clone(),
                        outcome: r.outcome.clone(),
                        notes: r.notes.clone(),
                        encounter_id,
                    },
                    facts: RecordContext {
                        now,
                        patient_open: patient.state.status != PatientStatus::Retired,
                        active_outcomes: self.outcomes.clone(),
                        recorded_by: self.ctx.actor.0,
                    },
                });
                InteractionStatus::Final
            }
        };
        if from != target {
            match target {
                InteractionStatus::Amended => commands.push(InteractionCommand::Amend {
                    changes: InteractionAmendment {
                        kind: Some(r.kind.clone()),
                        occurred_at: r.occurred_at.clone(),
                        outcome: Some(r.outcome.clone()),
                        notes: Some(r.notes.clone().unwrap_or_default()),
                    },
                    reason,
                    facts: AmendContext {
                        now,
                        active_outcomes: self.outcomes.clone(),
                    },
                }),
                InteractionStatus::EnteredInError => {
                    commands.push(InteractionCommand::EnterInError { reason })
                }
                InteractionStatus::Final => {
                    return Err(invalid(
                        row,
                        "status",
                        format!(
                            "the interaction is {}; it cannot become final",
                            from.as_str()
                        ),
                    ));
                }
            }
        }
        // The values the file gives must be the ones the interaction ends with.
        let (after, _) =
            fold::<Interaction>(existing.clone(), &commands).map_err(|e| domain(row, e))?;
        if let Some(after) = &after {
            let mut differs = Vec::new();
            if InteractionKind::parse(&r.kind).ok() != Some(after.kind) {
                differs.push("kind");
            }
            if r.outcome.trim().to_ascii_lowercase() != after.outcome {
                differs.push("outcome");
            }
            if let Some(t) = &r.occurred_at
                && parse_instant("occurred_at", t).ok() != Some(after.occurred_at)
            {
                differs.push("occurred_at");
            }
            let notes = r.notes.as_deref().map(str::trim).filter(|n| !n.is_empty());
            if notes != after.notes.as_deref() {
                differs.push("notes");
            }
            if let Some(field) = differs.first() {
                return Err(invalid(
                    row,
                    field,
                    format!(
                        "{} differs from the recorded interaction {id}; corrections are amendments",
                        differs.join(", ")
                    ),
                ));
            }
            let expected_reason = r
                .status_reason
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty());
            if target != InteractionStatus::Final
                && after.status_reason.as_deref() != expected_reason
            {
                return Err(invalid(
                    row,
                    "status_reason",
                    format!("status_reason differs from the recorded interaction {id}"),
                ));
            }
        }
        self.apply_or_create::<Interaction>(row, id, existing, commands)
            .await
    }

    /// Create a record: `Created`, or `Unchanged` when an earlier run (or a row in flight
    /// beside this one) created it meanwhile.
    async fn created<A: Projected>(
        &self,
        row: u64,
        id: Uuid,
        commands: Vec<A::Command>,
    ) -> Result<Change, RowFail>
    where
        A::Command: Clone + Send + 'static,
    {
        match self.apply::<A>(row, id, None, commands).await {
            Err(RowFail::Exists(_)) => Err(RowFail::Row(RowError::new(
                row,
                Some("id"),
                format!(
                    "{} {id} was created by another row at the same time; run the import again to compare",
                    A::RESOURCE_TYPE
                ),
            ))),
            other => other,
        }
    }

    // ---- encounters ----

    async fn clinician(
        &self,
        row: u64,
        id: Option<Uuid>,
        credential: Option<String>,
    ) -> Result<(Uuid, bool), RowFail> {
        let credential = credential
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty());
        let key = (id, credential.clone());
        let cached = self
            .clinicians
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied());
        let fact = match cached {
            Some(f) => f,
            None => {
                let mut found = None;
                if let Some(id) = id
                    && let Some(c) = self.load::<Clinician>(row, id).await?
                {
                    found = Some((c.row.id, c.state.status == ClinicianStatus::Active));
                }
                if found.is_none()
                    && let Some(cred) = &credential
                    && let Some(owner) = self
                        .services
                        .store
                        .unique_owner(&self.ctx, crate::staff::clinician::CREDENTIAL_SCOPE, cred)
                        .await
                        .map_err(|e| fail(row, e.into()))?
                    && let Some(c) = self.load::<Clinician>(row, owner).await?
                {
                    found = Some((c.row.id, c.state.status == ClinicianStatus::Active));
                }
                if let Ok(mut m) = self.clinicians.lock() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(key, found);
                }
                found
            }
        };
        fact.ok_or_else(|| match (id, credential) {
            (_, Some(c)) => invalid(
                row,
                "clinician_credential",
                format!("no clinician with credential '{c}' in this tenant"),
            ),
            (Some(id), None) => invalid(
                row,
                "clinician_id",
                format!("no clinician {id} in this tenant (or give clinician_credential)"),
            ),
            (None, None) => invalid(
                row,
                "clinician_id",
                "give clinician_id or clinician_credential",
            ),
        })
    }

    /// The department an encounter names, by its id in this tenant, else by its code (the
    /// natural key another tenant's export carries); `None` when the row names none.
    async fn department(
        &self,
        row: u64,
        id: Option<Uuid>,
        code: Option<String>,
    ) -> Result<Option<(Uuid, bool)>, RowFail> {
        let code = code
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty());
        if id.is_none() && code.is_none() {
            return Ok(None);
        }
        let key = (id, code.clone());
        let cached = self
            .departments
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied());
        let fact = match cached {
            Some(f) => f,
            None => {
                let mut found = None;
                if let Some(id) = id
                    && let Some(d) = self.load::<Department>(row, id).await?
                {
                    found = Some((d.row.id, d.state.active));
                }
                if found.is_none()
                    && let Some(code) = &code
                    && let Some(owner) = self
                        .services
                        .store
                        .unique_owner(&self.ctx, DEPARTMENT_CODE_SCOPE, code)
                        .await
                        .map_err(|e| fail(row, e.into()))?
                    && let Some(d) = self.load::<Department>(row, owner).await?
                {
                    found = Some((d.row.id, d.state.active));
                }
                if let Ok(mut m) = self.departments.lock() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(key, found);
                }
                found
            }
        };
        match (fact, id, code) {
            (Some(f), _, _) => Ok(Some(f)),
            (None, _, Some(c)) => Err(invalid(
                row,
                "department_code",
                format!("no department with code '{c}' in this tenant"),
            )),
            (None, id, None) => Err(invalid(
                row,
                "department_id",
                format!(
                    "no department {} in this tenant (or give department_code)",
                    id.unwrap_or_default()
                ),
            )),
        }
    }

    async fn encounter(&self, row: u64, r: EncounterRecord) -> Result<Change, RowFail> {
        let patient = self.resolve_patient(row, r.patient()).await?;
        let (clinician_id, clinician_active) = self
            .clinician(row, r.clinician_id, r.clinician_credential.clone())
            .await?;
        let department = self
            .department(row, r.department_id, r.department_code.clone())
            .await?;
        let target = match r.status.as_deref().map(str::trim) {
            None | Some("") => EncounterStatus::Scheduled,
            Some(s) => EncounterStatus::parse(s).ok_or_else(|| {
                invalid(
                    row,
                    "status",
                    format!("status '{s}' is not scheduled, in_progress, completed, archived or cancelled"),
                )
            })?,
        };
        let instant = |field: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, RowFail> {
            v.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(|t| parse_instant(field, t))
                .transpose()
                .map_err(|e| domain(row, e))
        };
        let start = instant("start_time", &r.start_time)?;
        let end = instant("end_time", &r.end_time)?;
        let now = self.services.now();
        let (id, existing) = match self.find::<Encounter>(row, r.id).await? {
            Ok(c) => (c.row.id, Some(c.state)),
            Err(id) => (id, None),
        };
        let mut commands = Vec::new();
        let from = match &existing {
            Some(e) => {
                let mut differs = Vec::new();
                if e.patient_id != patient.row.id {
                    differs.push("patient_id");
                }
                if e.clinician_id != clinician_id {
                    differs.push("clinician_id");
                }
                if Some(e.encounter_type)
                    != crate::clinical::encounter::EncounterType::parse(&r.encounter_type).ok()
                {
                    differs.push("type");
                }
                if department.map(|d| d.0) != e.department_id {
                    differs.push("department_id");
                }
                if instant("scheduled_for", &r.scheduled_for)? != e.scheduled_for {
                    differs.push("scheduled_for");
                }
                unchanged_unless("encounter", row, e.id, &differs)?;
                e.status
            }
            None => {
                commands.push(EncounterCommand::Schedule {
                    id,
                    input: EncounterInput {
                        patient_id: patient.row.id,
                        clinician_id,
                        encounter_type: r.encounter_type.clone(),
                        department_id: department.map(|d| d.0),
                        fhir_elements: r.fhir_elements.clone(),
                        scheduled_for: r.scheduled_for.clone(),
                    },
                    facts: ScheduleFacts {
                        patient_open: patient.state.status != PatientStatus::Retired
                            && patient.state.deceased.is_none(),
                        clinician_active,
                        department_active: department.is_none_or(|d| d.1),
                    },
                });
                EncounterStatus::Scheduled
            }
        };
        let path = encounter_path(from, target).ok_or_else(|| {
            invalid(
                row,
                "status",
                format!(
                    "the encounter is {}; it cannot become {}",
                    from.as_str(),
                    target.as_str()
                ),
            )
        })?;
        for action in path {
            let at = match *action {
                "start" => start.unwrap_or(now),
                "complete" => end.unwrap_or(now),
                _ => now,
            };
            let reason = (*action == "cancel")
                .then(|| r.cancel_reason.clone())
                .flatten();
            commands.push(EncounterCommand::Transition {
                action: (*action).to_owned(),
                at,
                reason,
            });
        }
        // The times the file gives must be the ones the lifecycle ends with.
        let (after, _) =
            fold::<Encounter>(existing.clone(), &commands).map_err(|e| domain(row, e))?;
        if let Some(after) = &after {
            if start.is_some() && after.start_time != start {
                return Err(invalid(
                    row,
                    "start_time",
                    "start_time does not match the encounter's start (or its status has no start)",
                ));
            }
            if end.is_some() && after.end_time != end {
                return Err(invalid(
                    row,
                    "end_time",
                    "end_time does not match the encounter's end (or its status has no end)",
                ));
            }
        }
        self.apply_or_create::<Encounter>(row, id, existing, commands)
            .await
    }

    async fn apply_or_create<A: Projected>(
        &self,
        row: u64,
        id: Uuid,
        existing: Option<A>,
        commands: Vec<A::Command>,
    ) -> Result<Change, RowFail>
    where
        A::Command: Clone + Send + 'static,
    {
        match existing {
            Some(state) => self.apply::<A>(row, id, Some(state), commands).await,
            None => self.created::<A>(row, id, commands).await,
        }
    }

    // ---- observations ----

    async fn observation(&self, row: u64, r: ObservationRecord) -> Result<Change, RowFail> {
        let patient = self.resolve_patient(row, r.patient()).await?;
        let patient_id = patient.row.id;
        let encounter_id = self
            .resolve_encounter(row, r.encounter_id, patient_id)
            .await?;
        let target = match r.status.as_deref().map(str::trim) {
            None | Some("") => ObservationStatus::Final,
            Some(s) => ObservationStatus::parse(s).ok_or_else(|| {
                invalid(
                    row,
                    "status",
                    format!("status '{s}' is not preliminary, final, amended or entered_in_error"),
                )
            })?,
        };
        let code = r.code.clone().checked().map_err(|e| domain(row, e))?;
        let value = r.value.clone().checked().map_err(|e| domain(row, e))?;
        let effective = r
            .effective_at
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_instant("effective_at", t))
            .transpose()
            .map_err(|e| domain(row, e))?;
        let reason = r.status_reason.clone().unwrap_or_default();
        let (id, existing) = match self.find::<Observation>(row, r.id).await? {
            Ok(c) => (c.row.id, Some(c.state)),
            Err(id) => (id, None),
        };
        let mut commands = Vec::new();
        let from = match &existing {
            Some(e) => {
                let mut differs = Vec::new();
                if e.patient_id != patient_id {
                    differs.push("patient_id");
                }
                if e.encounter_id != encounter_id {
                    differs.push("encounter_id");
                }
                if e.code != code {
                    differs.push("code");
                }
                if effective.is_some_and(|t| t != e.effective_at) {
                    differs.push("effective_at");
                }
                unchanged_unless("observation", row, e.id, &differs)?;
                e.status
            }
            None => {
                let initial = match target {
                    ObservationStatus::Preliminary => "preliminary",
                    _ => "final",
                };
                commands.push(ObservationCommand::Record {
                    id,
                    input: ObservationInput {
                        patient_id,
                        encounter_id,
                        code: r.code.clone(),
                        value: r.value.clone(),
                        status: Some(initial.to_owned()),
                        effective_at: r.effective_at.clone(),
                        fhir_elements: r.fhir_elements.clone(),
                    },
                    facts: RecordFacts {
                        now: self.services.now(),
                        patient_open: patient.state.status != PatientStatus::Retired,
                        encounter_ok: true,
                    },
                });
                if target == ObservationStatus::Preliminary {
                    ObservationStatus::Preliminary
                } else {
                    ObservationStatus::Final
                }
            }
        };
        if from != target {
            match target {
                ObservationStatus::Amended => commands.push(ObservationCommand::Amend {
                    value: r.value.clone(),
                    reason,
                    fhir_elements: None,
                }),
                ObservationStatus::EnteredInError => {
                    commands.push(ObservationCommand::EnterInError { reason })
                }
                _ => {
                    return Err(invalid(
                        row,
                        "status",
                        format!(
                            "the observation is {}; it cannot become {}",
                            from.as_str(),
                            target.as_str()
                        ),
                    ));
                }
            }
        }
        let (after, _) =
            fold::<Observation>(existing.clone(), &commands).map_err(|e| domain(row, e))?;
        if let Some(after) = &after {
            if after.value != value {
                return Err(invalid(
                    row,
                    "value",
                    format!(
                        "the value differs from the recorded observation {id}; corrections are amendments"
                    ),
                ));
            }
            let expected_reason = r
                .status_reason
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty());
            if matches!(
                target,
                ObservationStatus::Amended | ObservationStatus::EnteredInError
            ) && after.status_reason.as_deref() != expected_reason
            {
                return Err(invalid(
                    row,
                    "status_reason",
                    format!("status_reason differs from the recorded observation {id}"),
                ));
            }
        }
        self.apply_or_create::<Observation>(row, id, existing, commands)
            .await
    }
}

/// `Unchanged` when nothing differs, else a row error naming what does.
fn unchanged_unless(what: &str, row: u64, id: Uuid, differs: &[&str]) -> Result<Change, RowFail> {
    if differs.is_empty() {
        Ok(Change::Unchanged)
    } else {
        Err(RowFail::Row(RowError::new(
            row,
            differs.first().copied(),
            format!(
                "differs from the recorded {what} {id} in: {}; a recorded {what} is corrected through its own actions, not by an import",
                differs.join(", ")
            ),
        )))
    }
}

/// The lifecycle actions from one encounter status to another, if it can get there.
fn encounter_path(from: EncounterStatus, to: EncounterStatus) -> Option<&'static [&'static str]> {
    use EncounterStatus::*;
    const FORWARD: &[&str] = &["start", "complete", "archive"];
    let rank = |s: EncounterStatus| match s {
        Scheduled => Some(0),
        InProgress => Some(1),
        Completed => Some(2),
        Archived => Some(3),
        Cancelled => None,
    };
    match (from, to) {
        (a, b) if a == b => Some(&[]),
        (Scheduled, Cancelled) => Some(&["cancel"]),
        (a, b) => match (rank(a), rank(b)) {
            (Some(x), Some(y)) if x < y => Some(&FORWARD[x..y]),
            _ => None,
        },
    }
}

/// The lifecycle actions from one patient status to another, if it can get there.
fn patient_path(from: PatientStatus, to: PatientStatus) -> Option<Vec<&'static str>> {
    use PatientStatus::*;
    let path: &[&str] = match (from, to) {
        (a, b) if a == b => &[],
        (Registered, Active) => &["activate"],
        (Registered, Suspended) => &["activate", "suspend"],
        (Active, Suspended) => &["suspend"],
        (Suspended, Active) => &["reactivate"],
        (Registered | Active | Suspended, Retired) => &["retire"],
        _ => return None,
    };
    debug_assert!(
        path.iter()
            .all(|a| PATIENT_TRANSITIONS.iter().any(|t| t.0 == *a))
    );
    Some(path.to_vec())
}

/// What a patient row asks for, parsed.
struct PatientTarget {
    id: Option<Uuid>,
    details: PatientDetails,
    status: PatientStatus,
    status_reason: Option<String>,
    deceased: Option<NaiveDate>,
    merged_into: Option<Uuid>,
}

impl PatientTarget {
    fn parse(row: u64, r: PatientRecord, today: NaiveDate) -> Result<Self, RowFail> {
        let status = match r.status.as_deref().map(str::trim) {
            None | Some("") => PatientStatus::Registered,
            Some(s) => PatientStatus::parse(s).ok_or_else(|| {
                invalid(
                    row,
                    "status",
                    format!("status '{s}' is not registered, active, suspended or retired"),
                )
            })?,
        };
        let deceased = r
            .deceased
            .as_ref()
            .map(|d| parse_date("deceased_date", &d.date))
            .transpose()
            .map_err(|e| domain(row, e))?;
        let input = PatientInput {
            identifiers: r.identifiers,
            name: r.name,
            birth_date: r.birth_date.filter(|b| !b.trim().is_empty()),
            gender: r.gender.filter(|g| !g.trim().is_empty()),
            phones: r.phones,
            email: r.email.filter(|e| !e.trim().is_empty()),
            address: r.address,
            persona_profile_id: r.persona_profile_id,
            shard_id: r.shard_id,
            fhir_elements: r.fhir_elements,
        };
        let details = PatientDetails::parse(input, today).map_err(|e| domain(row, e))?;
        Ok(Self {
            id: r.id,
            details,
            status,
            status_reason: r.status_reason.filter(|s| !s.trim().is_empty()),
            deceased,
            merged_into: r.merged_into,
        })
    }

    /// The commands that take `current` (none: a new record `id`) to what the row says.
    fn commands(
        &self,
        row: u64,
        current: Option<&Patient>,
        id: Uuid,
        survivor: Option<Uuid>,
        today: NaiveDate,
    ) -> Result<Vec<PatientCommand>, RowFail> {
        let mut commands = Vec::new();
        let (status, deceased, merged) = match current {
            None => {
                commands.push(PatientCommand::Register {
                    id,
                    details: self.details.clone(),
                });
                (PatientStatus::Registered, None, None)
            }
            Some(p) => {
                if p.details != self.details {
                    commands.push(PatientCommand::Update {
                        details: self.details.clone(),
                    });
                }
                (p.status, p.deceased.as_ref().map(|d| d.date), p.merged_into)
            }
        };
        let path = patient_path(status, self.status).ok_or_else(|| {
            invalid(
                row,
                "status",
                format!(
                    "the patient is {}; it cannot become {}",
                    status.as_str(),
                    self.status.as_str()
                ),
            )
        })?;
        let last = path.len().saturating_sub(1);
        for (i, action) in path.into_iter().enumerate() {
            commands.push(PatientCommand::Transition {
                action: action.to_owned(),
                reason: if i == last {
                    self.status_reason.clone()
                } else {
                    None
                },
            });
        }
        match (deceased, self.deceased) {
            (None, Some(date)) => commands.push(PatientCommand::RecordDeath { date, today }),
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    row,
                    "deceased_date",
                    format!("the patient's death is recorded on {a}; a row cannot change it"),
                ));
            }
            (Some(a), None) => {
                return Err(invalid(
                    row,
                    "deceased_date",
                    format!("the patient's death is recorded on {a}; a row cannot remove it"),
                ));
            }
            _ => {}
        }
        match (merged, survivor) {
            (None, Some(into)) => commands.push(PatientCommand::Merge {
                survivor: into,
                survivor_ok: true,
            }),
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    row,
                    "merged_into",
                    format!("the patient is merged into {a}"),
                ));
            }
            (Some(a), None) => {
                return Err(invalid(
                    row,
                    "merged_into",
                    format!("the patient is merged into {a}; unmerge it through the API"),
                ));
            }
            _ => {}
        }
        Ok(commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_paths_follow_the_transition_tables() {
        use PatientStatus::*;
        for from in [Registered, Active, Suspended, Retired] {
            for to in [Registered, Active, Suspended, Retired] {
                if let Some(path) = patient_path(from, to) {
                    let mut s = from;
                    for a in path {
                        let (_, allowed, next) =
                            PATIENT_TRANSITIONS.iter().find(|t| t.0 == a).unwrap();
                        assert!(allowed.contains(&s), "{a} from {s:?}");
                        s = *next;
                    }
                    assert_eq!(s, to);
                } else {
                    assert!(from == Retired || to == Registered, "{from:?} -> {to:?}");
                }
            }
        }
        use EncounterStatus as E;
        assert_eq!(
            encounter_path(E::Scheduled, E::Archived),
            Some(&["start", "complete", "archive"][..])
        );
        assert_eq!(
            encounter_path(E::InProgress, E::Completed),
            Some(&["complete"][..])
        );
        assert_eq!(encounter_path(E::Completed, E::InProgress), None);
        assert_eq!(encounter_path(E::InProgress, E::Cancelled), None);
    }
}
