//! Reproducibility verification: every node of a plan rebuilt from scratch in N rounds
//! (round 1 canonical, later rounds under varied conditions), outputs compared per file,
//! differences explained by rebuilding with one variation at a time.
//!
//! It asks [`crate::executor`] and [`crate::build`] to build (never reusing the store's
//! outputs for the nodes under test) and [`compare`] to diff; [`report`] writes the results.

pub mod compare;
pub mod report;

use crate::archive::{self, Compression, Manifest, PackOptions};
use crate::build::{BuildError, NodeBuild};
use crate::env::BuildEnvironment;
use crate::executor::{Executor, NodeResult, SourcePaths};
use crate::plan::Plan;
use crate::recipe::Set;
use crate::store::{Store, StoreError};
use crate::types::{Arch, Sha256};
use crate::ui::Ui;
use crate::variation::{Conditions, Variation};
use compare::FileDiff;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Reproduced,
    Differs,
    Failed,
}

/// One round's build of one node.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub round: usize,
    /// Digest of the output's manifest (every file's path, kind, mode, sha256).
    pub content_digest: String,
    /// sha256 of the output packed as a deterministic tar.gz.
    pub archive_sha256: String,
    pub duration_ms: u64,
}

/// What explaining a difference found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Explanation {
    /// Variations that, applied alone, change the output.
    pub culprits: Vec<Variation>,
    /// The output changed even without any variation (time, randomness, races).
    pub nondeterministic: bool,
    /// Rebuilt with the canonical dependencies and every variation alone, it reproduced:
    /// the difference comes from a dependency.
    pub from_dependencies: bool,
    /// Variations that could not be applied in this environment (e.g. clock without
    /// libfaketime).
    pub unavailable: Vec<Variation>,
    pub hints: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub package: String,
    pub version: String,
    pub arch: Arch,
    pub method: String,
    pub verdict: Verdict,
    pub rounds: Vec<RoundResult>,
    /// Differences between round 1 and the first round that differs.
    pub differences: Vec<FileDiff>,
    pub differing_files: usize,
    pub explanation: Option<Explanation>,
    /// Why a build failed (with its log path), when it did.
    pub error: Option<String>,
    /// The diffoscope report, when diffoscope is installed and the node differs.
    pub diffoscope: Option<PathBuf>,
}

/// The round (0-based) whose build failed first, and the error.
type RoundFailure = (usize, BuildError);

pub struct ReproOptions {
    pub rounds: usize,
    pub variations: Vec<Variation>,
    pub explain: bool,
    pub jobs: usize,
    pub hb_jobs: usize,
    /// Where round outputs, explanation builds and diffoscope reports go.
    pub work: PathBuf,
    pub report_dir: PathBuf,
}

pub struct ReproRun {
    pub nodes: Vec<NodeReport>,
    /// Round 1's results (canonical), complete only when no round-1 build failed.
    pub canonical: Option<Vec<NodeResult>>,
    pub duration_ms: u64,
    /// Wall time of each round and of the explanation, in ms.
    pub phase_ms: BTreeMap<String, u64>,
    /// Sum of the build times of every node build (for the parallelism figure).
    pub build_ms_total: u64,
    pub explanation_builds: usize,
}

pub struct Context<'a> {
    pub store: &'a Store,
    pub set: &'a Set,
    pub plan: &'a Plan,
    pub environments: &'a BTreeMap<Arch, BuildEnvironment>,
    pub sources: &'a SourcePaths,
    pub ui: &'a Ui,
    pub sandbox_helper: &'a Path,
}

