//! The `salus` binary's library: settings, server assembly, and the CLI commands. `main.rs`
//! only parses arguments and calls in here, so integration tests drive the same code.

pub mod access;
pub mod audit;
pub mod bench;
pub mod bulk;
pub mod bulk_bench;
pub mod cli;
pub mod config;
pub mod fhir_import;
pub mod server;
pub mod synth;
