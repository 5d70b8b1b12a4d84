//! The content-addressed store on disk: layout, atomic installs, locks, verify and gc.
//!
//! It knows paths, digests and files, never what a recipe is. Layout (under the root):
//!
//! ```text
//! sources/<sha256>              downloaded source files, named by their own digest
//! outputs/<input-hash>/         tree/ (the output), manifest.json, meta.json, build.log
//! logs/                         logs of failed builds (kept until gc)
//! roots/<name>.json             gc roots: the outputs, sources (debs included), artifacts
//!                               and environments (`envs/` entries) a set's last build used
//! envs/                         build environments (owned by `rootfs`; gc removes unrooted ones)
//! tmp/                          work and staging directories (anything here is garbage
//!                               once no hb process holds the store lock)
//! locks/                        per-object lock files (flock)
//! store.lock                    shared by every hb process, exclusive for gc
//! ```
//!
//! Every object is written under `tmp/` and renamed into place, so a killed hb leaves no
//! half object, only garbage in `tmp/`.

use crate::archive::{self, Manifest};
use crate::types::Sha256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("could not lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
}

/// An advisory lock on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path, exclusive: bool) -> Result<FileLock, StoreError> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?
            .into_parts()
            .0;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(StoreError::Lock {
                    path: path.to_owned(),
                    source: err,
                });
            }
        }
    }
}

/// Metadata recorded with every output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputMeta {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub input_hash: String,
    /// sha256 of the output's canonical manifest: what "the same bytes" means.
    pub content_digest: String,
    /// "host" (impure), "native", "emulated" or "cross".
    pub method: String,
    pub environment: EnvironmentRecord,
    pub started_unix: u64,
    pub duration_ms: u64,
    pub hb_version: String,
    pub landlock_abi: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvironmentRecord {
    pub kind: String,
    pub digest: String,
    /// True for the host environment: the result depends on the machine's /usr.
    pub impure: bool,
}

/// A gc root: what one set's last build for one arch needs kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Root {
    pub outputs: BTreeSet<String>,
    pub sources: BTreeSet<String>,
    /// File names under `artifacts/`.
    #[serde(default)]
    pub artifacts: BTreeSet<String>,
    /// Entry names under `envs/` (an environment digest, `emulator-<deb sha256>`). Roots
    /// written before hb recorded them have none: gc then removes the environments, and the
    /// next build re-assembles them from the (rooted) debs.
    #[serde(default)]
    pub environments: BTreeSet<String>,
}

pub struct Store {
    root: PathBuf,
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub sources_checked: usize,
    pub outputs_checked: usize,
    /// Filled by the caller that knows environments (see `commands::store`).
    pub environments_checked: usize,
    pub corrupt: Vec<Problem>,
    /// Leftovers of interrupted runs under tmp/ (harmless; `gc` removes them).
    pub temporary_entries: usize,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// The object, under the store root.
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    pub freed_bytes: u64,
    pub kept_outputs: usize,
    pub kept_sources: usize,
    pub kept_environments: usize,
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["sources", "outputs", "artifacts", "logs", "roots", "tmp", "locks"] {
            fs_err::create_dir_all(root.join(sub))?;
        }
        Ok(Store { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shared lock held by every hb command that uses the store; gc takes it exclusively.
    pub fn lock_shared(&self) -> Result<FileLock, StoreError> {
        FileLock::acquire(&self.root.join("store.lock"), false)
    }

    pub fn lock_exclusive(&self) -> Result<FileLock, StoreError> {
        FileLock::acquire(&self.root.join("store.lock"), true)
    }

    /// Exclusive lock on one object (`kind` + name), e.g. while building or fetching it.
    pub fn lock_object(&self, kind: &str, name: &str) -> Result<FileLock, StoreError> {
        FileLock::acquire(&self.root.join("locks").join(format!("{kind}-{name}.lock")), true)
    }

    pub fn source_path(&self, sha256: &Sha256) -> PathBuf {
        self.root.join("sources").join(sha256.as_str())
    }

    pub fn output_dir(&self, input_hash: &Sha256) -> PathBuf {
        self.root.join("outputs").join(input_hash.as_str())
    }

    /// A cached dist artifact, named by the digest of what went into it.
    pub fn artifact_path(&self, key: &Sha256) -> PathBuf {
        self.root.join("artifacts").join(format!("{key}.tar.gz"))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// A fresh, uniquely named directory under tmp/.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, StoreError> {
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.root.join("tmp"))?)
    }

