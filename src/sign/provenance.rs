//! SLSA provenance v1 as an in-toto Statement v1: what was built, from what, how, by whom.
//!
//! Owns: reading `build-report.json` (the parts hb relies on), the recipe set's identity (a
//! digest over its files, and its git commit and whether the work tree is dirty), and
//! [`statement`], a pure function from [`ProvenanceInputs`] to the statement JSON. Does not:
//! sign ([`super::dsse`]) or write files ([`super::attest`]).
//!
//! Fields hb fills in: `buildType` [`BUILD_TYPE`]; `externalParameters` the set (name and
//! path), the targets, the method per arch, SOURCE_DATE_EPOCH; `internalParameters` the
//! environment per arch and the reproducibility gate (enforced or bypassed, by which command);
//! `resolvedDependencies` every source (URL + sha256), every environment `.deb` (as
//! `mirror://debian/<pool path>` + sha256) and the recipe set (sha256 + gitCommit);
//! `runDetails.builder` the builder id and hb's version; `metadata` start and finish times of
//! the build; `byproducts` the SBOMs and the verify-repro report (verdict, rounds, variations).

use super::gate::GateRecord;
use super::sbom::SbomPackage;
use super::SignError;
use crate::lock::LockedDeb;
use crate::types::{Arch, Sha256};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What an hb build is; a documentation URI, never fetched (`.invalid` cannot resolve).
pub const BUILD_TYPE: &str = "https://hb.invalid/build-type/hb-build/v1";
/// The default builder id: a build run by hb on a machine nobody vouches for. CI builders
/// that are trusted pass their own with `--builder-id`.
pub const DEFAULT_BUILDER_ID: &str = "https://hb.invalid/builder/local/v1";

/// `build-report.json`, as `hb build` writes it (unknown fields ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct BuildReport {
    pub set: String,
    pub hb_version: String,
    pub source_date_epoch: u64,
    pub arches: Vec<Arch>,
    pub started_unix: u64,
    pub finished_unix: u64,
    #[serde(default)]
    pub nodes: Vec<ReportNode>,
    pub artifacts: Vec<ReportArtifact>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReportNode {
    pub package: String,
    pub arch: Arch,
    pub method: String,
    #[serde(default)]
    pub environment: Option<ReportEnvironment>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ReportEnvironment {
    pub kind: String,
    pub digest: String,
    pub impure: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReportArtifact {
    pub file: String,
    pub arch: Arch,
    pub sha256: Sha256,
    /// Unused, but still parsed: a report with a malformed size stays refused.
    #[serde(default)]
    pub size: u64,
}

impl BuildReport {
    pub fn read(path: &Path) -> Result<BuildReport, SignError> {
        if !path.is_file() {
            return Err(SignError::NotFound {
                path: path.to_owned(),
                what: "the build report `hb build` writes next to the artifacts",
            });
        }
        serde_json::from_slice(&fs_err::read(path)?).map_err(|e| SignError::BadInput {
            path: path.to_owned(),
            message: format!("not an hb build report: {e}"),
        })
    }

    /// The method each arch was built with (`native`, `emulated`, `cross`, `host`).
    pub fn methods(&self) -> BTreeMap<Arch, String> {
        self.nodes.iter().map(|n| (n.arch, n.method.clone())).collect()
    }

    pub fn environments(&self) -> BTreeMap<Arch, ReportEnvironment> {
        self.nodes
            .iter()
            .filter_map(|n| n.environment.clone().map(|e| (n.arch, e)))
            .collect()
    }

    /// Names of the packages built for `arch` (all of them when the report lists no nodes).
    pub fn packages_for(&self, arch: Arch) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.arch == arch)
            .map(|n| n.package.clone())
            .collect();
        (!names.is_empty()).then_some(names)
    }
}

/// The recipe set as a dependency: its files' digest and its git state.
#[derive(Debug, Clone)]
pub struct RecipeSetIdentity {
    /// Relative to the top of its git work tree (the same in every clone), else as given on
    /// the command line.
    pub path: PathBuf,
    pub sha256: Sha256,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
}

/// sha256 over every file of the set directory (sorted relative paths; `.git` skipped): for
/// each, `path NUL length NUL bytes` (a symlink: `path NUL "symlink" NUL target`).
pub fn set_digest(dir: &Path) -> Result<Sha256, SignError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let walker = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walker {
        let entry = entry.map_err(|e| SignError::Io(e.into()))?;
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let name = relative.to_string_lossy();
        if entry.file_type().is_symlink() {
            let target = fs_err::read_link(entry.path())?;
            hasher.update(format!("{name}\0symlink\0{}", target.display()).as_bytes());
        } else if entry.file_type().is_file() {
            let bytes = fs_err::read(entry.path())?;
            hasher.update(format!("{name}\0{}\0", bytes.len()).as_bytes());
            hasher.update(&bytes);
        }
    }
    Ok(Sha256::from_digest(&hasher.finalize()))
}

