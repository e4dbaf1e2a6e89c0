//! `salus`: the clinical record platform's one binary.

use clap::Parser;

/// mimalloc: the write path frees on one thread what request threads allocated, where
/// glibc's arenas contend; measured ~25 % less CPU per create (BENCHMARKS.md). Built
/// without transparent huge pages, which would put ~10 MiB more in the idle RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    salus::main(salus::cli::Cli::parse())
}