/// Run every round, compare, explain.
pub fn verify(cx: &Context<'_>, options: &ReproOptions) -> Result<ReproRun, StoreError> {
    let clock = Instant::now();
    let canonical = Conditions::canonical(options.hb_jobs);
    let varied = canonical.varied(&options.variations);
    let mut phase_ms = BTreeMap::new();
    let mut build_ms_total = 0;
    // Every round's copy of every node in one plan: rounds are independent, so the
    // executor keeps all cores busy instead of waiting at each round's tail.
    let n = cx.plan.nodes.len();
    let rounds_count = options.rounds.max(1);
    let mut combined = Plan { nodes: Vec::new() };
    let mut node_conditions = Vec::new();
    for round in 0..rounds_count {
        for node in &cx.plan.nodes {
            let mut copy = node.clone();
            copy.deps.iter_mut().for_each(|d| *d += round * n);
            combined.nodes.push(copy);
            node_conditions.push(if round == 0 { canonical.clone() } else { varied.clone() });
        }
    }
    cx.ui.status(&format!(
        "{rounds_count} rounds of {n} build(s): round 1 canonical, later rounds varying {}",
        names(&options.variations)
    ));
    let dir = options.work.join("rounds");
    fs_err::create_dir_all(&dir)?;
    let started = Instant::now();
    let executor = Executor {
        store: cx.store,
        set: cx.set,
        ui: cx.ui,
        environments: cx.environments,
        jobs: options.jobs,
        conditions: canonical.clone(),
        node_conditions: Some(node_conditions),
        fresh_into: Some(dir),
        keep_failed: false,
        sandbox_helper: cx.sandbox_helper,
    };
    let combined_result = executor.run_indexed(&combined, cx.sources);
    phase_ms.insert("rounds".into(), started.elapsed().as_millis() as u64);
    // Node `i` of round `r` is `results[r * n + i]`. The executor stops at the first
    // failure: no round is complete then.
    let (results, failure): (Option<Vec<NodeResult>>, Option<RoundFailure>) = match combined_result {
        Ok(results) => {
            build_ms_total += results.iter().map(|r| r.built.meta.duration_ms).sum::<u64>();
            (Some(results), None)
        }
        Err((index, error)) => (None, Some((index / n.max(1), error))),
    };

    let mut nodes = Vec::new();
    for (i, node) in cx.plan.nodes.iter().enumerate() {
        let package = &cx.set.packages[&node.package];
        let env = &cx.environments[&node.arch];
        let mut report = NodeReport {
            package: node.package.to_string(),
            version: package.version.clone(),
            arch: node.arch,
            method: env.method.clone(),
            verdict: Verdict::Reproduced,
            rounds: Vec::new(),
            differences: Vec::new(),
            differing_files: 0,
            explanation: None,
            error: None,
            diffoscope: None,
        };
        if let Some((failed_round, error)) = &failure {
            report.verdict = Verdict::Failed;
            report.error = Some(if failed_node(error) == Some((node.package.as_str(), node.arch)) {
                format!("round {}: {error}", failed_round + 1)
            } else {
                "not built: another build failed".to_string()
            });
        }
        let Some(results) = &results else {
            nodes.push(report);
            continue;
        };
        for r in 0..rounds_count {
            let built = &results[r * n + i].built;
            report.rounds.push(RoundResult {
                round: r + 1,
                content_digest: built.meta.content_digest.clone(),
                archive_sha256: archive_digest(&built.output_dir.join("tree"), cx.set.source_date_epoch)?,
                duration_ms: built.meta.duration_ms,
            });
        }
        let first = &report.rounds[0];
        if let Some(other) = report.rounds.iter().find(|r| r.content_digest != first.content_digest) {
            report.verdict = Verdict::Differs;
            let (a, b) = (&results[i], &results[(other.round - 1) * n + i]);
            let (ma, mb) = (manifest_of(&a.built.output_dir)?, manifest_of(&b.built.output_dir)?);
            let (diffs, total) = compare::compare(
                &ma,
                &mb,
                &a.built.output_dir.join("tree"),
                &b.built.output_dir.join("tree"),
                other.round,
            );
            report.differences = diffs;
            report.differing_files = total;
            report.diffoscope = run_diffoscope(
                &a.built.output_dir.join("tree"),
                &b.built.output_dir.join("tree"),
                &options.report_dir,
                &format!("{}-{}", node.package, node.arch),
            );
        }
        nodes.push(report);
    }

    let started = Instant::now();
    let mut explanation_builds = 0;
    if options.explain {
        if let Some(results) = &results {
            let canonical_results = &results[..n];
            #[allow(clippy::needless_range_loop)] // `explain` needs the node's plan index
            for i in 0..nodes.len() {
                if nodes[i].verdict != Verdict::Differs {
                    continue;
                }
                cx.ui.status(&format!(
                    "explaining {} ({}): rebuilding with one variation at a time",
                    nodes[i].package, nodes[i].arch
                ));
                let (explanation, builds) = explain(cx, options, i, canonical_results, &canonical)?;
                explanation_builds += builds;
                nodes[i].explanation = Some(explanation);
            }
        }
    }
    phase_ms.insert("explain".into(), started.elapsed().as_millis() as u64);
    Ok(ReproRun {
        nodes,
        canonical: results.map(|mut all| {
            all.truncate(n);
            all
        }),
        duration_ms: clock.elapsed().as_millis() as u64,
        phase_ms,
        build_ms_total,
        explanation_builds,
    })
}

fn names(variations: &[Variation]) -> String {
    if variations.is_empty() {
        "nothing".into()
    } else {
        variations.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
    }
}

/// The (package, arch) a build error is about.
fn failed_node(error: &BuildError) -> Option<(&str, Arch)> {
    match error {
        BuildError::Failed { package, arch, .. }
        | BuildError::EmptyOutput { package, arch, .. }
        | BuildError::Sandbox { package, arch, .. }
        | BuildError::Store { package, arch, .. } => Some((package.as_str(), *arch)),
        BuildError::Unpack { .. } => None,
    }
}

fn manifest_of(output_dir: &Path) -> Result<Manifest, StoreError> {
    let bytes = fs_err::read(output_dir.join("manifest.json"))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: output_dir.join("manifest.json"),
        message: e.to_string(),
    })
}