/// The git state of the work tree holding a directory, when it is in one (and git is installed).
#[derive(Debug, Clone)]
pub struct GitState {
    pub commit: String,
    /// Whether the directory has uncommitted changes (`None` when git could not say).
    pub dirty: Option<bool>,
    /// The directory relative to the top of the work tree.
    pub prefix: PathBuf,
}

/// See [`GitState`].
pub fn git_state(dir: &Path) -> Option<GitState> {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let commit = run(&["rev-parse", "HEAD"])?.trim().to_string();
    let prefix = run(&["rev-parse", "--show-prefix"])?;
    let dirty = run(&["status", "--porcelain", "--", "."]).map(|s| !s.trim().is_empty());
    Some(GitState {
        commit,
        dirty,
        prefix: PathBuf::from(prefix.trim().trim_end_matches('/')),
    })
}

/// Everything the statement is made of.
pub struct ProvenanceInputs<'a> {
    pub report: &'a BuildReport,
    /// Name and sha256 of every artifact.
    pub subjects: &'a [(String, Sha256)],
    /// Every package built, with its sources.
    pub packages: &'a [SbomPackage],
    /// Every environment `.deb`, any arch.
    pub debs: &'a [LockedDeb],
    pub recipe_set: &'a RecipeSetIdentity,
    pub builder_id: &'a str,
    /// The gate as `hb attest` passed it.
    pub attest_gate: &'a GateRecord,
    /// The gate as `hb sign` passed it, when its record was found.
    pub sign_gate: Option<&'a GateRecord>,
    /// Files written alongside (the SBOMs): (name, sha256).
    pub byproducts: &'a [(String, Sha256)],
}

/// The in-toto Statement v1 with the SLSA provenance v1 predicate.
pub fn statement(inputs: &ProvenanceInputs<'_>) -> Value {
    let report = inputs.report;
    let subjects: Vec<Value> = inputs
        .subjects
        .iter()
        .map(|(name, sha256)| json!({"name": name, "digest": {"sha256": sha256}}))
        .collect();

    let mut dependencies = Vec::new();
    for package in inputs.packages {
        for (urls, sha256) in &package.sources {
            let mut value = json!({
                "name": format!("{}-{}", package.name, package.version),
                "uri": urls[0],
                "digest": {"sha256": sha256},
            });
            if urls.len() > 1 {
                value["annotations"] = json!({"mirrors": &urls[1..]});
            }
            dependencies.push(value);
        }
    }
    let mut debs: BTreeMap<String, &LockedDeb> = BTreeMap::new();
    for deb in inputs.debs {
        debs.insert(deb.url(), deb);
    }
    for (url, deb) in debs {
        dependencies.push(json!({
            "name": deb.label(),
            "uri": url,
            "digest": {"sha256": deb.sha256},
        }));
    }
    let set = inputs.recipe_set;
    let mut set_digest = json!({"sha256": set.sha256});
    if let Some(commit) = &set.git_commit {
        set_digest["gitCommit"] = json!(commit);
    }
    dependencies.push(json!({
        "name": format!("recipe-set:{}", report.set),
        "digest": set_digest,
        "annotations": {
            "path": set.path.display().to_string(),
            "git": match (&set.git_commit, set.git_dirty) {
                (Some(_), Some(true)) => "dirty",
                (Some(_), _) => "clean",
                (None, _) => "not a git work tree",
            },
        },
    }));

    let enforced = inputs.attest_gate.enforced && inputs.sign_gate.is_none_or(|g| g.enforced);
    let mut bypassed_by = Vec::new();
    if !inputs.attest_gate.enforced {
        bypassed_by.push("hb attest --no-repro-gate");
    }
    if inputs.sign_gate.is_some_and(|g| !g.enforced) {
        bypassed_by.push("hb sign --no-repro-gate");
    }

    let mut byproducts: Vec<Value> = inputs
        .byproducts
        .iter()
        .map(|(name, sha256)| json!({"name": name, "digest": {"sha256": sha256}}))
        .collect();
    if let Some(repro) = &inputs.attest_gate.report {
        byproducts.push(json!({
            "name": "verify-repro-report",
            "digest": {"sha256": repro.sha256},
            "annotations": {
                "path": repro.path,
                "verdict": repro.verdict,
                "rounds": repro.rounds,
                "variations": repro.variations,
            },
        }));
    }

    json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "set": {"name": report.set, "path": set.path.display().to_string()},
                    "targets": report.arches,
                    "method": report.methods(),
                    "sourceDateEpoch": report.source_date_epoch,
                },
                "internalParameters": {
                    "environments": report.environments(),
                    "reproGate": {
                        "enforced": enforced,
                        "bypassedBy": bypassed_by,
                    },
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": inputs.builder_id,
                    "version": {"hb": report.hb_version},
                },
                "metadata": {
                    "startedOn": super::rfc3339(report.started_unix),
                    "finishedOn": super::rfc3339(report.finished_unix),
                },
                "byproducts": byproducts,
            },
        },
    })
}
