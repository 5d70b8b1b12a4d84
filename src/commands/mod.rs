//! One function per command. Each turns parsed arguments into calls to the parts (recipe,
//! plan, fetch, executor, dist, store) and returns a `Result`; only `main` picks exit codes.

mod attest;
mod build;
mod fetch;
mod key;
mod lock;
mod shell;
mod sign;
mod store;
mod verify;
mod verify_repro;

use crate::cli::{Cli, ColorArg, Command};
use crate::env::BuildEnvironment;
use crate::env_vars::XDG_CACHE_HOME;
use crate::error::Error;
use crate::plan::{self, Plan, PlanInputs};
use crate::recipe::{self, SourceKind};
use crate::store::Store;
use crate::types::{Arch, PackageName};
use crate::ui::{ColorChoice, Ui, Verbosity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What every command gets.
pub struct Context {
    pub ui: Ui,
    pub store_path: PathBuf,
    pub jobs: usize,
}

impl Context {
    pub fn open_store(&self) -> Result<Store, Error> {
        Ok(Store::open(&self.store_path)?)
    }
}

/// Run the command; `Ok` carries the exit code for commands whose "no" is not an error.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let global = cli.global;
    let verbosity = if global.quiet {
        Verbosity::Quiet
    } else if global.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let color = match global.color {
        ColorArg::Auto => ColorChoice::Auto,
        ColorArg::Always => ColorChoice::Always,
        ColorArg::Never => ColorChoice::Never,
    };
    let ctx = Context {
        ui: Ui::new(verbosity, global.json, color),
        store_path: global.store.unwrap_or_else(default_store),
        jobs: global.jobs.unwrap_or_else(host_jobs),
    };
    match cli.command {
        Command::Build(args) => build::run(&ctx, args),
        Command::Fetch(args) => fetch::run(&ctx, args),
        Command::Lock(args) => lock::run(&ctx, args),
        Command::Shell(args) => shell::run(&ctx, args),
        Command::Store(args) => store::run(&ctx, args),
        Command::Key(args) => key::run(&ctx, args),
        Command::Sign(args) => sign::run(&ctx, args),
        Command::Attest(args) => attest::run(&ctx, args),
        Command::Verify(args) => verify::run(&ctx, args),
        Command::VerifyRepro(args) => verify_repro::run(&ctx, args),
    }
}

fn default_store() -> PathBuf {
    if let Some(cache) = std::env::var_os(XDG_CACHE_HOME).filter(|v| !v.is_empty()) {
        return PathBuf::from(cache).join("hb");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache/hb");
    }
    PathBuf::from(".hb-store")
}

/// A loaded set with its plan: the common first half of build, fetch and shell.
pub struct Prepared {
    pub set: recipe::Set,
    /// The packages asked for (their closure is planned).
    pub roots: Vec<PackageName>,
    pub arches: Vec<Arch>,
    pub environments: BTreeMap<Arch, BuildEnvironment>,
    pub plan: Plan,
}

/// Load the recipes at `target`, pick architectures, resolve environments, hash local
/// sources, and plan.
pub fn prepare(ctx: &Context, target: &Path, arch_args: &[String], cross: bool) -> Result<Prepared, Error> {
    let selection = recipe::load(target)?;
    let set = selection.set;
    let roots: Vec<PackageName> = match selection.package {
        Some(p) => vec![p],
        None => set.packages.keys().cloned().collect(),
    };
    let arches = parse_arches(arch_args, &set.targets)?;
    let environments = crate::env::resolve(&set, &arches, cross)?;
    for env in environments.values() {
        if env.impure {
            ctx.ui.warn(&format!(
                "set {:?} builds in the {} environment: impure, results depend on this machine's /usr",
                set.name, env.kind
            ));
            break;
        }
    }
    let closure = plan::topological_order(&set, &roots)?;
    let mut local_source_digests = BTreeMap::new();
    for name in &closure {
        for (index, source) in set.packages[name].sources.iter().enumerate() {
            if let SourceKind::LocalDir { path } = &source.kind {
                let digest = crate::archive::tree_digest(path).map_err(crate::store::StoreError::Archive)?;
                local_source_digests.insert(
                    (name.clone(), index),
                    crate::types::Sha256::parse(&digest).expect("tree digests are sha256 hex"),
                );
            }
        }
    }
    // Every arch of one set shares the environment kind; a per-arch digest and method go
    // into each arch's hashes through separate plans merged in order.
    let mut nodes = Vec::new();
    for &arch in &arches {
        let env = &environments[&arch];
        let inputs = PlanInputs {
            local_source_digests: local_source_digests.clone(),
            environment_digest: env.input_digest(),
            method: env.method.clone(),
        };
        let offset = nodes.len();
        let arch_plan = plan::plan(&set, &roots, &[arch], &inputs)?;
        nodes.extend(arch_plan.nodes.into_iter().map(|mut n| {
            n.deps.iter_mut().for_each(|d| *d += offset);
            n
        }));
    }
    Ok(Prepared {
        set,
        roots,
        arches,
        environments,
        plan: Plan { nodes },
    })
}

fn parse_arches(args: &[String], targets: &[Arch]) -> Result<Vec<Arch>, Error> {
    if args.is_empty() {
        return Ok(targets.to_vec());
    }
    let mut arches = Vec::new();
    for text in args {
        let arch = Arch::parse(text).ok_or_else(|| Error::Usage {
            message: format!("--arch: unknown architecture {text:?}"),
            hint: Some("expected amd64 or arm64 (comma-separated)".into()),
        })?;
        if !arches.contains(&arch) {
            arches.push(arch);
        }
    }
    Ok(arches)
}

/// How many builds a machine runs at once by default, and `HB_JOBS` inside builds.
pub fn host_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fetch every source of the plan and assemble every environment: what build, shell and
/// verify-repro do between planning and building.
pub fn fetch_and_materialize(
    ctx: &Context,
    prepared: &mut Prepared,
    store: &Store,
    offline: bool,
) -> Result<crate::executor::SourcePaths, Error> {
    let fetcher = crate::fetch::Fetcher::new(store, crate::fetch::Mirrors::from_environment(), offline);
    let sources = crate::executor::fetch_sources(&prepared.set, &prepared.plan, &fetcher, &ctx.ui)?;
    materialize_environments(ctx, prepared, store, &fetcher)?;
    Ok(sources)
}

/// Fetch and assemble every environment of `prepared`, with a spinner, then say which
/// environment each arch builds in.
pub fn materialize_environments(
    ctx: &Context,
    prepared: &mut Prepared,
    store: &Store,
    fetcher: &crate::fetch::Fetcher<'_>,
) -> Result<(), Error> {
    let spinner = ctx.ui.spinner("environment");
    let result = crate::env::materialize(&mut prepared.environments, store, fetcher, &|message| {
        spinner.set_message(message.to_string());
        ctx.ui.debug(message);
    });
    spinner.finish_and_clear();
    result?;
    for (arch, env) in &prepared.environments {
        ctx.ui.debug(&format!(
            "{arch}: {} environment {} ({})",
            env.kind, env.digest, env.method
        ));
    }
    Ok(())
}

/// The executable that serves as the sandbox's init: hb itself.
pub fn sandbox_helper() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(Error::CurrentExe)
}
