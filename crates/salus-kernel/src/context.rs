//! Who is acting, for which tenant. Every tenant-scoped call in Salus takes a
//! [`TenantContext`] first, so no such call can be written without one.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(pub Uuid);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The scope of one request or job: the tenant, the authenticated actor, and the ids that
/// tie the events it causes together.
#[derive(Debug, Clone)]
pub struct TenantContext {
    pub tenant: TenantId,
    pub actor: ActorId,
    /// Correlates every event written while serving one request.
    pub correlation_id: Uuid,
    /// The event (or command) that caused this one, when known.
    pub causation_id: Option<Uuid>,
}

impl TenantContext {
    pub fn new(tenant: TenantId, actor: ActorId, correlation_id: Uuid) -> Self {
        Self {
            tenant,
            actor,
            correlation_id,
            causation_id: None,
        }
    }
}
