//! Every aggregate this build knows, by stream type: the one list that code working on
//! any stream (the audit trail's folds, projection rebuilds) dispatches through.

/// Evaluate `$body` with `$A` standing for the aggregate whose stream type is `$st`:
/// `Some(body)`, or `None` for a stream type this build does not know. A new aggregate
/// needs its line here.
///
/// ```ignore
/// by_stream_type!(stream_type, A => services.reindex::<A>(ctx, id).await)
/// ```
macro_rules! by_stream_type {
    ($st:expr, $A:ident => $body:expr) => {
        $crate::aggregates::by_stream_type!(@each $st, $A, $body;
            $crate::registry::Patient,
            $crate::clinical::Interaction,
            $crate::clinical::Outcome,
            $crate::staff::Clinician,
            $crate::staff::place::Department,
            $crate::staff::place::Location,
            $crate::clinical::encounter::Encounter,
            $crate::clinical::observation::Observation,
            $crate::clinical::procedure::Procedure,
            $crate::clinical::statement::Condition,
            $crate::clinical::statement::Allergy,
            $crate::clinical::record::MedicalRecord,
            $crate::clinical::record::ClinicalNote,
            $crate::clinical::attachment::Attachment,
            $crate::bulk::job::ImportJob,
            $crate::bulk::export_job::ExportJob,
            $crate::access::User,
            $crate::access::Role,
            $crate::access::care::CareAssignment,
            $crate::access::care::CarePolicy,
            $crate::clinical::consent::Consent,
            $crate::clinical::consent::ConsentTemplate,
            $crate::documents::FhirDocument,
        )
    };
    (@each $st:expr, $A:ident, $body:expr; $($agg:ty),* $(,)?) => {{
        let st: &str = $st;
        $(
            if st == <$agg as ::salus_kernel::Aggregate>::STREAM_TYPE {
                type $A = $agg;
                Some($body)
            } else
        )*
        { None }
    }};
}

pub(crate) use by_stream_type;

/// What a rebuild of a tenant's projections did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Streams looked at.
    pub streams: u64,
    /// Projections derived again and stored.
    pub rebuilt: u64,
    /// Streams of a type this build does not know (left as they are).
    pub unknown: u64,
    /// Rebuilds run again because the stream was written meanwhile.
    pub retried: u64,
}

/// Derive every projection of the tenant (or of one stream type) again from the log, at
/// the same versions ([`crate::service::Services::reindex`]); the server may keep
/// running: a stream written meanwhile is rebuilt again from its new events.
pub async fn reindex_tenant(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    only: Option<&str>,
    mut progress: impl FnMut(&ReindexReport),
) -> Result<ReindexReport, crate::service::ServiceError> {
    use crate::service::ServiceError;
    let mut report = ReindexReport::default();
    for head in services.store.stream_heads(ctx.tenant).await? {
        if only.is_some_and(|t| t != head.stream_type) {
            continue;
        }
        report.streams += 1;
        let mut tries = 0;
        loop {
            let id = head.stream_id;
            match by_stream_type!(head.stream_type.as_str(), A => services.reindex::<A>(ctx, id).await)
            {
                None => report.unknown += 1,
                Some(Ok(true)) => report.rebuilt += 1,
                Some(Ok(false)) => {}
                Some(Err(ServiceError::Precondition { .. })) if tries < 5 => {
                    tries += 1;
                    report.retried += 1;
                    continue;
                }
                Some(Err(e)) => return Err(e),
            }
            break;
        }
        progress(&report);
    }
    Ok(report)
}
