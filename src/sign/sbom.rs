//! What an SBOM says about one artifact, independent of the SBOM format: the files inside the
//! `.tar.gz` with their digests, the packages built into it with their sources, and the build
//! tools (the environment's `.deb`s) that made it.
//!
//! Owns: reading an artifact (tar + gzip, streaming, every regular file hashed with SHA-1 and
//! SHA-256; `hb-manifest.json` parsed for the package list), gathering the [`SbomInputs`] from
//! a set and its lock, package URLs (purl), and the deterministic identifiers both formats
//! derive from the artifact digest. Does not: write SPDX ([`super::spdx`]) or CycloneDX
//! ([`super::cyclonedx`]), or anything with a time other than SOURCE_DATE_EPOCH.

use super::SignError;
use crate::lock::{Lock, LockedDeb};
use crate::recipe::{Set, SourceKind};
use crate::types::{Arch, Sha256};
use sha1::Digest as _;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// A regular file inside an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactFile {
    /// Inside the archive, without a leading `./` (e.g. `tools-linux-amd64/bin/bzip2`).
    pub path: String,
    pub sha256: Sha256,
    /// Lowercase hex; SPDX 2.3 requires a SHA-1 for every file.
    pub sha1: String,
}

/// What is inside an artifact.
#[derive(Debug, Clone, Default)]
pub struct ArtifactContents {
    /// Sorted by path.
    pub files: Vec<ArtifactFile>,
    /// Package names listed by the artifact's `hb-manifest.json`, if it has one.
    pub manifest_packages: Option<Vec<String>>,
}