/// sha256 of the tree packed as hb packs artifacts (deterministic tar.gz).
fn archive_digest(tree: &Path, mtime: u64) -> Result<String, StoreError> {
    let mut bytes = Vec::new();
    archive::pack(
        &[tree],
        &mut bytes,
        &PackOptions {
            top_dir: None,
            mtime,
            compression: Compression::Gzip,
            level: None,
        },
    )?;
    Ok(Sha256::of_bytes(&bytes).to_string())
}

/// Rebuild node `i` with its canonical dependencies: once without variation (control), then
/// once per selected variation alone; name what changes the output.
fn explain(
    cx: &Context<'_>,
    options: &ReproOptions,
    i: usize,
    canonical_results: &[NodeResult],
    canonical: &Conditions,
) -> Result<(Explanation, usize), StoreError> {
    let node = &cx.plan.nodes[i];
    let package = &cx.set.packages[&node.package];
    let env = &cx.environments[&node.arch];
    let reference = canonical_results[i].built.meta.content_digest.clone();
    let mut deps = BTreeMap::new();
    let mut stack = node.deps.clone();
    while let Some(d) = stack.pop() {
        let dep = &cx.plan.nodes[d];
        if deps
            .insert(dep.package.clone(), canonical_results[d].built.output_dir.join("tree"))
            .is_none()
        {
            stack.extend(dep.deps.iter().copied());
        }
    }
    let mut trials: Vec<Option<Variation>> = vec![None];
    let mut explanation = Explanation::default();
    for &v in &options.variations {
        if v == Variation::Clock && env.faketime_library().is_none() {
            explanation.unavailable.push(v);
            continue;
        }
        trials.push(Some(v));
    }
    let dir = options.work.join(format!("explain-{}-{}", node.package, node.arch));
    fs_err::create_dir_all(&dir)?;
    let outcomes: Vec<(Option<Variation>, Result<String, String>)> = {
        let queue = std::sync::Mutex::new(trials.iter().copied().enumerate().collect::<Vec<_>>());
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..options.jobs.max(1).min(trials.len()) {
                scope.spawn(|| loop {
                    let Some((t, variation)) = queue.lock().expect("queue").pop() else {
                        break;
                    };
                    let conditions = match variation {
                        None => canonical.clone(),
                        Some(v) => canonical.varied(&[v]),
                    };
                    let job = NodeBuild {
                        package,
                        arch: node.arch,
                        input_hash: &node.input_hash,
                        environment: env,
                        sources: (0..package.sources.len())
                            .map(|s| cx.sources[&(node.package.clone(), s)].clone())
                            .collect(),
                        deps: deps.clone(),
                        source_date_epoch: cx.set.source_date_epoch,
                        conditions,
                        keep_failed: false,
                        sandbox_helper: cx.sandbox_helper,
                    };
                    let outcome = job
                        .run_fresh(cx.store, &dir.join(t.to_string()))
                        .map(|b| b.meta.content_digest)
                        .map_err(|e| e.to_string());
                    results.lock().expect("results").push((t, variation, outcome));
                });
            }
        });
        let mut r = results.into_inner().expect("results");
        r.sort_by_key(|(t, _, _)| *t);
        r.into_iter().map(|(_, v, o)| (v, o)).collect()
    };
    let builds = outcomes.len();
    let control_differs = matches!(&outcomes[0].1, Ok(d) if *d != reference);
    explanation.nondeterministic = control_differs;
    if !control_differs {
        for (variation, outcome) in &outcomes[1..] {
            if let (Some(v), Ok(digest)) = (variation, outcome) {
                if *digest != reference {
                    explanation.culprits.push(*v);
                    explanation.hints.push(format!("{v}: {}", v.hint()));
                }
            }
        }
    }
    if control_differs {
        explanation.hints.push(
            "the output changes even without any variation: randomness, the current time, or a race; seed random generators from SOURCE_DATE_EPOCH and avoid timestamps".into(),
        );
    } else if explanation.culprits.is_empty() {
        explanation.from_dependencies = true;
        explanation.hints.push(
            "with its dependencies' canonical outputs and each variation alone it reproduces: the difference comes from a dependency (or needs several variations at once)".into(),
        );
    }
    Ok((explanation, builds))
}

/// Run diffoscope on two trees when it is installed; the text report's path.
fn run_diffoscope(a: &Path, b: &Path, report_dir: &Path, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("diffoscope").is_file()))
        .unwrap_or(false);
    if !found {
        return None;
    }
    let dir = report_dir.join("diffoscope");
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join(format!("{name}.txt"));
    let status = std::process::Command::new("diffoscope")
        .arg("--text")
        .arg(&out)
        .arg("--no-progress")
        .arg(a)
        .arg(b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    // diffoscope exits 1 when it found differences, 0 when none.
    (status.code().is_some_and(|c| c <= 1) && out.exists()).then_some(out)
}