    /// A fresh temporary file under tmp/ (for downloads), renamed into place by the caller.
    pub fn temp_file(&self, prefix: &str) -> Result<tempfile::NamedTempFile, StoreError> {
        Ok(tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(self.root.join("tmp"))?)
    }

    /// The recorded metadata of a cached output, if it is complete.
    pub fn output_meta(&self, input_hash: &Sha256) -> Option<OutputMeta> {
        let dir = self.output_dir(input_hash);
        let text = std::fs::read(dir.join("meta.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn output_manifest(&self, input_hash: &Sha256) -> Result<Manifest, StoreError> {
        let path = self.output_dir(input_hash).join("manifest.json");
        let bytes = fs_err::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            message: format!("unreadable manifest: {e}"),
        })
    }

    /// Move a finished staging directory (holding `tree/`, `manifest.json`, `meta.json`,
    /// `build.log`) into `outputs/<input-hash>` atomically. If another process installed
    /// the same output meanwhile, ours is discarded and theirs kept.
    pub fn install_output(&self, staging: &Path, input_hash: &Sha256) -> Result<PathBuf, StoreError> {
        let dest = self.output_dir(input_hash);
        sync_dir_tree(staging)?;
        match std::fs::rename(staging, &dest) {
            Ok(()) => {}
            Err(e) if dest.join("meta.json").exists() => {
                tracing::debug!("output {input_hash} installed concurrently ({e}); keeping the existing one");
            }
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.root.join("outputs"))?;
        Ok(dest)
    }

