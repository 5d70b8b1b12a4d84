//! `hb shell <RECIPE>`: build the recipe's dependencies, unpack its sources, and open an
//! interactive shell in exactly the sandbox its build script would run in.

use super::{prepare, sandbox_helper, Context};
use crate::build::NodeBuild;
use crate::cli::ShellArgs;
use crate::error::Error;
use crate::executor::Executor;
use crate::plan::Plan;

pub fn run(ctx: &Context, args: ShellArgs) -> Result<i32, Error> {
    let arch_args: Vec<String> = args.arch.into_iter().collect();
    let mut prepared = prepare(ctx, &args.recipe, &arch_args, false)?;
    let Some(package_name) = prepared.roots.first().cloned().filter(|_| prepared.roots.len() == 1) else {
        return Err(Error::Usage {
            message: format!("{}: hb shell takes one recipe file, not a set", args.recipe.display()),
            hint: Some("pass the package's .toml file, e.g. recipes/toolchain/bzip2.toml".into()),
        });
    };
    let arch = prepared.arches[0];
    prepared.plan.nodes.retain(|n| n.arch == arch);
    let store = ctx.open_store()?;
    let _store_lock = store.lock_shared()?;
    let sources = super::fetch_and_materialize(ctx, &mut prepared, &store, false)?;
    let helper = sandbox_helper()?;
    let target_index = prepared.plan.nodes.len() - 1;
    let deps_plan = Plan {
        nodes: prepared.plan.nodes[..target_index].to_vec(),
    };
    let executor = Executor {
        store: &store,
        set: &prepared.set,
        ui: &ctx.ui,
        environments: &prepared.environments,
        jobs: ctx.jobs,
        conditions: crate::variation::Conditions::canonical(super::host_jobs()),
        node_conditions: None,
        fresh_into: None,
        keep_failed: false,
        sandbox_helper: &helper,
    };
    let dep_results = executor.run(&deps_plan, &sources)?;
    let node = &prepared.plan.nodes[target_index];
    let package = &prepared.set.packages[&package_name];
    let deps = node
        .deps
        .iter()
        .chain(transitive(&prepared.plan, target_index).iter())
        .map(|&d| {
            (
                prepared.plan.nodes[d].package.clone(),
                dep_results[d].built.output_dir.join("tree"),
            )
        })
        .collect();
    let job = NodeBuild {
        package,
        arch,
        input_hash: &node.input_hash,
        environment: &prepared.environments[&arch],
        sources: (0..package.sources.len())
            .map(|s| sources[&(package_name.clone(), s)].clone())
            .collect(),
        deps,
        source_date_epoch: prepared.set.source_date_epoch,
        conditions: executor.conditions.clone(),
        keep_failed: false,
        sandbox_helper: &helper,
    };
    let argv = if args.command.is_empty() {
        let shell = if std::path::Path::new("/usr/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        vec![shell.to_string()]
    } else {
        args.command
    };
    ctx.ui.status(&format!(
        "entering the build sandbox of {package_name} ({arch}); sources in /build/src, $out is /out (discarded on exit)"
    ));
    let outcome = job.shell(&store, argv)?;
    Ok(match outcome {
        hb_sandbox::Outcome::Exited(code) => code,
        hb_sandbox::Outcome::Signaled(sig) => 128 + sig,
    })
}

/// Every node the node at `index` depends on, directly or not.
fn transitive(plan: &Plan, index: usize) -> Vec<usize> {
    let mut seen = Vec::new();
    let mut stack = plan.nodes[index].deps.clone();
    while let Some(d) = stack.pop() {
        if !seen.contains(&d) {
            seen.push(d);
            stack.extend(plan.nodes[d].deps.iter().copied());
        }
    }
    seen
}
