//! Distribution artifacts: `dist/<set>-linux-<arch>.tar.gz` (the merged output trees of the
//! set's packages under one top directory, plus `hb-manifest.json`) and the build report.
//!
//! The archive is deterministic: same outputs, same bytes (see [`crate::archive::pack`]).
//! The manifest inside holds no time or path of the build machine for the same reason.

use crate::archive::{self, Compression, PackOptions};
use crate::executor::NodeResult;
use crate::plan::Plan;
use crate::recipe::Set;
use crate::store::{write_atomic, Store, StoreError};
use crate::types::{Arch, Sha256};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Name of the package manifest at the top of every artifact.
pub const MANIFEST_NAME: &str = "hb-manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("packing {path}")]
    Pack {
        path: PathBuf,
        #[source]
        source: archive::ArchiveError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize)]
pub struct ArtifactManifest<'a> {
    pub set: &'a str,
    pub arch: Arch,
    pub source_date_epoch: u64,
    pub environment: &'a str,
    pub environment_digest: &'a str,
    pub impure: bool,
    pub packages: Vec<ManifestPackage<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ManifestPackage<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub license: &'a str,
    pub input_hash: &'a str,
    pub content_digest: &'a str,
    pub method: &'a str,
}

/// A written artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub arch: Arch,
    pub sha256: Sha256,
    pub size: u64,
    /// Name of the cached copy in the store's `artifacts/`.
    pub cache_key: Sha256,
}

/// Bump when the artifact layout changes, so cached archives are not reused.
const ARTIFACT_FORMAT_VERSION: u32 = 1;

impl Artifact {
    /// How reports list an artifact: file name, arch, sha256, size.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "arch": self.arch,
            "sha256": self.sha256,
            "size": self.size,
        })
    }
}

pub fn artifact_name(set: &str, arch: Arch) -> String {
    format!("{set}-linux-{arch}.tar.gz")
}

/// Pack the outputs of `arch`'s nodes into `out_dir/<set>-linux-<arch>.tar.gz`.
pub fn write_artifact(
    store: &Store,
    set: &Set,
    plan: &Plan,
    results: &[NodeResult],
    arch: Arch,
    out_dir: &Path,
    scratch: &Path,
) -> Result<Artifact, DistError> {
    let mut packages = Vec::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut environment = ("", "", false);
    for (node, result) in plan.nodes.iter().zip(results) {
        if node.arch != arch {
            continue;
        }
        let meta = &result.built.meta;
        let package = &set.packages[&node.package];
        environment = (
            &meta.environment.kind,
            &meta.environment.digest,
            meta.environment.impure,
        );
        packages.push(ManifestPackage {
            name: package.name.as_str(),
            version: &package.version,
            license: &package.license,
            input_hash: &meta.input_hash,
            content_digest: &meta.content_digest,
            method: &meta.method,
        });
        roots.push(result.built.output_dir.join("tree"));
    }
    packages.sort_by(|a, b| a.name.cmp(b.name));
    let manifest = ArtifactManifest {
        set: &set.name,
        arch,
        source_date_epoch: set.source_date_epoch,
        environment: environment.0,
        environment_digest: environment.1,
        impure: environment.2,
        packages,
    };
    let manifest_root = scratch.join(format!("manifest-{arch}"));
    fs_err::create_dir_all(&manifest_root).map_err(StoreError::Io)?;
    let mut manifest_json = serde_json::to_vec_pretty(&manifest).expect("plain data");
    manifest_json.push(b'\n');
    fs_err::write(manifest_root.join(MANIFEST_NAME), &manifest_json).map_err(StoreError::Io)?;
    roots.push(manifest_root);

    fs_err::create_dir_all(out_dir).map_err(StoreError::Io)?;
    let name = artifact_name(&set.name, arch);
    let path = out_dir.join(&name);
    let options = PackOptions {
        top_dir: Some(name.trim_end_matches(".tar.gz").to_string()),
        mtime: set.source_date_epoch,
        compression: Compression::Gzip,
        level: None,
    };
    // The archive is a pure function of the packed trees (named by their content digests in
    // the manifest) and the options, so it is cached in the store under a digest of both:
    // a fully cached build then costs a file copy instead of a compression.
    let mut key_input = format!("{ARTIFACT_FORMAT_VERSION}\n{options:?}\n").into_bytes();
    key_input.extend_from_slice(&manifest_json);
    let cache_key = Sha256::of_bytes(&key_input);
    let cached = store.artifact_path(&cache_key);
    let bytes = match std::fs::read(&cached) {
        Ok(bytes) => bytes,
        Err(_) => {
            let mut bytes = Vec::new();
            let root_refs: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
            archive::pack(&root_refs, &mut bytes, &options).map_err(|source| DistError::Pack {
                path: path.clone(),
                source,
            })?;
            write_atomic(&cached, &bytes)?;
            bytes
        }
    };
    write_atomic(&path, &bytes)?;
    Ok(Artifact {
        path,
        arch,
        sha256: Sha256::of_bytes(&bytes),
        size: bytes.len() as u64,
        cache_key,
    })
}
