//! `hb attest <SET>`: provenance and SBOMs for the artifacts of the last build.
//!
//! Owns: the order of work — read `build-report.json`, check that every artifact in the dist
//! directory is the one the report names (digest), pass the reproducibility gate, write the
//! SBOMs (`<artifact>.spdx.json`, `<artifact>.cdx.json`), then the provenance naming them as
//! byproducts, signed in a DSSE envelope (`<set>.intoto.jsonl`, one envelope per line).
//! Does not: load the set or its lock (the command does, so their errors keep their own
//! diagnostics), pick the key, or talk to people.

use super::detached::read_record;
use super::gate::{self, GateRecord};
use super::keys::KeyEntry;
use super::provenance::{self, BuildReport, ProvenanceInputs, RecipeSetIdentity};
use super::sbom::{self, SbomInputs};
use super::{cyclonedx, dsse, spdx, Passphrase, SignError};
use crate::lock::Lock;
use crate::recipe::{Environment, Set};
use crate::types::Sha256;
use std::path::{Path, PathBuf};

/// Name of the build report in the dist directory (as `hb build` writes it).
pub const BUILD_REPORT_NAME: &str = "build-report.json";
const PUBLIC_FILE_MODE: u32 = 0o644;

pub struct AttestOptions<'a> {
    pub set: &'a Set,
    /// The set directory as the user gave it (recorded in the provenance).
    pub set_path: &'a Path,
    pub lock: Option<&'a Lock>,
    /// `set.cross.lock`, for artifacts built with `--cross`.
    pub cross_lock: Option<&'a Lock>,
    pub dist: &'a Path,
    /// Where to write; `None`: the dist directory.
    pub out: Option<&'a Path>,
    pub key: &'a KeyEntry,
    pub passphrase: &'a Passphrase,
    pub repro_report: PathBuf,
    pub no_repro_gate: bool,
    pub builder_id: &'a str,
}

#[derive(Debug)]
pub struct AttestOutcome {
    pub provenance: PathBuf,
    pub sboms: Vec<PathBuf>,
    pub subjects: Vec<(String, Sha256)>,
    pub gate: GateRecord,
    pub key_id: String,
}

