//! `salus bench`: throughput and latency of the running system. Being written.

use crate::config::Settings;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_settings: &Settings, _args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("salus bench is not built yet")
}
