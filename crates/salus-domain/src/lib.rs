//! The bounded contexts of Salus: each module holds its aggregates (state, commands,
//! events, `decide`/`evolve`) and its use-case services. Nothing here knows HTTP or SQL;
//! persistence goes through the `salus_store::Store` port and time through
//! `salus_kernel::Clock`.
//!
//! - [`registry`]: patients (identifiers, demographics, lifecycle, vital status).
//! - [`access`]: users of the system and their roles.
//! - [`audit`]: the audit trail: each event with its aggregate's state before and after.
//! - [`bulk`]: bulk import and export of patients and clinical entries.
//! - [`service`]: the one command executor every aggregate goes through.

pub mod access;
pub mod aggregates;
pub mod audit;
pub mod bulk;
pub mod clinical;
pub mod documents;
pub mod registry;
pub mod service;
pub mod staff;