pub fn attest(options: &AttestOptions<'_>, progress: &dyn Fn(&str)) -> Result<AttestOutcome, SignError> {
    let report_path = options.dist.join(BUILD_REPORT_NAME);
    let report = BuildReport::read(&report_path)?;
    if report.set != options.set.name {
        return Err(SignError::BadInput {
            path: report_path,
            message: format!(
                "the build report is for set {:?}, not {:?} ({})",
                report.set,
                options.set.name,
                options.set_path.display()
            ),
        });
    }
    if report.artifacts.is_empty() {
        return Err(SignError::BadInput {
            path: report_path,
            message: "the build report lists no artifacts".into(),
        });
    }
    let mut subjects = Vec::new();
    let mut gate_files = Vec::new();
    for artifact in &report.artifacts {
        let path = options.dist.join(&artifact.file);
        if !path.is_file() {
            return Err(SignError::NotFound {
                path,
                what: "an artifact named by the build report",
            });
        }
        progress(&format!("hashing {}", artifact.file));
        let actual = super::sums::sha256_file(&path)?;
        if actual != artifact.sha256 {
            return Err(SignError::ArtifactMismatch {
                file: path,
                report: report_path,
                expected: artifact.sha256.to_string(),
                actual: actual.to_string(),
            });
        }
        subjects.push((artifact.file.clone(), actual.clone()));
        gate_files.push((path, actual));
    }
    let gate = gate::check(&gate_files, &options.repro_report, options.no_repro_gate)?;
    let out = options.out.unwrap_or(options.dist);
    // The signing record counts only when it signed these very artifacts.
    let sign_gate = read_record(out)?.and_then(|record| {
        let signed_these = subjects
            .iter()
            .all(|(name, sha)| record.files.iter().any(|f| &f.name == name && &f.sha256 == sha));
        signed_these.then_some(record.repro_gate)
    });
    let ecdsa = options.key.unlock_ecdsa(options.passphrase)?;

    let methods = report.methods();
    let environments = report.environments();
    let mut all_packages = Vec::new();
    let mut all_debs = Vec::new();
    let mut byproducts = Vec::new();
    let mut sboms = Vec::new();
    for artifact in &report.artifacts {
        progress(&format!("reading {}", artifact.file));
        let path = options.dist.join(&artifact.file);
        let contents = sbom::read_artifact(&path)?;
        let names = contents
            .manifest_packages
            .clone()
            .or_else(|| report.packages_for(artifact.arch))
            .unwrap_or_else(|| options.set.packages.keys().map(|n| n.to_string()).collect());
        let packages = sbom::packages_of(options.set, &names)?;
        let method = methods.get(&artifact.arch).map(String::as_str).unwrap_or("native");
        let debs = match options.set.environment {
            Environment::Debian(_) => sbom::debs_of(options.lock, options.cross_lock, artifact.arch, method),
            Environment::Host => Vec::new(),
        };
        let impure = matches!(options.set.environment, Environment::Host)
            || environments.get(&artifact.arch).is_some_and(|e| e.impure);
        let inputs = SbomInputs {
            artifact_name: artifact.file.clone(),
            artifact_sha256: artifact.sha256.clone(),
            set_name: report.set.clone(),
            arch: artifact.arch,
            source_date_epoch: report.source_date_epoch,
            hb_version: report.hb_version.clone(),
            packages: packages.clone(),
            debs: debs.clone(),
            files: contents.files,
            impure_environment: impure,
        };
        for (suffix, document) in [
            ("spdx.json", spdx::document(&inputs)),
            ("cdx.json", cyclonedx::document(&inputs)),
        ] {
            let name = format!("{}.{suffix}", artifact.file);
            let mut bytes = serde_json::to_vec_pretty(&document).expect("json values always serialize");
            bytes.push(b'\n');
            let path = out.join(&name);
            super::write_file(&path, &bytes, PUBLIC_FILE_MODE)?;
            byproducts.push((name, Sha256::of_bytes(&bytes)));
            sboms.push(path);
        }
        for package in packages {
            if !all_packages.iter().any(|p: &sbom::SbomPackage| p.name == package.name) {
                all_packages.push(package);
            }
        }
        all_debs.extend(debs.into_iter().map(|d| d.deb));
    }
    all_packages.sort_by(|a, b| a.name.cmp(&b.name));

    progress("writing the provenance");
    let git = provenance::git_state(&options.set.dir);
    let recipe_set = RecipeSetIdentity {
        path: match &git {
            Some(git) if !git.prefix.as_os_str().is_empty() => git.prefix.clone(),
            _ => options.set_path.to_owned(),
        },
        sha256: provenance::set_digest(&options.set.dir)?,
        git_commit: git.as_ref().map(|g| g.commit.clone()),
        git_dirty: git.and_then(|g| g.dirty),
    };
    let statement = provenance::statement(&ProvenanceInputs {
        report: &report,
        subjects: &subjects,
        packages: &all_packages,
        debs: &all_debs,
        recipe_set: &recipe_set,
        builder_id: options.builder_id,
        attest_gate: &gate,
        sign_gate: sign_gate.as_ref(),
        byproducts: &byproducts,
    });
    let payload = serde_json::to_vec(&statement).expect("json values always serialize");
    let envelope = dsse::sign(dsse::IN_TOTO_PAYLOAD_TYPE, &payload, &ecdsa)?;
    let mut line = serde_json::to_vec(&envelope).expect("plain data");
    line.push(b'\n');
    let provenance_path = out.join(format!("{}.intoto.jsonl", report.set));
    super::write_file(&provenance_path, &line, PUBLIC_FILE_MODE)?;
    Ok(AttestOutcome {
        provenance: provenance_path,
        sboms,
        subjects,
        gate,
        key_id: options.key.info.ecdsa_key_id.clone(),
    })
}
