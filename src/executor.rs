//! Carrying out a plan: fetching every source it needs, then building its nodes in
//! dependency order, independent nodes in parallel up to `--jobs`, with a progress display.
//!
//! It decides order and parallelism only; one node's build is [`crate::build`]'s job.

use crate::build::{BuildError, Built, NodeBuild};
use crate::env::BuildEnvironment;
use crate::fetch::{FetchError, Fetcher};
use crate::plan::Plan;
use crate::recipe::{Set, SourceKind};
use crate::store::Store;
use crate::types::{Arch, PackageName};
use crate::ui::{FetchProgress, Ui};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Where each source of each package is, keyed by (package, source index).
pub type SourcePaths = BTreeMap<(PackageName, usize), PathBuf>;

/// Fetch (or find in the store) every source the plan's nodes need.
pub fn fetch_sources(set: &Set, plan: &Plan, fetcher: &Fetcher<'_>, ui: &Ui) -> Result<SourcePaths, FetchError> {
    let packages: BTreeSet<&PackageName> = plan.nodes.iter().map(|n| &n.package).collect();
    let mut paths = SourcePaths::new();
    for name in packages {
        let package = &set.packages[name];
        for (index, source) in package.sources.iter().enumerate() {
            let path = match &source.kind {
                SourceKind::Remote { urls, sha256 } => {
                    let progress = FetchProgress(ui, Default::default());
                    fetcher.fetch(&format!("{name}: {}", source.display_name()), urls, sha256, &progress)?
                }
                SourceKind::LocalDir { path } => path.clone(),
            };
            paths.insert((name.clone(), index), path);
        }
    }
    Ok(paths)
}

pub struct Executor<'a> {
    pub store: &'a Store,
    pub set: &'a Set,
    pub ui: &'a Ui,
    pub environments: &'a BTreeMap<Arch, BuildEnvironment>,
    pub jobs: usize,
    /// Canonical for normal builds; varied by verify-repro.
    pub conditions: crate::variation::Conditions,
    /// Per-node conditions overriding `conditions` (verify-repro runs all its rounds as one
    /// plan, so both cores stay busy across round boundaries).
    pub node_conditions: Option<Vec<crate::variation::Conditions>>,
    /// When set, every node is built from scratch into `<dir>/<node index>` and the store's
    /// outputs are neither used nor written (verify-repro rounds).
    pub fresh_into: Option<PathBuf>,
    pub keep_failed: bool,
    pub sandbox_helper: &'a Path,
}

/// One node's result.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub built: Built,
    pub cached: bool,
}

enum State {
    Pending,
    Running,
    Done(Box<NodeResult>),
    Failed,
}

impl Executor<'_> {
    /// Build every node of `plan`. On the first failure no new build starts; running ones
    /// finish; the first error is returned and later ones are shown as warnings.
    pub fn run(&self, plan: &Plan, sources: &SourcePaths) -> Result<Vec<NodeResult>, BuildError> {
        self.run_indexed(plan, sources).map_err(|(_, e)| e)
    }

    /// Like [`Executor::run`], with the index of the node whose build failed first.
    pub fn run_indexed(&self, plan: &Plan, sources: &SourcePaths) -> Result<Vec<NodeResult>, (usize, BuildError)> {
        let n = plan.nodes.len();
        let mut states: Vec<State> = (0..n).map(|_| State::Pending).collect();
        let bar = self.ui.bar(n as u64, "build");
        let mut running: BTreeMap<usize, String> = BTreeMap::new();
        let mut first_error: Option<(usize, BuildError)> = None;
        let (tx, rx) = mpsc::channel::<(usize, Result<(Built, bool), BuildError>)>();
        std::thread::scope(|scope| loop {
            while first_error.is_none() && running.len() < self.jobs.max(1) {
                // Emulated builds are ~10x slower: start them first so they do not end up
                // alone on the critical path; otherwise plan order.
                let ready = (0..n)
                    .filter(|&i| {
                        matches!(states[i], State::Pending)
                            && plan.nodes[i].deps.iter().all(|&d| matches!(states[d], State::Done(_)))
                    })
                    .min_by_key(|&i| (self.environments[&plan.nodes[i].arch].method != "emulated", i));
                let Some(i) = ready else { break };
                let node = &plan.nodes[i];
                let job = self.node_build(plan, i, &states, sources);
                states[i] = State::Running;
                running.insert(i, format!("{} ({})", node.package, node.arch));
                let tx = tx.clone();
                let store = self.store;
                let fresh = self.fresh_into.as_ref().map(|dir| dir.join(i.to_string()));
                scope.spawn(move || {
                    let result = match fresh {
                        Some(dest) => job.run_fresh(store, &dest).map(|built| (built, false)),
                        None => job.run(store),
                    };
                    let _ = tx.send((i, result));
                });
            }
            if running.is_empty() {
                break;
            }
            bar.set_message(format!(
                "building {}",
                running.values().cloned().collect::<Vec<_>>().join(", ")
            ));
            let Ok((i, result)) = rx.recv() else { break };
            let label = running.remove(&i).unwrap_or_default();
            bar.inc(1);
            match result {
                Ok((built, cached)) => {
                    let how = if cached {
                        "cached".to_string()
                    } else {
                        format!("built in {:.1} s", built.meta.duration_ms as f64 / 1000.0)
                    };
                    self.ui
                        .debug(&format!("{label}: {how} -> {}", built.output_dir.display()));
                    if !cached {
                        self.ui.status(&format!("{label}: {how}"));
                    }
                    states[i] = State::Done(Box::new(NodeResult { built, cached }));
                }
                Err(e) => {
                    states[i] = State::Failed;
                    if first_error.is_none() {
                        first_error = Some((i, e));
                    } else {
                        self.ui.warn(&format!("{label} also failed: {e}"));
                    }
                }
            }
        });
        bar.finish_and_clear();
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(states
            .into_iter()
            .map(|s| match s {
                State::Done(r) => *r,
                _ => unreachable!("without an error every node is done"),
            })
            .collect())
    }

    fn node_build<'p>(&'p self, plan: &'p Plan, i: usize, states: &[State], sources: &SourcePaths) -> NodeBuild<'p> {
        let node = &plan.nodes[i];
        let package = &self.set.packages[&node.package];
        let mut deps = BTreeMap::new();
        let mut stack: Vec<usize> = node.deps.clone();
        while let Some(d) = stack.pop() {
            if let State::Done(result) = &states[d] {
                let dep = &plan.nodes[d];
                if deps
                    .insert(dep.package.clone(), result.built.output_dir.join("tree"))
                    .is_none()
                {
                    stack.extend(dep.deps.iter().copied());
                }
            }
        }
        NodeBuild {
            package,
            arch: node.arch,
            input_hash: &node.input_hash,
            environment: &self.environments[&node.arch],
            sources: (0..package.sources.len())
                .map(|s| sources[&(node.package.clone(), s)].clone())
                .collect(),
            deps,
            source_date_epoch: self.set.source_date_epoch,
            conditions: match &self.node_conditions {
                Some(per_node) => per_node[i].clone(),
                None => self.conditions.clone(),
            },
            keep_failed: self.keep_failed,
            sandbox_helper: self.sandbox_helper,
        }
    }
}
