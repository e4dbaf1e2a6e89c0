//! The ImportJob aggregate: one import (or dry run) as it is asked for and as it ends,
//! kept in the event log like any record, so that who imported what, when, and with which
//! result is part of the audited history. Progress while it runs is not an event (it would
//! flood the log); the server keeps it in memory and shows it beside the stored job. A job
//! still `running` in the store that no server is running was interrupted.

use super::import::Report;
use super::{Counts, Kind, RowError};
use crate::service::{Current, Projected, ServiceError, Services};
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, TenantContext, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Reading and importing rows.
    Running,
    /// Every row was read; the counts say how many failed.
    Completed,
    /// The import stopped or was refused as a whole (`failure` says why).
    Failed,
    /// Shown, never stored: the job was running when its server stopped.
    Interrupted,
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportJob {
    pub id: Uuid,
    pub kind: Kind,
    /// csv | json | ndjson
    pub format: String,
    pub dry_run: bool,
    pub all_or_nothing: bool,
    pub status: JobStatus,
    /// Size of the file in bytes.
    pub bytes: u64,
    pub requested_by: Uuid,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub counts: Counts,
    /// The first errors (row, field, reason), in row order.
    #[serde(default)]
    pub errors: Vec<RowError>,
    /// Errors beyond those listed.
    #[serde(default)]
    pub errors_omitted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub status: JobStatus,
    pub finished_at: DateTime<Utc>,
    pub counts: Counts,
    pub errors: Vec<RowError>,
    pub errors_omitted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ImportJobCommand {
    Start(Box<ImportJob>),
    Finish(Box<Finished>),
}

domain_events! {
    pub enum ImportJobEvent {
        Started(ImportJob) = "import.started",
        Finished(Finished) = "import.finished",
    }
}

impl Aggregate for ImportJob {
    const STREAM_TYPE: &'static str = "import_job";
    type Command = ImportJobCommand;
    type Event = ImportJobEvent;

    fn decide(
        state: Option<&Self>,
        command: &ImportJobCommand,
    ) -> Result<Vec<ImportJobEvent>, DomainError> {
        match (state, command) {
            (None, ImportJobCommand::Start(job)) => {
                if job.status != JobStatus::Running {
                    return Err(DomainError::invalid("status", "a job starts running"));
                }
                Ok(vec![ImportJobEvent::Started((**job).clone())])
            }
            (Some(_), ImportJobCommand::Start(_)) => {
                Err(DomainError::Rule("the import job exists already".into()))
            }
            (None, ImportJobCommand::Finish(_)) => Err(DomainError::NotFound("import job".into())),
            (Some(j), ImportJobCommand::Finish(f)) => {
                if j.status != JobStatus::Running {
                    return Err(DomainError::IllegalTransition {
                        action: "finish".into(),
                        from: j.status.as_str().into(),
                        allowed: "running".into(),
                    });
                }
                if !matches!(f.status, JobStatus::Completed | JobStatus::Failed) {
                    return Err(DomainError::invalid(
                        "status",
                        "a job finishes completed or failed",
                    ));
                }
                Ok(vec![ImportJobEvent::Finished((**f).clone())])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ImportJobEvent) -> Option<Self> {
        match (state, event) {
            (_, ImportJobEvent::Started(j)) => Some(j.clone()),
            (Some(mut j), ImportJobEvent::Finished(f)) => {
                j.status = f.status;
                j.finished_at = Some(f.finished_at);
                j.counts = f.counts;
                j.errors = f.errors.clone();
                j.errors_omitted = f.errors_omitted;
                j.failure = f.failure.clone();
                Some(j)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ImportJobEvent, serde_json::Error> {
        ImportJobEvent::decode(event_type, payload)
    }
}

impl Projected for ImportJob {
    const RESOURCE_TYPE: &'static str = "import_job";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("status", self.status.as_str()),
            SearchRow::new("kind", self.kind.as_str()),
        ]
    }
}

/// What a new job is about.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: Kind,
    pub format: String,
    pub dry_run: bool,
    pub all_or_nothing: bool,
    pub bytes: u64,
}

/// Record a new running job (with the request's idempotent response, when there is one).
pub async fn start(
    services: &Services,
    ctx: &TenantContext,
    spec: JobSpec,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<Current<ImportJob>, ServiceError> {
    let id = Uuid::now_v7();
    let requested_by = ctx.actor.0;
    services
        .create::<ImportJob, _>(
            ctx,
            id,
            move |_, now| {
                Ok(ImportJobCommand::Start(Box::new(ImportJob {
                    id,
                    kind: spec.kind,
                    format: spec.format,
                    dry_run: spec.dry_run,
                    all_or_nothing: spec.all_or_nothing,
                    status: JobStatus::Running,
                    bytes: spec.bytes,
                    requested_by,
                    started_at: now,
                    finished_at: None,
                    counts: Counts::default(),
                    errors: Vec::new(),
                    errors_omitted: 0,
                    failure: None,
                })))
            },
            idempotency,
        )
        .await
}

/// Record how the job ended.
pub async fn finish(
    services: &Services,
    ctx: &TenantContext,
    id: Uuid,
    report: &Report,
) -> Result<Current<ImportJob>, ServiceError> {
    let finished = Finished {
        status: if report.failure.is_some() {
            JobStatus::Failed
        } else {
            JobStatus::Completed
        },
        finished_at: services.now(),
        counts: report.counts,
        errors: report.errors.clone(),
        errors_omitted: report.errors_omitted,
        failure: report.failure.clone(),
    };
    services
        .execute::<ImportJob, _>(
            ctx,
            id,
            None,
            move |_, now| {
                let mut f = finished;
                f.finished_at = now;
                Ok(ImportJobCommand::Finish(Box::new(f)))
            },
            None,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_finishes_once() {
        let job = ImportJob {
            id: Uuid::nil(),
            kind: Kind::Patients,
            format: "csv".into(),
            dry_run: false,
            all_or_nothing: false,
            status: JobStatus::Running,
            bytes: 10,
            requested_by: Uuid::nil(),
            started_at: Utc::now(),
            finished_at: None,
            counts: Counts::default(),
            errors: vec![],
            errors_omitted: 0,
            failure: None,
        };
        let evs = ImportJob::decide(None, &ImportJobCommand::Start(Box::new(job))).unwrap();
        let j = evs.iter().fold(None, ImportJob::evolve).unwrap();
        let fin = Finished {
            status: JobStatus::Completed,
            finished_at: Utc::now(),
            counts: Counts {
                rows: 2,
                created: 1,
                failed: 1,
                ..Counts::default()
            },
            errors: vec![RowError::new(2, Some("name"), "x")],
            errors_omitted: 0,
            failure: None,
        };
        let evs =
            ImportJob::decide(Some(&j), &ImportJobCommand::Finish(Box::new(fin.clone()))).unwrap();
        let done = evs.iter().fold(Some(j), ImportJob::evolve).unwrap();
        assert_eq!(done.counts.created, 1);
        assert_eq!(done.errors.len(), 1);
        assert!(matches!(
            ImportJob::decide(Some(&done), &ImportJobCommand::Finish(Box::new(fin))),
            Err(DomainError::IllegalTransition { .. })
        ));
    }
}
