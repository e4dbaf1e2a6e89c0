//! HTTP-level tests: the real server on a random port, a fresh database per test, real HTTP.
//! Every store-touching test runs on SQLite and on PostgreSQL (required, never skipped).

mod access;
mod access_log;
mod app;
mod attachments;
mod audit;
mod auth;
mod bench_fhir;
mod bulk;
mod care;
mod cli;
mod consents;
mod crash;
mod encounters;
mod fhir;
mod fhir_bundles;
mod fhir_clinical;
mod fhir_documents;
mod fhir_encounters;
mod fhir_export;
mod fhir_notes;
mod fhir_results;
mod fhir_staff;
mod fhir_statements;
mod interactions;
mod merges;
mod observations;
mod oidc;
mod patients;
mod places;
mod procedures;
mod records;
mod security;
mod statements;
mod surface;
mod synth;
