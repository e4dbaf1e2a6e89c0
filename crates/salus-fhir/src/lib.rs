//! FHIR R4 knowledge with no HTTP: the official definitions bundled as data
//! ([`definitions`]), a FHIRPath subset ([`fhirpath`]), index values per search parameter
//! ([`index`]), structural validation ([`validate`]), the mapping between Salus aggregates
//! and FHIR resources ([`patient`], [`observation`], [`statement`], [`encounter`],
//! [`procedure`], [`staff`], [`note`]), OperationOutcome and Bundle shapes ([`outcome`]).
//!
//! It never does I/O beyond reading its bundled files, and never decides a domain rule: a
//! FHIR resource becomes a domain command's input, and the domain decides.

pub mod clinical;
pub mod consent;
pub mod coverage;
pub mod datatypes;
pub mod definitions;
pub mod encounter;
pub mod fhirpath;
pub mod index;
pub mod note;
pub mod observation;
pub mod outcome;
pub mod patient;
pub mod procedure;
pub mod search;
pub mod staff;
pub mod statement;
pub mod synth;
pub mod validate;
