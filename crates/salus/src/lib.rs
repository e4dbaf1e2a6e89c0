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

/// Run the command line `cli` on a new multi-threaded runtime: what `main.rs` does.
///
/// The runtime blocks on [`cli::run`] here, not in the binary, so that the state machines
/// of every command are compiled once, in this crate (blocking on them from `main.rs` made
/// the binary's own crate compile them: 90 s of a release build).
pub fn main(cli: cli::Cli) -> std::process::ExitCode {
    // TLS (the JWKS of an OIDC issuer over https) uses ring; install it before any client.
    salus_api::jwks::install_crypto_provider();
    // FHIR documents are indexed by the R4 search parameters (salus-fhir).
    salus_api::fhir::documents::register_indexer();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
