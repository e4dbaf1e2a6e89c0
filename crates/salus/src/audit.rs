//! `salus audit …`: verify the whole log, seal, and produce and check proofs offline.

use crate::cli::AuditCommand;
use crate::config::Settings;
use crate::server;
use indicatif::{ProgressBar, ProgressStyle};
use salus_store::ledger::{self, ConsistencyProof, InclusionProof, Sealer};
use std::process::ExitCode;

fn write_out(out: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

pub async fn run(settings: &Settings, command: AuditCommand) -> anyhow::Result<ExitCode> {
    if let AuditCommand::CheckProof { file, public_key } = &command {
        return check_proof(settings, file, public_key.as_deref());
    }
    if let AuditCommand::PublicKey = command {
        println!("{}", server::ledger_key(settings)?.public_hex());
        return Ok(ExitCode::SUCCESS);
    }
    let store = server::open_existing_store(settings).await?;
    let result = match command {
        AuditCommand::Verify => {
            let key = server::ledger_key(settings)?.public_hex();
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} verified {pos} events ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let report = ledger::verify(store.as_ref(), &key, |n| {
                if n % 1000 == 0 {
                    bar.set_position(n);
                }
            })
            .await?;
            bar.finish_and_clear();
            let access = salus_store::access::verify(store.as_ref()).await?;
            if report.ok() && access.problems.is_empty() {
                println!(
                    "ok: {} tenants, {} events, {} streams, {} tree heads, {} access entries verified",
                    report.tenants,
                    report.events,
                    report.streams,
                    report.tree_heads,
                    access.entries
                );
                ExitCode::SUCCESS
            } else {
                if let Some(first) = report.problems.first() {
                    eprintln!("FAILED: first bad event: {first}");
                }
                for p in report.problems.iter().skip(1).take(50) {
                    eprintln!("  also: {p}");
                }
                if let Some(first) = access.problems.first() {
                    eprintln!("FAILED: first bad access entry: {first}");
                }
                for p in access.problems.iter().skip(1).take(50) {
                    eprintln!("  also: {p}");
                }
                eprintln!(
                    "{} problems in {} events and {} access entries of {} tenants",
                    report.problems.len() + access.problems.len(),
                    report.events,
                    access.entries,
                    report.tenants
                );
                ExitCode::from(1)
            }
        }
        AuditCommand::Seal => {
            let mut sealer = Sealer::new(server::ledger_key(settings)?);
            let heads = sealer.seal_all(store.as_ref()).await?;
            for h in &heads {
                println!(
                    "tenant {}: signed tree head of size {} root {}",
                    h.tenant_id, h.tree_size, h.root
                );
            }
            println!("{} tree heads signed", heads.len());
            ExitCode::SUCCESS
        }
        AuditCommand::Prove { event_id, out } => {
            let proof = ledger::prove(store.as_ref(), event_id).await?;
            write_out(out.as_deref(), &serde_json::to_string_pretty(&proof)?)?;
            ExitCode::SUCCESS
        }
        AuditCommand::ProveConsistency {
            tenant,
            first,
            second,
            out,
        } => {
            let t = server::find_tenant(store.as_ref(), &tenant).await?;
            let proof = ledger::prove_consistency(store.as_ref(), t.id, first, second).await?;
            write_out(out.as_deref(), &serde_json::to_string_pretty(&proof)?)?;
            ExitCode::SUCCESS
        }
        AuditCommand::CheckProof { .. } | AuditCommand::PublicKey => ExitCode::SUCCESS,
    };
    store.shutdown().await;
    Ok(result)
}

fn check_proof(
    settings: &Settings,
    file: &std::path::Path,
    key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let key = match key {
        Some(k) => k.to_owned(),
        None => server::ledger_key(settings)?.public_hex(),
    };
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let verdict = if value.get("event").is_some() {
        let p: InclusionProof = serde_json::from_value(value)?;
        ledger::check_inclusion(&p, &key).map(|()| {
            format!(
                "ok: event {} is leaf {} of the signed tree of size {} (root {})",
                p.event.event_id, p.leaf_index, p.tree_head.tree_size, p.tree_head.root
            )
        })
    } else {
        let p: ConsistencyProof = serde_json::from_value(value)?;
        ledger::check_consistency(&p, &key).map(|()| {
            format!(
                "ok: the tree of size {} extends the tree of size {}",
                p.second.tree_size, p.first.tree_size
            )
        })
    };
    match verdict {
        Ok(msg) => {
            println!("{msg}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
