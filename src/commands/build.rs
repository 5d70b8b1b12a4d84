//! `hb build <SET|RECIPE>`: plan, fetch, build every node, write the artifacts and the
//! build report.

use super::{prepare, sandbox_helper, Context};
use crate::cli::BuildArgs;
use crate::dist;
use crate::error::Error;
use crate::executor::Executor;
use crate::store::{write_atomic, Root};
use serde_json::json;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// File name of the build report written next to the artifacts.
pub const BUILD_REPORT: &str = "build-report.json";

pub fn run(ctx: &Context, args: BuildArgs) -> Result<i32, Error> {
    let clock = Instant::now();
    let started = SystemTime::now();
    let mut prepared = prepare(ctx, &args.target, &args.arch, args.cross)?;
    let store = ctx.open_store()?;
    let _store_lock = store.lock_shared()?;
    let sources = super::fetch_and_materialize(ctx, &mut prepared, &store, args.offline)?;
    let helper = sandbox_helper()?;
    let executor = Executor {
        store: &store,
        set: &prepared.set,
        ui: &ctx.ui,
        environments: &prepared.environments,
        jobs: ctx.jobs,
        conditions: crate::variation::Conditions::canonical(super::host_jobs()),
        node_conditions: None,
        fresh_into: None,
        keep_failed: args.keep_failed,
        sandbox_helper: &helper,
    };
    let results = executor.run(&prepared.plan, &sources)?;

    let scratch = store.temp_dir("dist-")?;
    let mut artifacts = Vec::new();
    for &arch in &prepared.arches {
        let artifact = dist::write_artifact(
            &store,
            &prepared.set,
            &prepared.plan,
            &results,
            arch,
            &args.out,
            scratch.path(),
        )?;
        let mut root = Root::default();
        for node in prepared.plan.nodes.iter().filter(|n| n.arch == arch) {
            root.outputs.insert(node.input_hash.to_string());
            root.sources.extend(node.source_digests.iter().map(|d| d.to_string()));
        }
        root.artifacts.insert(format!("{}.tar.gz", artifact.cache_key));
        // The environment's debs stay too, so an offline rebuild can re-assemble it.
        let environment = &prepared.environments[&arch];
        root.sources
            .extend(environment.debs().iter().map(|d| d.sha256.to_string()));
        root.environments.extend(environment.store_entries());
        store.write_root(&format!("{}-{arch}", prepared.set.name), &root)?;
        artifacts.push(artifact);
    }

    let nodes: Vec<_> = prepared
        .plan
        .nodes
        .iter()
        .zip(&results)
        .map(|(node, result)| {
            let meta = &result.built.meta;
            json!({
                "package": node.package,
                "version": meta.version,
                "arch": node.arch,
                "input_hash": node.input_hash,
                "content_digest": meta.content_digest,
                "method": meta.method,
                "environment": meta.environment,
                "cached": result.cached,
                "duration_ms": meta.duration_ms,
                "output": result.built.output_dir,
            })
        })
        .collect();
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let report = json!({
        "set": prepared.set.name,
        "hb_version": env!("CARGO_PKG_VERSION"),
        "source_date_epoch": prepared.set.source_date_epoch,
        "arches": prepared.arches,
        "started_unix": unix(started),
        "finished_unix": unix(SystemTime::now()),
        "duration_ms": clock.elapsed().as_millis() as u64,
        "nodes": nodes,
        "artifacts": artifacts.iter().map(dist::Artifact::to_json).collect::<Vec<_>>(),
    });
    let mut report_bytes = serde_json::to_vec_pretty(&report).expect("json values always serialize");
    report_bytes.push(b'\n');
    write_atomic(&args.out.join(BUILD_REPORT), &report_bytes)?;

    if ctx.ui.json {
        ctx.ui.print_json(&report);
    } else {
        let built = results.iter().filter(|r| !r.cached).count();
        ctx.ui.status(&format!(
            "{} node(s): {} built, {} cached, in {:.2} s",
            results.len(),
            built,
            results.len() - built,
            clock.elapsed().as_secs_f64()
        ));
        for a in &artifacts {
            ctx.ui.status(&format!(
                "wrote {} ({} bytes, sha256 {})",
                a.path.display(),
                a.size,
                a.sha256
            ));
        }
    }
    Ok(0)
}