/// Read every entry of a `.tar.gz` artifact.
pub fn read_artifact(path: &Path) -> Result<ArtifactContents, SignError> {
    let bad = |message: String| SignError::BadInput {
        path: path.to_owned(),
        message,
    };
    let file = fs_err::File::open(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut files: BTreeMap<String, ArtifactFile> = BTreeMap::new();
    let mut manifest_packages = None;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    let mut buffer = vec![0u8; 1 << 16];
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("damaged archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| bad(format!("an entry has an unreadable name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().trim_start_matches("./").to_string())
                .unwrap_or_default();
            if let Some(original) = files.get(&target).cloned() {
                files.insert(name.clone(), ArtifactFile { path: name, ..original });
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let mut sha256 = sha2::Sha256::new();
        let mut sha1 = sha1::Sha1::new();
        let mut content = Vec::new();
        let is_manifest = name.rsplit('/').next() == Some(crate::dist::MANIFEST_NAME) && name.matches('/').count() <= 1;
        loop {
            let n = entry
                .read(&mut buffer)
                .map_err(|e| bad(format!("reading {name}: {e}")))?;
            if n == 0 {
                break;
            }
            sha256.update(&buffer[..n]);
            sha1.update(&buffer[..n]);
            if is_manifest {
                content.extend_from_slice(&buffer[..n]);
            }
        }
        if is_manifest {
            manifest_packages = Some(manifest_package_names(&content).map_err(|e| bad(format!("{name}: {e}")))?);
        }
        files.insert(
            name.clone(),
            ArtifactFile {
                path: name,
                sha256: Sha256::from_digest(&sha256.finalize()),
                sha1: hex::encode(sha1.finalize()),
            },
        );
    }
    Ok(ArtifactContents {
        files: files.into_values().collect(),
        manifest_packages,
    })
}

fn manifest_package_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let packages = value["packages"].as_array().ok_or("no \"packages\" list")?;
    Ok(packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}

/// A package of the set built into the artifact.
#[derive(Debug, Clone)]
pub struct SbomPackage {
    pub name: String,
    pub version: String,
    /// SPDX license expression from the recipe.
    pub license: String,
    pub homepage: Option<String>,
    pub description: Option<String>,
    /// Every remote source: (URLs, sha256); local directory sources: ("file:" path, tree digest).
    pub sources: Vec<(Vec<String>, Sha256)>,
    /// Names of the packages it was built against.
    pub depends: Vec<String>,
    pub purl: String,
}

impl SbomPackage {
    /// The first URL that SBOM validators accept as a download location (http, https, ftp).
    pub fn download_location(&self) -> Option<&str> {
        self.sources
            .iter()
            .flat_map(|(urls, _)| urls.iter())
            .map(String::as_str)
            .find(|u| u.starts_with("https://") || u.starts_with("http://") || u.starts_with("ftp://"))
    }
}

/// A `.deb` of the build environment.
#[derive(Debug, Clone)]
pub struct SbomDeb {
    pub deb: LockedDeb,
    pub purl: String,
}

/// Everything both SBOM formats are written from.
#[derive(Debug, Clone)]
pub struct SbomInputs {
    pub artifact_name: String,
    pub artifact_sha256: Sha256,
    pub set_name: String,
    pub arch: Arch,
    pub source_date_epoch: u64,
    pub hb_version: String,
    /// Sorted by name.
    pub packages: Vec<SbomPackage>,
    /// Sorted by (name, arch).
    pub debs: Vec<SbomDeb>,
    pub files: Vec<ArtifactFile>,
    /// Built with the machine's own /usr: the build tools are unknown.
    pub impure_environment: bool,
}

/// The set's packages named in `names` (unknown names are skipped), as SBOM packages. Local
/// directory sources are hashed as canonical trees, as the planner does.
pub fn packages_of(set: &Set, names: &[String]) -> Result<Vec<SbomPackage>, SignError> {
    let mut out = Vec::new();
    for package in set.packages.values() {
        if !names.iter().any(|n| n == package.name.as_str()) {
            continue;
        }
        let mut sources = Vec::new();
        for source in &package.sources {
            match &source.kind {
                SourceKind::Remote { urls, sha256 } => sources.push((urls.clone(), sha256.clone())),
                SourceKind::LocalDir { path } => {
                    let digest = crate::archive::tree_digest(path).map_err(|e| SignError::BadInput {
                        path: path.clone(),
                        message: format!("hashing the local source: {e}"),
                    })?;
                    let digest = Sha256::parse(&digest).map_err(|e| SignError::BadInput {
                        path: path.clone(),
                        message: format!("tree digest: {e}"),
                    })?;
                    let relative = path.strip_prefix(&set.dir).unwrap_or(path);
                    sources.push((vec![format!("file:{}", relative.display())], digest));
                }
            }
        }
        let first = sources.first().map(|(urls, sha)| (urls[0].as_str(), sha));
        out.push(SbomPackage {
            name: package.name.to_string(),
            version: package.version.clone(),
            license: package.license.clone(),
            homepage: package.homepage.clone(),
            description: package.description.clone(),
            purl: purl_generic(package.name.as_str(), &package.version, first),
            sources,
            depends: package.depends.iter().map(|d| d.to_string()).collect(),
        });
    }
    Ok(out)
}

/// The environment's debs an artifact for `arch` was built with, by `method`: `native`, the
/// target's debs of `set.lock`; `emulated`, those and the emulator; `cross`, the build
/// machine's environment with the cross toolchains (every target of `set.cross.lock`).
pub fn debs_of(lock: Option<&Lock>, cross_lock: Option<&Lock>, arch: Arch, method: &str) -> Vec<SbomDeb> {
    let mut debs: Vec<LockedDeb> = Vec::new();
    match (method, lock, cross_lock) {
        ("cross", _, Some(cross)) => debs.extend(cross.targets.iter().flat_map(|t| t.debs.iter().cloned())),
        (_, Some(lock), _) => {
            debs.extend(lock.target(arch).map(|t| t.debs.clone()).unwrap_or_default());
            if method == "emulated" {
                debs.extend(
                    lock.emulators
                        .iter()
                        .filter(|e| e.target == arch)
                        .map(|e| e.deb.clone()),
                );
            }
        }
        _ => {}
    }
    debs.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    debs.dedup();
    debs.into_iter()
        .map(|deb| SbomDeb {
            purl: format!(
                "pkg:deb/debian/{}@{}?arch={}",
                purl_encode(&deb.name),
                purl_encode(&deb.version),
                purl_encode(&deb.arch)
            ),
            deb,
        })
        .collect()
}

/// `pkg:generic/<name>@<version>?checksum=sha256:<hex>&download_url=<url>` (qualifiers sorted,
/// as the purl specification asks).
pub fn purl_generic(name: &str, version: &str, source: Option<(&str, &Sha256)>) -> String {
    let mut purl = format!("pkg:generic/{}@{}", purl_encode(name), purl_encode(version));
    if let Some((url, sha256)) = source {
        purl.push_str(&format!("?checksum=sha256:{sha256}&download_url={}", purl_encode(url)));
    }
    purl
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn purl_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A name-based (version 5) UUID: SHA-1 over the URL namespace and `name`. Deterministic, so
/// the same artifact always gets the same CycloneDX serial number.
pub fn uuid_v5(name: &str) -> String {
    // The RFC 4122 namespace for URLs, 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
    const NAMESPACE_URL: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
    ];
    let mut hasher = sha1::Sha1::new();
    hasher.update(NAMESPACE_URL);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Identifiers of SPDX elements: `[A-Za-z0-9.-]` only.
pub fn spdx_id_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v5_known_value() {
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, "https://example.org/")
        assert_eq!(uuid_v5("https://example.org/"), "527dda32-a0de-5105-a042-cb475b5f7d11");
    }

    #[test]
    fn purls() {
        assert_eq!(purl_encode("1:7.2+dfsg-7"), "1%3A7.2%2Bdfsg-7");
        let sha = Sha256::of_bytes(b"");
        assert_eq!(
            purl_generic("lua", "5.4.4", Some(("https://x.org/a b.tgz", &sha))),
            format!("pkg:generic/lua@5.4.4?checksum=sha256:{sha}&download_url=https%3A%2F%2Fx.org%2Fa%20b.tgz")
        );
    }
}
