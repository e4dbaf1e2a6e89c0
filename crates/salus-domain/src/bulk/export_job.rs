//! The ExportJob aggregate: one FHIR Bulk Data `$export` (Bulk Data Access IG v2) as it was
//! asked for and as it ended, kept in the tenant's event log like any record, so that its
//! status outlives the request that started it and who exported what, and when, is part
//! of the audited history. The files themselves are blobs (content-addressed); the job
//! names each one by its SHA-256.
//!
//! Lifecycle: `running → completed | failed | cancelled`; a finished job may then be
//! cancelled too (the client's `DELETE` of a job it is done with). Progress while it runs
//! is not an event; the server keeps it in memory.

use crate::service::{Current, Projected, ServiceError, Services};
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, TenantContext, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ExportStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Which resources an export covers (the kick-off endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum ExportScope {
    /// `GET [base]/$export`: everything of the asked types.
    System,
    /// `GET [base]/Patient/$export`: every patient's compartment.
    Patient,
    /// `GET [base]/Group/{id}/$export`: the compartments of the group's member patients.
    Group { group: String },
}

/// One output file: `count` resources of `resource_type`, stored as the blob `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportOutput {
    pub resource_type: String,
    pub sha256: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportJob {
    pub id: Uuid,
    pub scope: ExportScope,
    /// The resource types exported, in order.
    pub types: Vec<String>,
    /// Only resources updated after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    pub output_format: String,
    /// The kick-off request URL, as the manifest's `request` repeats it.
    pub request: String,
    pub requested_by: Uuid,
    pub status: ExportStatus,
    /// When the export started: what it holds is the data as of then (the manifest's
    /// `transactionTime`).
    pub transaction_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub outputs: Vec<ExportOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub finished_at: DateTime<Utc>,
    pub outputs: Vec<ExportOutput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum ExportJobCommand {
    Start(Box<ExportJob>),
    Complete(Completed),
    Fail(Stopped),
    Cancel(Stopped),
}

domain_events! {
    pub enum ExportJobEvent {
        Started(ExportJob) = "export.started",
        Completed(Completed) = "export.completed",
        Failed(Stopped) = "export.failed",
        Cancelled(Stopped) = "export.cancelled",
    }
}

fn not_running(action: &str, from: ExportStatus) -> DomainError {
    DomainError::IllegalTransition {
        action: action.into(),
        from: from.as_str().into(),
        allowed: "running".into(),
    }
}

impl Aggregate for ExportJob {
    const STREAM_TYPE: &'static str = "export_job";
    type Command = ExportJobCommand;
    type Event = ExportJobEvent;

    fn decide(
        state: Option<&Self>,
        command: &ExportJobCommand,
    ) -> Result<Vec<ExportJobEvent>, DomainError> {
        match (state, command) {
            (None, ExportJobCommand::Start(job)) => {
                if job.status != ExportStatus::Running {
                    return Err(DomainError::invalid("status", "an export starts running"));
                }
                if job.types.is_empty() {
                    return Err(DomainError::invalid("types", "an export needs a type"));
                }
                Ok(vec![ExportJobEvent::Started((**job).clone())])
            }
            (Some(_), ExportJobCommand::Start(_)) => {
                Err(DomainError::Rule("the export job exists already".into()))
            }
            (None, _) => Err(DomainError::NotFound("export job".into())),
            (Some(j), ExportJobCommand::Complete(c)) => {
                if j.status != ExportStatus::Running {
                    return Err(not_running("complete", j.status));
                }
                Ok(vec![ExportJobEvent::Completed(c.clone())])
            }
            (Some(j), ExportJobCommand::Fail(s)) => {
                if j.status != ExportStatus::Running {
                    return Err(not_running("fail", j.status));
                }
                Ok(vec![ExportJobEvent::Failed(s.clone())])
            }
            (Some(j), ExportJobCommand::Cancel(s)) => {
                if j.status == ExportStatus::Cancelled {
                    return Err(DomainError::IllegalTransition {
                        action: "cancel".into(),
                        from: j.status.as_str().into(),
                        allowed: "running, completed, failed".into(),
                    });
                }
                Ok(vec![ExportJobEvent::Cancelled(s.clone())])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ExportJobEvent) -> Option<Self> {
        match (state, event) {
            (_, ExportJobEvent::Started(j)) => Some(j.clone()),
            (Some(mut j), ExportJobEvent::Completed(c)) => {
                j.status = ExportStatus::Completed;
                j.finished_at = Some(c.finished_at);
                j.outputs = c.outputs.clone();
                Some(j)
            }
            (Some(mut j), ExportJobEvent::Failed(s)) => {
                j.status = ExportStatus::Failed;
                j.finished_at = Some(s.at);
                j.failure = Some(s.reason.clone());
                Some(j)
            }
            (Some(mut j), ExportJobEvent::Cancelled(s)) => {
                j.status = ExportStatus::Cancelled;
                j.finished_at.get_or_insert(s.at);
                // A cancelled job's files are no longer offered.
                j.outputs.clear();
                Some(j)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ExportJobEvent, serde_json::Error> {
        ExportJobEvent::decode(event_type, payload)
    }
}

impl Projected for ExportJob {
    const RESOURCE_TYPE: &'static str = "export_job";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("status", self.status.as_str()),
            SearchRow::new("requested_by", self.requested_by.to_string()),
        ]
    }
}

/// What a new export is about.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub scope: ExportScope,
    pub types: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub output_format: String,
    pub request: String,
}

/// Record a new running export, started by the context's actor now.
pub async fn start(
    services: &Services,
    ctx: &TenantContext,
    spec: ExportSpec,
) -> Result<Current<ExportJob>, ServiceError> {
    let id = Uuid::now_v7();
    let requested_by = ctx.actor.0;
    services
        .create::<ExportJob, _>(
            ctx,
            id,
            move |_, now| {
                Ok(ExportJobCommand::Start(Box::new(ExportJob {
                    id,
                    scope: spec.scope,
                    types: spec.types,
                    since: spec.since,
                    output_format: spec.output_format,
                    request: spec.request,
                    requested_by,
                    status: ExportStatus::Running,
                    transaction_time: now,
                    finished_at: None,
                    outputs: Vec::new(),
                    failure: None,
                })))
            },
            None,
        )
        .await
}

/// Record how the export ended: its files, or why it stopped.
pub async fn finish(
    services: &Services,
    ctx: &TenantContext,
    id: Uuid,
    outcome: Result<Vec<ExportOutput>, String>,
) -> Result<Current<ExportJob>, ServiceError> {
    services
        .execute::<ExportJob, _>(
            ctx,
            id,
            None,
            move |_, now| {
                Ok(match outcome {
                    Ok(outputs) => ExportJobCommand::Complete(Completed {
                        finished_at: now,
                        outputs,
                    }),
                    Err(reason) => ExportJobCommand::Fail(Stopped { at: now, reason }),
                })
            },
            None,
        )
        .await
}

/// Cancel a job (running or done): its files are no longer offered.
pub async fn cancel(
    services: &Services,
    ctx: &TenantContext,
    id: Uuid,
) -> Result<Current<ExportJob>, ServiceError> {
    services
        .execute::<ExportJob, _>(
            ctx,
            id,
            None,
            |_, now| {
                Ok(ExportJobCommand::Cancel(Stopped {
                    at: now,
                    reason: "cancelled by the client".into(),
                }))
            },
            None,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ExportJob {
        ExportJob {
            id: Uuid::nil(),
            scope: ExportScope::Group { group: "g1".into() },
            types: vec!["Patient".into()],
            since: None,
            output_format: "application/fhir+ndjson".into(),
            request: "/fhir/R4/Group/g1/$export".into(),
            requested_by: Uuid::nil(),
            status: ExportStatus::Running,
            transaction_time: Utc::now(),
            finished_at: None,
            outputs: vec![],
            failure: None,
        }
    }

    fn apply(state: Option<ExportJob>, c: ExportJobCommand) -> Result<ExportJob, DomainError> {
        let evs = ExportJob::decide(state.as_ref(), &c)?;
        evs.iter()
            .fold(state, ExportJob::evolve)
            .ok_or_else(|| DomainError::NotFound("job".into()))
    }

    #[test]
    fn an_export_completes_once_and_a_cancelled_one_offers_no_files() {
        let j = apply(None, ExportJobCommand::Start(Box::new(job()))).unwrap();
        let out = vec![ExportOutput {
            resource_type: "Patient".into(),
            sha256: "ab".into(),
            count: 2,
        }];
        let done = apply(
            Some(j),
            ExportJobCommand::Complete(Completed {
                finished_at: Utc::now(),
                outputs: out.clone(),
            }),
        )
        .unwrap();
        assert_eq!(done.status, ExportStatus::Completed);
        assert_eq!(done.outputs, out);
        let again = ExportJob::decide(
            Some(&done),
            &ExportJobCommand::Fail(Stopped {
                at: Utc::now(),
                reason: "x".into(),
            }),
        );
        assert!(matches!(again, Err(DomainError::IllegalTransition { .. })));
        let stop = Stopped {
            at: Utc::now(),
            reason: "done".into(),
        };
        let gone = apply(Some(done), ExportJobCommand::Cancel(stop.clone())).unwrap();
        assert_eq!(gone.status, ExportStatus::Cancelled);
        assert!(gone.outputs.is_empty());
        assert!(ExportJob::decide(Some(&gone), &ExportJobCommand::Cancel(stop)).is_err());
    }

    #[test]
    fn an_export_needs_a_type() {
        let mut j = job();
        j.types.clear();
        assert!(ExportJob::decide(None, &ExportJobCommand::Start(Box::new(j))).is_err());
    }
}
