//! Staff: the clinicians who deliver care. Departments and locations follow.

pub mod clinician;
pub mod place;

pub use clinician::{Clinician, ClinicianCommand, ClinicianStatus};