    /// Record what a set's build used, so gc keeps it.
    pub fn write_root(&self, name: &str, root: &Root) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(root).expect("plain data always serializes");
        write_atomic(&self.root.join("roots").join(format!("{name}.json")), &bytes)
    }

    /// Re-hash every source and output and report what does not match its name or manifest.
    pub fn verify(&self, progress: &dyn Fn(&str)) -> Result<VerifyReport, StoreError> {
        let _lock = self.lock_shared()?;
        let mut report = VerifyReport::default();
        for entry in sorted_entries(&self.root.join("sources"))? {
            let name = file_name(&entry);
            progress(&format!("sources/{name}"));
            report.sources_checked += 1;
            match Sha256::parse(&name) {
                Err(_) => report.corrupt.push(Problem {
                    path: entry.clone(),
                    message: "not a sha256-named source file".into(),
                }),
                Ok(expected) => match archive::sha256_file(&entry) {
                    Ok(actual) if actual == expected.as_str() => {}
                    Ok(actual) => report.corrupt.push(Problem {
                        path: entry.clone(),
                        message: format!("content hashes to {actual}, expected {expected}"),
                    }),
                    Err(e) => report.corrupt.push(Problem {
                        path: entry.clone(),
                        message: format!("unreadable: {e}"),
                    }),
                },
            }
        }
        for entry in sorted_entries(&self.root.join("outputs"))? {
            let name = file_name(&entry);
            progress(&format!("outputs/{name}"));
            report.outputs_checked += 1;
            if let Err(message) = self.verify_output(&entry) {
                report.corrupt.push(Problem { path: entry, message });
            }
        }
        report.temporary_entries = sorted_entries(&self.root.join("tmp"))?.len();
        Ok(report)
    }

    fn verify_output(&self, dir: &Path) -> Result<(), String> {
        let meta: OutputMeta =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?)
                .map_err(|e| format!("meta.json: {e}"))?;
        let recorded: Manifest = serde_json::from_slice(
            &std::fs::read(dir.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?,
        )
        .map_err(|e| format!("manifest.json: {e}"))?;
        if recorded.digest() != meta.content_digest {
            return Err("manifest.json does not match the content digest in meta.json".into());
        }
        let actual = archive::manifest(&dir.join("tree")).map_err(|e| format!("tree: {e}"))?;
        if actual != recorded {
            let differing = recorded.diff(&actual);
            return Err(format!(
                "tree differs from its manifest: {}",
                differing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if file_name(dir) != meta.input_hash {
            return Err(format!("meta.json records input hash {}", meta.input_hash));
        }
        Ok(())
    }

    /// Remove everything under tmp/, failed-build logs, and outputs, sources, artifacts and
    /// environments that no root references. Takes the store lock exclusively, so it waits for running builds.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut keep_outputs = BTreeSet::new();
        let mut keep_sources = BTreeSet::new();
        let mut keep_artifacts = BTreeSet::new();
        let mut keep_environments = BTreeSet::new();
        for entry in sorted_entries(&self.root.join("roots"))? {
            let bytes = fs_err::read(&entry)?;
            let root: Root = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: entry.clone(),
                message: format!("unreadable gc root: {e}"),
            })?;
            keep_outputs.extend(root.outputs);
            keep_sources.extend(root.sources);
            keep_artifacts.extend(root.artifacts);
            keep_environments.extend(root.environments);
        }
        let mut report = GcReport {
            kept_outputs: keep_outputs.len(),
            kept_sources: keep_sources.len(),
            kept_environments: keep_environments.len(),
            ..GcReport::default()
        };
        let mut doomed = sorted_entries(&self.root.join("tmp"))?;
        doomed.extend(sorted_entries(&self.root.join("logs"))?);
        for (dir, keep) in [
            ("outputs", &keep_outputs),
            ("sources", &keep_sources),
            ("artifacts", &keep_artifacts),
            ("envs", &keep_environments),
        ] {
            let dir = self.root.join(dir);
            // envs/ exists once an environment was assembled.
            if dir.is_dir() {
                doomed.extend(
                    sorted_entries(&dir)?
                        .into_iter()
                        .filter(|p| !keep.contains(&file_name(p))),
                );
            }
        }
        for path in doomed {
            report.freed_bytes += disk_usage(&path);
            if !dry_run {
                remove_any(&path)?;
            }
            report.removed.push(path);
        }
        Ok(report)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn disk_usage(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Remove a file or a directory tree, making read-only directories writable first.
pub fn remove_any(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !meta.is_dir() {
        fs_err::remove_file(path)?;
        return Ok(());
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(path).into_iter().filter_map(|e| e.ok()) {
        if entry.file_type().is_dir() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
    fs_err::remove_dir_all(path)?;
    Ok(())
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // 0o600 is tempfile's default mode, so this is the file write_atomic has always made.
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`], the new file created with permission bits `mode` (less the umask, as for
/// any newly created file).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// fsync every regular file and directory of a staging tree, so that after the rename a
/// crash cannot expose an object whose content is not on disk.
fn sync_dir_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()) {
        let ft = entry.file_type();
        if ft.is_file() || ft.is_dir() {
            if let Ok(f) = File::open(entry.path()) {
                let _ = f.sync_all();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_a_corrupt_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Sha256::of_bytes(b"hello");
        std::fs::write(store.source_path(&good), b"hello").unwrap();
        let bad = Sha256::of_bytes(b"other");
        std::fs::write(store.source_path(&bad), b"tampered").unwrap();
        let report = store.verify(&|_| {}).unwrap();
        assert_eq!(report.sources_checked, 2);
        assert_eq!(report.corrupt.len(), 1);
        assert!(report.corrupt[0].path.ends_with(bad.as_str()));
    }

    #[test]
    fn gc_keeps_rooted_objects_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = Sha256::of_bytes(b"kept");
        let dropped = Sha256::of_bytes(b"dropped");
        std::fs::write(store.source_path(&kept), b"kept").unwrap();
        std::fs::write(store.source_path(&dropped), b"dropped").unwrap();
        std::fs::create_dir(store.root().join("tmp/work-x")).unwrap();
        let mut root = Root::default();
        root.sources.insert(kept.to_string());
        store.write_root("set-amd64", &root).unwrap();
        let report = store.gc(true).unwrap();
        assert_eq!(report.removed.len(), 2);
        assert!(store.source_path(&dropped).exists(), "dry run removes nothing");
        store.gc(false).unwrap();
        assert!(store.source_path(&kept).exists());
        assert!(!store.source_path(&dropped).exists());
        assert!(!store.root().join("tmp/work-x").exists());

        // Environments: kept when a root names them, removed (read-only trees included)
        // otherwise.
        let envs = store.root().join("envs");
        for name in ["aaaa", "emulator-bbbb", "cccc"] {
            std::fs::create_dir_all(envs.join(name).join("rootfs/usr")).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(envs.join("cccc/rootfs/usr"), std::fs::Permissions::from_mode(0o555)).unwrap();
        root.environments
            .extend(["aaaa".to_string(), "emulator-bbbb".to_string()]);
        store.write_root("set-amd64", &root).unwrap();
        let report = store.gc(false).unwrap();
        assert_eq!(report.removed, [envs.join("cccc")]);
        assert_eq!(report.kept_environments, 2);
        assert!(envs.join("aaaa").is_dir() && envs.join("emulator-bbbb").is_dir());
    }
}
