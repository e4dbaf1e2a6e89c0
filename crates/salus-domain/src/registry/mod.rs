//! The patient registry.

pub mod patient;
pub mod values;

pub use patient::{Patient, PatientCommand, PatientDetails, PatientEvent, PatientStatus};
