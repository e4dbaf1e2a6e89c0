//! Exports: a kind's resources page by page in id (creation) order, each with the natural
//! keys another tenant needs to resolve its references (the patient's first identifier, the
//! clinician's credential, the department's code). Pages are read with a cursor, so memory holds one page at a
//! time. An export is not a snapshot: a record created while it runs may or may not appear.

use super::Kind;
use crate::registry::Patient;
use crate::service::{ServiceError, Services};
use crate::staff::Clinician;
use crate::staff::place::Department;
use salus_kernel::TenantContext;
use salus_store::{ResourceRow, SearchQuery};
use std::collections::HashMap;
use uuid::Uuid;

/// Rows read per page.
pub const PAGE: u32 = 500;

/// One exported resource.
#[derive(Debug, Clone)]
pub struct ExportItem {
    pub row: ResourceRow,
    /// `system|value` of the patient's first identifier (clinical entries).
    pub patient_identifier: Option<String>,
    /// The clinician's credential (encounters).
    pub clinician_credential: Option<String>,
    /// The department's code (encounters that name one).
    pub department_code: Option<String>,
}

/// Pages through one kind of one tenant.
pub struct Exporter {
    services: Services,
    ctx: TenantContext,
    kind: Kind,
    after: Option<Uuid>,
    done: bool,
    patients: HashMap<Uuid, Option<String>>,
    clinicians: HashMap<Uuid, Option<String>>,
    departments: HashMap<Uuid, Option<String>>,
}

impl Exporter {
    pub fn new(services: Services, ctx: TenantContext, kind: Kind) -> Self {
        Self {
            services,
            ctx,
            kind,
            after: None,
            done: false,
            patients: HashMap::new(),
            clinicians: HashMap::new(),
            departments: HashMap::new(),
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ExportItem>>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        let query = SearchQuery {
            resource_type: self.kind.resource_type().into(),
            filters: vec![],
            after: self.after,
            limit: PAGE,
            newest_first: false,
            order_by: None,
        };
        let rows = self.services.store.search(&self.ctx, &query).await?;
        if rows.len() < PAGE as usize {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        self.after = rows.last().map(|r| r.id);
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let patient_identifier = match self.kind {
                Kind::Patients => None,
                _ => match doc_uuid(&row, "patient_id") {
                    Some(p) => self.patient_identifier(p).await?,
                    None => None,
                },
            };
            let clinician_credential = match (self.kind, doc_uuid(&row, "clinician_id")) {
                (Kind::Encounters, Some(c)) => self.credential(c).await?,
                _ => None,
            };
            let department_code = match (self.kind, doc_uuid(&row, "department_id")) {
                (Kind::Encounters, Some(d)) => self.department_code(d).await?,
                _ => None,
            };
            items.push(ExportItem {
                row,
                patient_identifier,
                clinician_credential,
                department_code,
            });
        }
        Ok(Some(items))
    }

    async fn patient_identifier(&mut self, id: Uuid) -> Result<Option<String>, ServiceError> {
        if let Some(hit) = self.patients.get(&id) {
            return Ok(hit.clone());
        }
        let found = self
            .services
            .load::<Patient>(&self.ctx, id)
            .await?
            .and_then(|p| {
                p.state
                    .details
                    .identifiers
                    .first()
                    .map(|i| format!("{}|{}", i.system, i.value))
            });
        if self.patients.len() >= 10_000 {
            self.patients.clear();
        }
        self.patients.insert(id, found.clone());
        Ok(found)
    }

    async fn credential(&mut self, id: Uuid) -> Result<Option<String>, ServiceError> {
        if let Some(hit) = self.clinicians.get(&id) {
            return Ok(hit.clone());
        }
        let found = self
            .services
            .load::<Clinician>(&self.ctx, id)
            .await?
            .map(|c| c.state.credential);
        if self.clinicians.len() >= 10_000 {
            self.clinicians.clear();
        }
        self.clinicians.insert(id, found.clone());
        Ok(found)
    }
}

impl Exporter {
    async fn department_code(&mut self, id: Uuid) -> Result<Option<String>, ServiceError> {
        if let Some(hit) = self.departments.get(&id) {
            return Ok(hit.clone());
        }
        let found = self
            .services
            .load::<Department>(&self.ctx, id)
            .await?
            .map(|d| d.state.code);
        if self.departments.len() >= 10_000 {
            self.departments.clear();
        }
        self.departments.insert(id, found.clone());
        Ok(found)
    }
}

fn doc_uuid(row: &ResourceRow, field: &str) -> Option<Uuid> {
    row.doc
        .get(field)
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}
