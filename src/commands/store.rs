//! `hb store verify|gc|path`.

use super::Context;
use crate::cli::{StoreArgs, StoreCommand};
use crate::error::{Error, EXIT_CHECK_FAILED};
use serde_json::json;

pub fn run(ctx: &Context, args: StoreArgs) -> Result<i32, Error> {
    let store = ctx.open_store()?;
    match args.command {
        StoreCommand::Path => {
            println!("{}", store.root().display());
            Ok(0)
        }
        StoreCommand::Verify => {
            let bar = ctx.ui.bar(0, "verify");
            let mut report = store.verify(&|name| bar.set_message(name.to_string()))?;
            verify_environments(&store, &mut report, &|name| bar.set_message(name.to_string()))?;
            bar.finish_and_clear();
            if ctx.ui.json {
                ctx.ui.print_json(&serde_json::to_value(&report).expect("plain data"));
            } else {
                for problem in &report.corrupt {
                    eprintln!("corrupt: {}: {}", problem.path.display(), problem.message);
                }
                ctx.ui.status(&format!(
                    "checked {} source(s), {} output(s) and {} environment(s): {} corrupt{}",
                    report.sources_checked,
                    report.outputs_checked,
                    report.environments_checked,
                    report.corrupt.len(),
                    if report.temporary_entries > 0 {
                        format!(
                            "; {} leftover temporary entr(ies) from interrupted runs (harmless; `hb store gc` removes them)",
                            report.temporary_entries
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            if report.corrupt.is_empty() {
                Ok(0)
            } else {
                // The report above is the answer (also in --json); only the exit code says no.
                eprintln!("error: {} corrupt object(s) in the store", report.corrupt.len());
                Ok(EXIT_CHECK_FAILED)
            }
        }
        StoreCommand::Gc { dry_run } => {
            let report = store.gc(dry_run)?;
            if ctx.ui.json {
                ctx.ui.print_json(&json!({
                    "dry_run": dry_run,
                    "removed": report.removed,
                    "freed_bytes": report.freed_bytes,
                    "kept_outputs": report.kept_outputs,
                    "kept_sources": report.kept_sources,
                    "kept_environments": report.kept_environments,
                }));
            } else {
                for path in &report.removed {
                    ctx.ui.debug(&format!(
                        "{} {}",
                        if dry_run { "would remove" } else { "removed" },
                        path.display()
                    ));
                }
                ctx.ui.status(&format!(
                    "{} {} entr(ies), {} bytes; kept {} output(s), {} source(s) and {} environment(s) referenced by gc roots",
                    if dry_run { "would remove" } else { "removed" },
                    report.removed.len(),
                    report.freed_bytes,
                    report.kept_outputs,
                    report.kept_sources,
                    report.kept_environments
                ));
            }
            Ok(0)
        }
    }
}

/// Re-hash every assembled environment (rootfs) against its manifest.
fn verify_environments(
    store: &crate::store::Store,
    report: &mut crate::store::VerifyReport,
    progress: &dyn Fn(&str),
) -> Result<(), Error> {
    let envs = store.root().join("envs");
    let Ok(entries) = std::fs::read_dir(&envs) else {
        return Ok(());
    };
    let mut dirs: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join("meta.json").exists()
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("emulator-"))
        })
        .collect();
    dirs.sort();
    for dir in dirs {
        progress(&format!(
            "envs/{}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        report.environments_checked += 1;
        if let Err(message) = crate::rootfs::verify(store, &dir) {
            report.corrupt.push(crate::store::Problem { path: dir, message });
        }
    }
    Ok(())
}
