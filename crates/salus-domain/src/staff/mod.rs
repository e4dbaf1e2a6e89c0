//! Staff: the clinicians who deliver care. Departments and locations follow.

pub mod clinician;

pub use clinician::{Clinician, ClinicianCommand, ClinicianStatus};
