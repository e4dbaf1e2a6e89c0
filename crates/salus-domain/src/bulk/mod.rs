//! Bulk import and export (requirements/004, "Bulk Operations") of patients, interactions,
//! encounters and observations.
//!
//! - [`records`]: the interchange record of each kind (what one CSV row, JSON element or
//!   NDJSON line holds) and how it becomes domain commands.
//! - [`import`]: the import engine. Every row becomes ordinary commands run through
//!   [`Services`](crate::service::Services) (events, projection, search rows, unique keys,
//!   hash chain: no side door into the store), many rows in flight at once so that the
//!   store's group commit can batch them, with bounded concurrency so that memory stays
//!   flat.
//! - [`export`]: paging through a kind's resources in id (creation) order.
//! - [`job`]: the `ImportJob` aggregate that keeps who imported what, and its report.
//! - [`export_job`]: the `ExportJob` aggregate of a FHIR Bulk Data `$export` (its files
//!   are blobs; the FHIR edge writes them).
//!
//! Nothing here reads files or sockets: callers hand the engine a stream of decoded rows
//! (the file formats live at the edges, `salus-api::bulk`).

pub mod export;
pub mod export_job;
pub mod import;
pub mod job;
pub mod records;

use salus_kernel::{DomainError, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What a bulk file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Patients,
    Interactions,
    Encounters,
    Observations,
}

impl Kind {
    pub const ALL: &'static [&'static str] =
        &["patients", "interactions", "encounters", "observations"];

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Ok(match s.trim() {
            "patients" => Self::Patients,
            "interactions" => Self::Interactions,
            "encounters" => Self::Encounters,
            "observations" => Self::Observations,
            other => {
                return Err(DomainError::invalid(
                    "kind",
                    format!("kind '{other}' is not one of {}", Self::ALL.join(", ")),
                ));
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Patients => "patients",
            Self::Interactions => "interactions",
            Self::Encounters => "encounters",
            Self::Observations => "observations",
        }
    }

    /// The resource type (and stream type) of the kind's records.
    pub fn resource_type(&self) -> &'static str {
        match self {
            Self::Patients => "patient",
            Self::Interactions => "interaction",
            Self::Encounters => "encounter",
            Self::Observations => "observation",
        }
    }

    /// The permission an export of this kind needs besides `exports:read`.
    pub fn read_permission(&self) -> &'static str {
        match self {
            Self::Patients => "patients:read",
            Self::Interactions => "interactions:read",
            Self::Encounters => "encounters:read",
            Self::Observations => "observations:read",
        }
    }

    /// The permission an import of this kind needs besides `imports:write`.
    pub fn write_permission(&self) -> &'static str {
        match self {
            Self::Patients => "patients:write",
            Self::Interactions => "interactions:write",
            Self::Encounters => "encounters:write",
            Self::Observations => "observations:write",
        }
    }
}

/// Why one row was not imported: its number (1 = the first record of the file), the field
/// at fault when one is known, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RowError {
    pub row: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

impl RowError {
    pub fn new(row: u64, field: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            row,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// A domain refusal of the row's command, with its field when it names one.
    pub fn from_domain(row: u64, e: &DomainError) -> Self {
        let field = match e {
            DomainError::Invalid { field, .. } => field.clone(),
            DomainError::IllegalTransition { .. } => Some("status".to_owned()),
            _ => None,
        };
        Self {
            row,
            field,
            reason: e.to_string(),
        }
    }
}

/// How many rows an import read and what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    /// Rows read from the file (every record, good or bad).
    pub rows: u64,
    /// Rows that created a new record (in a dry run: that would).
    pub created: u64,
    /// Rows that changed an existing record (patients only: details, status, death, merge).
    pub updated: u64,
    /// Rows whose record already exists as the row describes it (a re-import).
    pub unchanged: u64,
    /// Rows refused, each with an entry in the error report.
    pub failed: u64,
}

/// The id under which a record whose file gives it `source` is created in `tenant`, when
/// the tenant has no record with the id `source` itself. Deterministic, so that importing
/// the same file again finds the records it created; different per tenant, so that a copy
/// into another tenant of the same deployment never collides with the original (stream ids
/// are unique across the deployment). It is a UUIDv7 that keeps the 48-bit timestamp of a
/// v7 source, so that imported records list in the order of their sources.
pub fn derived_id(tenant: TenantId, resource_type: &str, source: Uuid) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"salus-import-id/v1\0");
    h.update(tenant.0.as_bytes());
    h.update(resource_type.as_bytes());
    h.update([0]);
    h.update(source.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    if source.get_version_num() == 7 {
        b[..6].copy_from_slice(&source.as_bytes()[..6]);
    }
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A derived id is a UUIDv7, the same for the same inputs, different per tenant,
        /// and keeps a v7 source's timestamp (so derived ids sort like their sources).
        #[test]
        fn derived_ids_are_stable_v7_per_tenant(src in any::<u128>(), t1 in any::<u128>(), t2 in any::<u128>()) {
            prop_assume!(t1 != t2);
            let mut bytes = src.to_be_bytes();
            bytes[6] = (bytes[6] & 0x0f) | 0x70;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            let source = Uuid::from_bytes(bytes);
            let a = derived_id(TenantId(Uuid::from_u128(t1)), "patient", source);
            prop_assert_eq!(a, derived_id(TenantId(Uuid::from_u128(t1)), "patient", source));
            prop_assert_ne!(a, derived_id(TenantId(Uuid::from_u128(t2)), "patient", source));
            prop_assert_ne!(a, derived_id(TenantId(Uuid::from_u128(t1)), "encounter", source));
            prop_assert_eq!(a.get_version_num(), 7);
            prop_assert_eq!(&a.as_bytes()[..6], &source.as_bytes()[..6]);
        }
    }

    #[test]
    fn kinds_parse_and_name_their_permissions() {
        for k in Kind::ALL {
            let kind = Kind::parse(k).unwrap();
            assert_eq!(kind.as_str(), *k);
            assert!(kind.write_permission().ends_with(":write"));
        }
        assert!(Kind::parse("clinicians").is_err());
    }
}
