//! `salus`: the clinical record platform's one binary.

use clap::Parser;

/// mimalloc: the write path frees on one thread what request threads allocated, where
/// glibc's arenas contend; measured ~25 % less CPU per create (BENCHMARKS.md). Built
/// without transparent huge pages, which would put ~10 MiB more in the idle RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = salus::cli::Cli::parse();
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
    match runtime.block_on(salus::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
