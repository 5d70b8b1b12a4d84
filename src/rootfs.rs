//! Pinned build environments, part 2: turning a locked target ([`TargetLock`]) into a root
//! file system in the store, and extracting the emulators ([`EmulatorLock`]).
//!
//! Owns the store's `envs/` directory:
//!
//! ```text
//! envs/<environment-digest>/rootfs/         the tree, used (read-only) as a build's `/`
//! envs/<environment-digest>/manifest.json   archive::manifest of rootfs/
//! envs/<environment-digest>/meta.json       EnvMeta; written last: its presence = complete
//! envs/emulator-<deb-sha256>/<binary>       a static qemu-user binary, mode 0755
//! envs/emulator-<deb-sha256>/<binary>.sha256  its digest; written last
//! ```
//!
//! How a rootfs is made (Debian's own tools are not used): every deb is fetched by sha256
//! (nothing enters the store otherwise), its `data.tar.*` unpacked with hb's safe unpacker
//! into a directory of its own (several debs at once, one per core: xz decoding is the
//! cost), then the directories are merged in the lock's order (by package name) into a
//! skeleton that has merged-/usr links (`bin -> usr/bin`, ... as debootstrap makes them for
//! bookworm), following directory symlinks the way dpkg does but never leaving the rootfs.
//! A directory not in the rootfs yet is moved in whole with one rename (most belong to one
//! package); files are renamed, never copied.
//! No maintainer script runs; the set's `links` replace the links they would have made
//! (alternatives such as `/usr/bin/cc`). Permission bits are kept (setuid/setgid/sticky
//! dropped), ownership is ignored, file mtimes come from the debs and every directory gets
//! the newest file mtime of the environment, so the same lock always gives the same tree.
//!
//! Does not: resolve locks ([`crate::lock`]), mount or run anything (sandbox, build), or
//! collect garbage (store).

use crate::archive::{self, ArchiveError, Manifest, UnpackOptions};
use crate::deb::{self, DebError};
use crate::fetch::{FetchError, Fetcher, NoProgress};
use crate::lock::{EmulatorLock, LockedDeb, TargetLock};
use crate::store::{self, Store, StoreError};
use crate::types::{Arch, Sha256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// The kernel's limit on symlinks followed while resolving one path.
const MAX_SYMLINK_HOPS: usize = 40;
/// Directories every rootfs has: the sandbox's mount points (a read-only `/` cannot get new
/// ones) and `etc` for its overlay files. Debian's base-files ships them too; minimal test
/// environments do not.
const SKELETON_DIRS: [&str; 6] = ["dev", "etc", "proc", "run", "sys", "tmp"];

/// Files of `/etc` that hb writes for every build (`build.rs`: the build user, the host
/// name). Every rootfs has them, as empty placeholders unless a deb ships one, so that the
/// sandbox can bind `/etc` read-only in one mount and these files over it (environment
/// digest v2; before, `/etc` was bound entry by entry around them).
pub const PROVIDED_ETC_FILES: [&str; 3] = ["passwd", "group", "hosts"];

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("could not fetch {deb}")]
    Fetch {
        deb: String,
        #[source]
        source: FetchError,
    },
    /// A lock entry that `lock::read` would have refused (built in code).
    #[error("invalid lock entry {deb}: {message}")]
    InvalidDeb { deb: String, message: String },
    #[error("cannot read {deb}")]
    Deb {
        deb: String,
        #[source]
        source: DebError,
    },
    #[error("cannot unpack {deb}")]
    Unpack {
        deb: String,
        #[source]
        source: ArchiveError,
    },
    /// Two debs disagree on what a path is (a file in one, a directory in the other).
    #[error("{path}: {what}")]
    Conflict { path: String, what: String },
    /// A `links` fix-up of set.toml cannot be made.
    #[error("environment.links: {link} -> {target}: {message}")]
    Link {
        link: String,
        target: String,
        message: String,
    },
    #[error("emulator {binary} of {deb}: {message}")]
    Emulator {
        deb: String,
        binary: String,
        message: String,
    },
    #[error("cannot list the assembled rootfs")]
    Manifest(#[source] ArchiveError),
    #[error("i/o error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RootfsError {
    /// The hint shown after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            RootfsError::Fetch { source, .. } => match source {
                FetchError::AllFailed { attempts, .. } if attempts.iter().any(|a| a.reason.contains("HTTP 404")) => Some(
                    "the mirror no longer has this version (Debian removes superseded packages at point releases): run `hb lock SET` to resolve the environment again, or point HB_MIRROR_DEBIAN at a snapshot of the archive".into(),
                ),
                FetchError::AllFailed { attempts, .. } if attempts.iter().any(|a| a.reason.contains("sha256 mismatch")) => Some(
                    "the mirror serves other bytes than set.lock pins; nothing was stored. If the lock is old, run `hb lock SET`; otherwise distrust the mirror".into(),
                ),
                other => other.hint(),
            },
            RootfsError::InvalidDeb { .. } => Some("run `hb lock SET` to write the lock again".into()),
            RootfsError::Deb { .. } | RootfsError::Unpack { .. } => {
                Some("the deb matched its sha256 but cannot be unpacked safely; hb refuses it".into())
            }
            RootfsError::Conflict { .. } => Some(
                "two packages of the environment cannot be installed together; remove one from environment.packages".into(),
            ),
            RootfsError::Link { .. } => Some(
                "links are absolute paths in the environment mapped to a target (\"/usr/bin/cc\" = \"gcc\"); the link's directory and its target must exist in the environment".into(),
            ),
            RootfsError::Emulator { .. } => {
                Some("run `hb lock SET` again; the emulator package may have changed its layout".into())
            }
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `meta.json` of an environment records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvMeta {
    /// [`crate::lock::Lock::environment_digest`]: the directory's name.
    pub environment_digest: String,
    pub arch: Arch,
    /// `manifest.json`'s digest: what "the same rootfs" means.
    pub content_digest: String,
    pub debs: usize,
    /// Sum of the debs' sizes.
    pub deb_bytes: u64,
    /// Entries (files, directories, symlinks) of the rootfs.
    pub entries: usize,
    /// Bytes of regular files in the rootfs.
    pub bytes: u64,
    /// Paths shipped by more than one deb (the later one in name order wins), for the record.
    pub replaced: Vec<String>,
    pub hb_version: String,
    /// Time per phase: fetch_unpack, merge, manifest, total (milliseconds; not part of any
    /// digest).
    pub timings_ms: BTreeMap<String, u64>,
}

/// `<store>/envs/<digest>`.
pub fn env_dir(store: &Store, digest: &Sha256) -> PathBuf {
    store.root().join("envs").join(digest.as_str())
}

/// The rootfs of a complete environment, if it is in the store.
pub fn existing(store: &Store, digest: &Sha256) -> Option<PathBuf> {
    let dir = env_dir(store, digest);
    dir.join("meta.json").is_file().then(|| dir.join("rootfs"))
}

/// The metadata of a complete environment.
pub fn meta(store: &Store, digest: &Sha256) -> Option<EnvMeta> {
    let bytes = fs::read(env_dir(store, digest).join("meta.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Returns `<store>/envs/<digest>/rootfs`, assembling it from `target`'s debs and `links`
/// first if it is not there. `digest` must be `lock.environment_digest(target.arch, links)`.
/// Two hb processes never assemble the same environment at once (object lock), and a killed
/// one leaves only garbage under `tmp/`.
pub fn assemble(
    store: &Store,
    fetcher: &Fetcher,
    target: &TargetLock,
    links: &BTreeMap<String, String>,
    digest: &Sha256,
    progress: &dyn Fn(&str),
) -> Result<PathBuf, RootfsError> {
    if let Some(rootfs) = existing(store, digest) {
        return Ok(rootfs);
    }
    let envs = store.root().join("envs");
    fs::create_dir_all(&envs).map_err(io_err(&envs))?;
    let _lock = store.lock_object("env", digest.as_str())?;
    if let Some(rootfs) = existing(store, digest) {
        return Ok(rootfs);
    }
    check_links(links)?;
    let started = Instant::now();
    let mut timings = BTreeMap::new();
    let staging = Staging(Some(store.temp_dir("env-")?.keep()));
    let root = staging.path().join("rootfs");

    // The lock's order (by name), whatever order the caller's list has: it decides which
    // deb wins when two ship the same file.
    let mut debs: Vec<&LockedDeb> = target.debs.iter().collect();
    debs.sort();
    for deb in &debs {
        deb.check(target.arch).map_err(|message| RootfsError::InvalidDeb {
            deb: deb.label(),
            message,
        })?;
    }
    if let Some(pair) = debs.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(RootfsError::InvalidDeb {
            deb: pair[1].label(),
            message: format!("{} is in the list twice", pair[1].name),
        });
    }
    let work = staging.path().join("debs");
    fs::create_dir(&work).map_err(io_err(&work))?;
    let unpacked = fetch_and_unpack(fetcher, &debs, &work, progress)?;
    timings.insert("fetch_unpack".to_string(), ms(started));

    let phase = Instant::now();
    progress(&format!(
        "merging {} packages into the {} rootfs",
        debs.len(),
        target.arch
    ));
    let mut merger = Merger::new(&root, target.arch)?;
    for (i, dir) in unpacked.iter().enumerate() {
        merger.merge(i, &debs, dir)?;
        store::remove_any(dir)?;
    }
    let replaced = merger.finish_tree()?;
    apply_links(&root, links)?;
    merger.finish_times(links)?;
    timings.insert("merge".to_string(), ms(phase));

    let phase = Instant::now();
    progress("hashing the rootfs");
    let manifest = archive::manifest(&root).map_err(RootfsError::Manifest)?;
    timings.insert("manifest".to_string(), ms(phase));
    let manifest_json = serde_json::to_vec(&manifest).expect("a manifest always serializes");
    write_new(&staging.path().join("manifest.json"), &manifest_json)?;
    store::remove_any(&work)?;
    timings.insert("total".to_string(), ms(started));
    let meta = EnvMeta {
        environment_digest: digest.to_string(),
        arch: target.arch,
        content_digest: manifest.digest(),
        debs: debs.len(),
        deb_bytes: debs.iter().map(|d| d.size).sum(),
        entries: manifest.entries.len(),
        bytes: manifest.total_size(),
        replaced,
        hb_version: env!("CARGO_PKG_VERSION").to_string(),
        timings_ms: timings,
    };
    let meta_json = serde_json::to_vec_pretty(&meta).expect("plain data always serializes");
    write_new(&staging.path().join("meta.json"), &meta_json)?;
    // One syncfs instead of an fsync per file (tens of thousands): after the rename below,
    // a crash must not expose a rootfs whose contents are not on disk.
    sync_filesystem(staging.path())?;
    let dest = env_dir(store, digest);
    if dest.exists() {
        // Without meta.json (checked under the lock above): an earlier, broken install.
        store::remove_any(&dest)?;
    }
    fs::rename(staging.path(), &dest).map_err(io_err(&dest))?;
    staging.disarm();
    fs::File::open(&envs)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&envs))?;
    progress(&format!(
        "{} rootfs {}: {} packages, {} entries, {} MB in {:.1} s",
        target.arch,
        digest.short(),
        meta.debs,
        meta.entries,
        meta.bytes / 1_000_000,
        started.elapsed().as_secs_f64()
    ));
    Ok(dest.join("rootfs"))
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// A staging directory under the store's tmp/, removed on drop unless disarmed (read-only
/// directories included, which `TempDir` cannot remove).
struct Staging(Option<PathBuf>);

impl Staging {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("staging directory present until disarmed")
    }
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = store::remove_any(&p) {
                tracing::warn!("could not remove {}: {e}", p.display());
            }
        }
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RootfsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))
}

fn sync_filesystem(dir: &Path) -> Result<(), RootfsError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir).map_err(io_err(dir))?;
    // SAFETY: syncfs on a file descriptor we own; no memory is involved.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io_err(dir)(io::Error::last_os_error()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fetching and unpacking, in parallel
// ---------------------------------------------------------------------------------------------

/// Downloads at once (I/O-bound, unlike unpacking).
const FETCH_THREADS: usize = 6;

/// Fetches and unpacks every deb into `work/<index>`: [`FETCH_THREADS`] threads fetch
/// (largest first: the largest deb's decoding is the critical path) and hand each deb to one
/// of the unpacking threads (one per core: xz decoding is CPU-bound). Returns the
/// directories in the order of `debs`. Stops at the first error, and reports that one.
fn fetch_and_unpack(
    fetcher: &Fetcher,
    debs: &[&LockedDeb],
    work: &Path,
    progress: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, RootfsError> {
    let dirs: Vec<PathBuf> = (0..debs.len()).map(|i| work.join(format!("{i:05}"))).collect();
    let mut order: Vec<usize> = (0..debs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(debs[i].size), i));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let unpackers = cores.clamp(1, debs.len().max(1));
    let fetchers = FETCH_THREADS.clamp(1, debs.len().max(1));
    progress(&format!(
        "fetching and unpacking {} packages ({unpackers} at a time)",
        debs.len()
    ));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (fetched_tx, fetched_rx) = std::sync::mpsc::channel::<(usize, PathBuf)>();
    let fetched_rx = std::sync::Mutex::new(fetched_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<(), RootfsError>)>();
    let first_error = std::thread::scope(|s| {
        for _ in 0..fetchers {
            let (fetched_tx, done_tx) = (fetched_tx.clone(), done_tx.clone());
            let (next, failed, order) = (&next, &failed, &order);
            s.spawn(move || loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let label = debs[i].label();
                match fetcher.fetch(&label, &[debs[i].url()], &debs[i].sha256, &NoProgress) {
                    Ok(path) => {
                        if fetched_tx.send((i, path)).is_err() {
                            break;
                        }
                    }
                    Err(source) => {
                        failed.store(true, Ordering::Relaxed);
                        let _ = done_tx.send((i, Err(RootfsError::Fetch { deb: label, source })));
                        break;
                    }
                }
            });
        }
        // The unpackers stop when every fetcher is done and the channel is drained.
        drop(fetched_tx);
        for _ in 0..unpackers {
            let done_tx = done_tx.clone();
            let (failed, fetched_rx, dirs) = (&failed, &fetched_rx, &dirs);
            s.spawn(move || loop {
                let job = fetched_rx.lock().map(|rx| rx.recv());
                let Ok(Ok((i, path))) = job else {
                    break;
                };
                if failed.load(Ordering::Relaxed) {
                    continue; // drain without working
                }
                let result = unpack_deb(debs[i], &path, &dirs[i]);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if done_tx.send((i, result)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Progress is reported from this thread only: `progress` need not be thread-safe.
        let mut first_error = None;
        let mut done = 0;
        for (i, result) in done_rx {
            match result {
                Ok(()) => {
                    done += 1;
                    progress(&format!("[{done}/{}] {}", debs.len(), debs[i].label()));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(dirs),
    }
}

/// Unpacks the `data.tar` of a fetched deb into `dest`.
fn unpack_deb(deb: &LockedDeb, path: &Path, dest: &Path) -> Result<(), RootfsError> {
    let label = deb.label();
    let (reader, compression, _member) = deb::data(path).map_err(|source| RootfsError::Deb {
        deb: label.clone(),
        source,
    })?;
    let options = UnpackOptions {
        // Debian packages ship absolute symlinks (`usr/bin/ld.so -> /lib64/ld-linux-x86-64.so.2`,
        // `usr/lib/x86_64-linux-gnu/libcrypt.so -> /lib/...`). They are created as they are
        // and never followed here; they resolve inside the sandbox, where this tree is `/`.
        allow_any_symlink_target: true,
        ..Default::default()
    };
    archive::unpack(reader, compression, dest, &options)
        .map_err(|source| RootfsError::Unpack { deb: label, source })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------------------------

/// The top-level directories that merged-/usr turns into links to `usr/...`, per
/// architecture (as debootstrap's `setup_merged_usr` does for bookworm).
fn merged_usr_dirs(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Amd64 => &["bin", "lib", "lib32", "lib64", "libx32", "sbin"],
        Arch::Arm64 => &["bin", "lib", "sbin"],
    }
}

struct Merger<'a> {
    root: &'a Path,
    /// Final mode of the directories the merge created, matched or had to open for writing
    /// (the last deb shipping a directory wins), applied at the end: a read-only directory
    /// could not be filled. Directories moved in whole keep the modes the unpacker gave them.
    dir_modes: BTreeMap<PathBuf, u32>,
    /// Which deb (index) put each path in place, for conflict messages. A directory moved in
    /// whole is recorded once, for everything below it.
    owner: HashMap<PathBuf, usize>,
    replaced: Vec<String>,
    /// The [`PROVIDED_ETC_FILES`] placeholders the skeleton had to create.
    placeholders: Vec<PathBuf>,
}

impl<'a> Merger<'a> {
    /// The skeleton: `usr/` with merged-/usr links at the top.
    fn new(root: &'a Path, arch: Arch) -> Result<Self, RootfsError> {
        mkdir(root)?;
        let mut m = Merger {
            root,
            dir_modes: BTreeMap::new(),
            owner: HashMap::new(),
            replaced: Vec::new(),
            placeholders: Vec::new(),
        };
        mkdir(&root.join("usr"))?;
        m.dir_modes.insert(PathBuf::from("usr"), 0o755);
        for dir in merged_usr_dirs(arch) {
            let real = PathBuf::from("usr").join(dir);
            mkdir(&root.join(&real))?;
            m.dir_modes.insert(real, 0o755);
            let link = root.join(dir);
            std::os::unix::fs::symlink(Path::new("usr").join(dir), &link).map_err(io_err(&link))?;
        }
        Ok(m)
    }

    /// Moves the unpacked tree of `debs[index]` into the rootfs. A directory that is not in
    /// the rootfs yet is moved in whole (one rename; most directories belong to one package
    /// only, and creating inodes is what costs); others are merged entry by entry.
    fn merge(&mut self, index: usize, debs: &[&LockedDeb], src: &Path) -> Result<(), RootfsError> {
        // Deb directory -> the real directory (no symlink on the way) it lands in.
        let mut placed: HashMap<PathBuf, PathBuf> = HashMap::new();
        placed.insert(PathBuf::new(), PathBuf::new());
        let mut walk = walkdir::WalkDir::new(src)
            .min_depth(1)
            .sort_by_file_name()
            .follow_links(false)
            .into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(walk_err(src))?;
            let rel = entry
                .path()
                .strip_prefix(src)
                .expect("walkdir yields paths under its root")
                .to_owned();
            let parent = rel.parent().unwrap_or(Path::new(""));
            let Some(dest_parent) = placed.get(parent).cloned() else {
                // Only a placed directory is descended into.
                return Err(self.conflict(parent, index, debs, "not a directory", "a directory with entries"));
            };
            let dest_rel = dest_parent.join(entry.file_name());
            let dest = self.root.join(&dest_rel);
            let meta = entry.metadata().map_err(walk_err(entry.path()))?;
            let existing = match fs::symlink_metadata(&dest) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&dest)(e)),
            };
            if meta.is_dir() {
                let mode = meta.mode() & 0o7777;
                let real = match existing {
                    None => {
                        // rename() of a directory needs write access to it (its `..`).
                        if mode & 0o200 == 0 {
                            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700))
                                .map_err(io_err(entry.path()))?;
                            self.dir_modes.insert(dest_rel.clone(), mode);
                        }
                        fs::rename(entry.path(), &dest).map_err(io_err(&dest))?;
                        self.owner.insert(dest_rel, index);
                        walk.skip_current_dir();
                        continue;
                    }
                    Some(m) if m.is_dir() => {
                        if m.mode() & 0o700 != 0o700 {
                            // Moved in read-only by an earlier deb: ours to fill meanwhile.
                            fs::set_permissions(&dest, fs::Permissions::from_mode(m.mode() | 0o700))
                                .map_err(io_err(&dest))?;
                        }
                        self.dir_modes.insert(dest_rel.clone(), mode);
                        dest_rel.clone()
                    }
                    Some(m) if m.file_type().is_symlink() => {
                        // dpkg follows a symlink to a directory (how `bin/` of a deb lands
                        // in `usr/bin/` after merged-/usr); so do we, inside the rootfs only.
                        let real = resolve_in_root(self.root, &dest_rel).map_err(|why| {
                            self.conflict(&dest_rel, index, debs, &format!("a symlink that {why}"), "a directory")
                        })?;
                        match fs::symlink_metadata(self.root.join(&real)) {
                            Ok(m) if m.is_dir() => {
                                if m.mode() & 0o700 != 0o700 {
                                    let p = self.root.join(&real);
                                    fs::set_permissions(&p, fs::Permissions::from_mode(m.mode() | 0o700))
                                        .map_err(io_err(&p))?;
                                    self.dir_modes.entry(real.clone()).or_insert(m.mode() & 0o7777);
                                }
                            }
                            _ => {
                                return Err(self.conflict(
                                    &dest_rel,
                                    index,
                                    debs,
                                    "a symlink to a non-directory",
                                    "a directory",
                                ))
                            }
                        }
                        real
                    }
                    Some(_) => return Err(self.conflict(&dest_rel, index, debs, "a file", "a directory")),
                };
                if mode & 0o700 != 0o700 {
                    // Ours to read and empty, whatever the deb says.
                    fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700))
                        .map_err(io_err(entry.path()))?;
                }
                placed.insert(rel, real);
            } else {
                match existing {
                    Some(m) if m.is_dir() => {
                        let incoming = if meta.is_file() { "a file" } else { "a symlink" };
                        return Err(self.conflict(&dest_rel, index, debs, "a directory", incoming));
                    }
                    Some(_) => self.replaced.push(dest_rel.display().to_string()),
                    None => {}
                }
                // rename() replaces a file or symlink atomically and never follows `dest`.
                fs::rename(entry.path(), &dest).map_err(io_err(&dest))?;
                self.owner.insert(dest_rel, index);
            }
        }
        Ok(())
    }

    /// `rel` is `existing` (put there by an earlier deb, or the merged-/usr skeleton) but
    /// `incoming` in `debs[index]`.
    fn conflict(&self, rel: &Path, index: usize, debs: &[&LockedDeb], existing: &str, incoming: &str) -> RootfsError {
        // The path itself, or the directory it came with.
        let by = rel
            .ancestors()
            .find_map(|a| self.owner.get(a))
            .map(|&i| debs[i].label())
            .unwrap_or_else(|| "the merged-/usr skeleton".to_string());
        RootfsError::Conflict {
            path: format!("/{}", rel.display()),
            what: format!("{existing} from {by}, but {incoming} in {}", debs[index].label()),
        }
    }

    /// Mount points, then directory modes (deepest first, so a read-only directory is set
    /// after its children). Returns the replaced paths.
    fn finish_tree(&mut self) -> Result<Vec<String>, RootfsError> {
        for dir in SKELETON_DIRS {
            let p = self.root.join(dir);
            if fs::symlink_metadata(&p).is_err() {
                mkdir(&p)?;
                self.dir_modes.insert(PathBuf::from(dir), 0o755);
            }
        }
        for name in PROVIDED_ETC_FILES {
            let p = self.root.join("etc").join(name);
            if fs::symlink_metadata(&p).is_err() {
                write_new(&p, b"")?;
                // Not "now": finish_times gives it the tree's newest mtime.
                set_mtime_nofollow(&p, 0).map_err(io_err(&p))?;
                self.placeholders.push(p);
            }
        }
        let mut dirs: Vec<(&PathBuf, &u32)> = self.dir_modes.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mode) in dirs {
            let p = self.root.join(rel);
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(io_err(&p))?;
        }
        let mut replaced = std::mem::take(&mut self.replaced);
        replaced.sort();
        replaced.dedup();
        Ok(replaced)
    }

    /// Every directory, the merged-/usr links and the `links` get the newest file mtime of
    /// the tree (directory mtimes change as the tree is merged, and would make two
    /// assemblies differ; files keep the mtimes of their debs).
    fn finish_times(&self, links: &BTreeMap<String, String>) -> Result<(), RootfsError> {
        let mut newest = 0;
        let mut paths = Vec::new();
        for entry in walkdir::WalkDir::new(self.root).follow_links(false) {
            let entry = entry.map_err(walk_err(self.root))?;
            if entry.file_type().is_dir() {
                paths.push(entry.into_path());
            } else if entry.file_type().is_file() {
                let m = entry.metadata().map_err(walk_err(entry.path()))?;
                newest = newest.max(m.mtime());
            }
        }
        for dir in merged_usr_dirs(Arch::Amd64).iter().chain(merged_usr_dirs(Arch::Arm64)) {
            let p = self.root.join(dir);
            if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                paths.push(p);
            }
        }
        for link in links.keys() {
            paths.push(self.root.join(link.trim_start_matches('/')));
        }
        paths.extend(self.placeholders.iter().cloned());
        // Setting an entry's mtime does not touch its parent's: any order will do.
        for p in paths {
            set_mtime_nofollow(&p, newest).map_err(io_err(&p))?;
        }
        Ok(())
    }
}

/// A walkdir error as an I/O error on the path it names (`fallback` when it names none).
fn walk_err(fallback: &Path) -> impl Fn(walkdir::Error) -> RootfsError + '_ {
    move |e| {
        let path = e.path().unwrap_or(fallback).to_owned();
        io_err(&path)(e.into_io_error().unwrap_or_else(|| io::Error::other("walk error")))
    }
}

fn mkdir(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir(path).map_err(io_err(path))?;
    // Independent of the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err(path))
}

fn set_mtime_nofollow(path: &Path, secs: i64) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("nul in path"))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is nul-terminated and `times` has the two entries utimensat reads.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resolves `rel` inside `root` as if `root` were `/` (as `chroot` or openat2's
/// RESOLVE_IN_ROOT would): symlinks are followed, absolute targets start again at `root`,
/// `..` stops at `root`. Returns the real relative path (no symlink in it), or why it
/// cannot be resolved (a missing component, too many links).
fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut queue: std::collections::VecDeque<std::ffi::OsString> =
        rel.components().map(|c| c.as_os_str().to_owned()).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_bytes() {
            b"" | b"." | b"/" => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        stack.push(c);
        let here: PathBuf = stack.iter().collect();
        let abs = root.join(&here);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(format!("goes through more than {MAX_SYMLINK_HOPS} symlinks"));
                }
                let target = fs::read_link(&abs).map_err(|e| format!("cannot be read: {e}"))?;
                stack.pop();
                if target.is_absolute() {
                    stack.clear();
                }
                for part in target.components().rev() {
                    queue.push_front(part.as_os_str().to_owned());
                }
            }
            Ok(_) => {}
            Err(_) => return Err(format!("points at /{}, which does not exist", here.display())),
        }
    }
    Ok(stack.iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Links (set.toml's fix-ups)
// ---------------------------------------------------------------------------------------------

fn check_links(links: &BTreeMap<String, String>) -> Result<(), RootfsError> {
    for (link, target) in links {
        let bad = |message: &str| RootfsError::Link {
            link: link.clone(),
            target: target.clone(),
            message: message.to_string(),
        };
        let rel = link
            .strip_prefix('/')
            .ok_or_else(|| bad("the link must be an absolute path"))?;
        if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("the link must be a normal path (no empty, '.' or '..' components)"));
        }
        if target.is_empty() || target.contains('\0') || target.len() > 4095 {
            return Err(bad("the target must be a non-empty path"));
        }
    }
    Ok(())
}

/// Makes every link of `links` (replacing a file or link already there), and checks that
/// each resolves to something inside the rootfs.
fn apply_links(root: &Path, links: &BTreeMap<String, String>) -> Result<(), RootfsError> {
    for (link, target) in links {
        let bad = |message: String| RootfsError::Link {
            link: link.clone(),
            target: target.clone(),
            message,
        };
        let rel = Path::new(link.trim_start_matches('/'));
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or_else(|| bad("has no file name".into()))?;
        let real_parent = resolve_in_root(root, parent).map_err(|why| bad(format!("its directory {why}")))?;
        if !fs::symlink_metadata(root.join(&real_parent)).is_ok_and(|m| m.is_dir()) {
            return Err(bad(format!("/{} is not a directory", real_parent.display())));
        }
        let dest = root.join(&real_parent).join(name);
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => return Err(bad("a directory is there".into())),
            Ok(_) => fs::remove_file(&dest).map_err(io_err(&dest))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&dest)(e)),
        }
        std::os::unix::fs::symlink(OsStr::new(target), &dest).map_err(io_err(&dest))?;
        // A link to nothing is a typo (`gcc-13` in a gcc-12 environment): say so now rather
        // than let a build fail with "cc: not found".
        resolve_in_root(root, &real_parent.join(name))
            .map_err(|why| bad(format!("the link {why} (in the environment)")))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Emulators
// ---------------------------------------------------------------------------------------------

/// Returns the path of `emu.binary` extracted from its qemu-user-static deb into
/// The name under `envs/` of the directory holding `emu`'s binary.
pub fn emulator_entry(emu: &EmulatorLock) -> String {
    format!("emulator-{}", emu.deb.sha256)
}

/// `<store>/envs/emulator-<deb sha256>/<basename>` (mode 0755), extracting it first if
/// needed. The binary must be a static ELF executable for `emu.host`: binfmt_misc's `F`
/// flag opens it once, and it then runs inside sandboxes that have no host libraries.
pub fn emulator(store: &Store, fetcher: &Fetcher, emu: &EmulatorLock) -> Result<PathBuf, RootfsError> {
    let label = emu.deb.label();
    let fail = |message: String| RootfsError::Emulator {
        deb: label.clone(),
        binary: emu.binary.clone(),
        message,
    };
    emu.deb.check(emu.host).map_err(|message| RootfsError::InvalidDeb {
        deb: label.clone(),
        message,
    })?;
    let basename = Path::new(&emu.binary)
        .file_name()
        .filter(|_| {
            emu.binary.starts_with("usr/bin/") && !emu.binary.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        })
        .ok_or_else(|| fail("must be a relative path under usr/bin/".into()))?
        .to_owned();
    let dir = store.root().join("envs").join(emulator_entry(emu));
    let out = dir.join(&basename);
    let done = dir.join(format!("{}.sha256", basename.to_string_lossy()));
    if done.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let _lock = store.lock_object("env", &emulator_entry(emu))?;
    if done.is_file() {
        return Ok(out);
    }
    let deb_path = fetcher
        .fetch(&label, &[emu.deb.url()], &emu.deb.sha256, &NoProgress)
        .map_err(|source| RootfsError::Fetch {
            deb: label.clone(),
            source,
        })?;
    let staging = Staging(Some(store.temp_dir("emulator-")?.keep()));
    let tmp = staging.path().join(&basename);
    extract_member(&deb_path, &emu.binary, &tmp).map_err(|e| match e {
        Extract::Deb(source) => RootfsError::Deb {
            deb: label.clone(),
            source,
        },
        Extract::Io(path, source) => RootfsError::Io { path, source },
        Extract::Other(message) => fail(message),
    })?;
    check_static_elf(&tmp, emu.host).map_err(fail)?;
    let digest = archive::sha256_file(&tmp).map_err(RootfsError::Manifest)?;
    fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &out).map_err(io_err(&out))?;
    store::write_atomic(&done, format!("{digest}\n").as_bytes())?;
    Ok(out)
}

enum Extract {
    Deb(DebError),
    Io(PathBuf, io::Error),
    Other(String),
}

/// Copies the regular file `member` (a path inside the deb's data.tar, without `./`) to
/// `dest`, mode 0755. The deb's sha256 was checked by fetch, so only this entry is read.
fn extract_member(deb_path: &Path, member: &str, dest: &Path) -> Result<(), Extract> {
    let (reader, compression, _) = deb::data(deb_path).map_err(Extract::Deb)?;
    let read_err = |e: io::Error| Extract::Io(deb_path.to_owned(), e);
    let decoded = deb::decoder(reader, compression).map_err(read_err)?;
    let mut tar = tar::Archive::new(decoded);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw);
        let normalized: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        if normalized.join("/") != member {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            let what = match entry.link_name_bytes() {
                Some(t) => format!("is a link to {:?}, not a file", String::from_utf8_lossy(&t)),
                None => "is not a regular file".to_string(),
            };
            return Err(Extract::Other(what));
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dest)
            .map_err(|e| Extract::Io(dest.to_owned(), e))?;
        io::copy(&mut entry, &mut file).map_err(|e| Extract::Io(dest.to_owned(), e))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(|e| Extract::Io(dest.to_owned(), e))?;
        return Ok(());
    }
    Err(Extract::Other("not in the package".into()))
}

/// Checks that `path` is a 64-bit little-endian ELF executable for `host`'s machine without
/// a program interpreter (static, possibly static-pie).
fn check_static_elf(path: &Path, host: Arch) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    let mut f = fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut header = [0u8; 64];
    f.read_exact(&mut header)
        .map_err(|_| "too short to be an ELF file".to_string())?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let machine = u16_at(&header, 18);
    let (expected, name) = match host {
        Arch::Amd64 => (62, "x86_64"),
        Arch::Arm64 => (183, "aarch64"),
    };
    if machine != expected {
        return Err(format!(
            "built for ELF machine {machine}, not {name} (the host, {host})"
        ));
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
    let phentsize = u16_at(&header, 54) as u64;
    let phnum = u16_at(&header, 56) as u64;
    if phentsize < 4 || phnum == 0 || phnum > 256 {
        return Err("has no usable program headers".into());
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(phoff))
        .map_err(|e| format!("cannot read it: {e}"))?;
    f.read_exact(&mut table)
        .map_err(|_| "truncated program headers".to_string())?;
    for ph in table.chunks(phentsize as usize) {
        if u32::from_le_bytes(ph[..4].try_into().expect("4 bytes")) == PT_INTERP {
            return Err(format!(
                "dynamically linked (has a program interpreter), not a static {name} executable"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// Re-hashes one entry of `envs/` (an environment or an emulator directory) against what
/// was recorded when it was made. The message says what differs.
pub fn verify(store: &Store, dir: &Path) -> Result<(), String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Not while another hb assembles it (the lock is free once it is complete).
    let _lock = store.lock_object("env", &name).map_err(|e| e.to_string())?;
    if name.starts_with("emulator-") {
        return verify_emulator(dir);
    }
    let meta: EnvMeta =
        serde_json::from_slice(&fs::read(dir.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?)
            .map_err(|e| format!("meta.json: {e}"))?;
    if meta.environment_digest != name {
        return Err(format!("meta.json records environment {}", meta.environment_digest));
    }
    let recorded: Manifest =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).map_err(|e| format!("manifest.json: {e}"))?)
            .map_err(|e| format!("manifest.json: {e}"))?;
    if recorded.digest() != meta.content_digest {
        return Err("manifest.json does not match the content digest in meta.json".into());
    }
    let actual = archive::manifest(&dir.join("rootfs")).map_err(|e| format!("rootfs: {e}"))?;
    if actual != recorded {
        let differing = recorded.diff(&actual);
        return Err(format!(
            "rootfs differs from its manifest in {} paths: {}",
            differing.len(),
            differing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

fn verify_emulator(dir: &Path) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut checked = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(binary) = file_name.strip_suffix(".sha256") else {
            continue;
        };
        let expected = fs::read_to_string(entry.path()).map_err(|e| format!("{file_name}: {e}"))?;
        let actual = archive::sha256_file(&dir.join(binary)).map_err(|e| format!("{binary}: {e}"))?;
        if actual != expected.trim() {
            return Err(format!("{binary} hashes to {actual}, recorded {}", expected.trim()));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err("no complete emulator in this directory".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::Mirrors;
    use std::os::unix::fs::symlink;

    /// One entry of a synthetic deb's data.tar.
    enum E {
        Dir(&'static str, u32),
        File(&'static str, u32, &'static [u8]),
        Link(&'static str, &'static str),
    }

    /// Writes `pool/main/t/<name>/<name>_1.0_<arch>.deb` under `mirror` (a data.tar.gz with
    /// `entries`, as dpkg-deb lays it out) and returns its lock entry.
    fn make_deb(mirror: &Path, name: &str, arch: &str, entries: &[E]) -> LockedDeb {
        let mut data = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let dir = |path: &str, mode: u32, data: &mut tar::Builder<_>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_path(path).unwrap();
            h.set_mode(mode);
            h.set_mtime(1_600_000_000);
            h.set_size(0);
            h.set_cksum();
            data.append(&h, io::empty()).unwrap();
        };
        dir("./", 0o755, &mut data);
        for e in entries {
            match e {
                E::Dir(path, mode) => dir(&format!("./{path}/"), *mode, &mut data),
                E::File(path, mode, content) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_path(format!("./{path}")).unwrap();
                    h.set_mode(*mode);
                    h.set_mtime(1_700_000_000);
                    h.set_size(content.len() as u64);
                    h.set_cksum();
                    data.append(&h, *content).unwrap();
                }
                E::Link(path, target) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_path(format!("./{path}")).unwrap();
                    h.set_link_name(target).unwrap();
                    h.set_mode(0o777);
                    h.set_mtime(1_700_000_000);
                    h.set_size(0);
                    h.set_cksum();
                    data.append(&h, io::empty()).unwrap();
                }
            }
        }
        let data = data.into_inner().unwrap().finish().unwrap();
        let bytes = deb::ar_bytes(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"unused"),
            ("data.tar.gz", &data),
        ]);
        let path = format!("pool/main/t/{name}/{name}_1.0_{arch}.deb");
        let full = mirror.join(&path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, &bytes).unwrap();
        LockedDeb {
            name: name.into(),
            version: "1.0".into(),
            arch: arch.into(),
            path,
            sha256: Sha256::of_bytes(&bytes),
            size: bytes.len() as u64,
        }
    }

    fn file_mirror(dir: &Path) -> Mirrors {
        Mirrors {
            debian: Some(format!("file://{}", dir.display())),
        }
    }

    fn synthetic(mirror: &Path) -> TargetLock {
        let a = make_deb(
            mirror,
            "aaa",
            "amd64",
            &[
                E::Dir("bin", 0o755),
                E::File("bin/tool", 0o4755, b"#!/bin/sh\necho tool\n"),
                E::Dir("lib64", 0o755),
                E::Link("lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so"),
                E::Dir("usr", 0o755),
                E::Dir("usr/lib", 0o755),
                E::Dir("usr/lib/x86_64-linux-gnu", 0o755),
                E::Link(
                    "usr/lib/x86_64-linux-gnu/libfoo.so",
                    "/lib/x86_64-linux-gnu/libfoo.so.1",
                ),
                E::Dir("usr/share", 0o755),
                E::Dir("usr/share/locked", 0o555),
                E::File("usr/share/locked/data", 0o644, b"read-only dir\n"),
                E::File("usr/share/both", 0o644, b"from aaa\n"),
            ],
        );
        let b = make_deb(
            mirror,
            "bbb",
            "all",
            &[
                E::Dir("lib", 0o755),
                E::Dir("lib/x86_64-linux-gnu", 0o755),
                E::File("lib/x86_64-linux-gnu/libfoo.so.1", 0o644, b"\x7fELF not really\n"),
                E::Dir("usr", 0o755),
                E::Dir("usr/share", 0o755),
                E::File("usr/share/both", 0o644, b"from bbb\n"),
                // Into the read-only directory that `aaa` brought in whole.
                E::Dir("usr/share/locked", 0o555),
                E::File("usr/share/locked/more", 0o644, b"added later\n"),
            ],
        );
        // Out of order on purpose: the lock's order (by name) is what counts.
        TargetLock {
            arch: Arch::Amd64,
            debs: vec![b, a],
        }
    }

    fn links() -> BTreeMap<String, String> {
        [
            ("/usr/bin/cc".to_string(), "tool".to_string()),
            ("/etc/alt-tool".to_string(), "/bin/tool".to_string()),
        ]
        .into()
    }

    fn digest(n: u8) -> Sha256 {
        Sha256::parse(&format!("{:02x}", n).repeat(32)).unwrap()
    }

    fn tmp_entries(store: &Store) -> usize {
        fs::read_dir(store.root().join("tmp")).unwrap().count()
    }

    #[test]
    fn assembles_merged_usr_with_absolute_links_deterministically() {
        let mirror = tempfile::tempdir().unwrap();
        let target = synthetic(mirror.path());
        let mut digests = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
            let messages = std::cell::RefCell::new(Vec::new());
            let progress = |m: &str| messages.borrow_mut().push(m.to_string());
            let root = assemble(&store, &fetcher, &target, &links(), &digest(1), &progress).unwrap();
            assert_eq!(root, env_dir(&store, &digest(1)).join("rootfs"));
            // merged-/usr: the deb's bin/ and lib64/ landed in usr/.
            assert_eq!(fs::read_link(root.join("bin")).unwrap(), Path::new("usr/bin"));
            assert_eq!(fs::read_link(root.join("lib64")).unwrap(), Path::new("usr/lib64"));
            assert!(fs::symlink_metadata(root.join("usr/bin/tool")).unwrap().is_file());
            assert!(fs::symlink_metadata(root.join("usr/lib/x86_64-linux-gnu/libfoo.so.1"))
                .unwrap()
                .is_file());
            // Absolute links kept as they are, for the sandbox where this tree is `/`.
            assert_eq!(
                fs::read_link(root.join("usr/lib64/ld.so")).unwrap(),
                Path::new("/lib/x86_64-linux-gnu/ld.so")
            );
            assert_eq!(
                fs::read_link(root.join("usr/lib/x86_64-linux-gnu/libfoo.so")).unwrap(),
                Path::new("/lib/x86_64-linux-gnu/libfoo.so.1")
            );
            // setuid dropped, read-only directory kept read-only.
            assert_eq!(fs::metadata(root.join("usr/bin/tool")).unwrap().mode() & 0o7777, 0o755);
            assert_eq!(
                fs::metadata(root.join("usr/share/locked")).unwrap().mode() & 0o7777,
                0o555
            );
            // The later deb in name order wins, and it is recorded.
            assert!(root.join("usr/share/locked/data").is_file() && root.join("usr/share/locked/more").is_file());
            assert_eq!(fs::read(root.join("usr/share/both")).unwrap(), b"from bbb\n");
            let meta = meta(&store, &digest(1)).unwrap();
            assert_eq!(meta.replaced, ["usr/share/both"]);
            assert_eq!((meta.debs, meta.arch), (2, Arch::Amd64));
            // links, and the mount points.
            assert_eq!(fs::read_link(root.join("usr/bin/cc")).unwrap(), Path::new("tool"));
            assert_eq!(
                fs::read_link(root.join("etc/alt-tool")).unwrap(),
                Path::new("/bin/tool")
            );
            for dir in SKELETON_DIRS {
                assert!(root.join(dir).is_dir(), "{dir}");
            }
            // Placeholders for what each build writes over /etc, with the tree's mtime.
            for name in PROVIDED_ETC_FILES {
                let m = fs::symlink_metadata(root.join("etc").join(name)).unwrap();
                assert!(m.is_file() && m.len() == 0, "{name}");
                assert_eq!((m.mtime(), m.mode() & 0o7777), (1_700_000_000, 0o644), "{name}");
            }
            // Directory mtimes do not depend on when the tree was made.
            assert_eq!(fs::metadata(root.join("usr/share")).unwrap().mtime(), 1_700_000_000);
            assert!(messages.borrow().iter().any(|m| m.contains("[2/2]")));
            assert_eq!(tmp_entries(&store), 0, "staging removed");
            verify(&store, &env_dir(&store, &digest(1))).unwrap();
            // Second call: already there.
            let again = assemble(&store, &fetcher, &target, &links(), &digest(1), &|_| {
                panic!("nothing to do")
            })
            .unwrap();
            assert_eq!(again, root);
            digests.push(meta.content_digest);
        }
        assert_eq!(digests[0], digests[1]);
    }

    #[test]
    fn a_deb_that_does_not_match_its_sha256_is_refused_and_nothing_is_stored() {
        let mirror = tempfile::tempdir().unwrap();
        let mut target = synthetic(mirror.path());
        target.debs[0].sha256 = Sha256::of_bytes(b"something else");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let err = assemble(&store, &fetcher, &target, &links(), &digest(2), &|_| {}).unwrap_err();
        assert!(matches!(err, RootfsError::Fetch { .. }), "{err:?}");
        assert!(format!("{:?}", err).contains("sha256 mismatch"), "{err:?}");
        assert!(err.hint().unwrap().contains("nothing was stored"));
        assert!(!store.source_path(&target.debs[0].sha256).exists());
        assert!(!env_dir(&store, &digest(2)).exists());
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn lock_entries_built_in_code_are_checked_too() {
        let mirror = tempfile::tempdir().unwrap();
        let mut target = synthetic(mirror.path());
        target.debs[0].path = "pool/../../etc/bbb_1.0_all.deb".into();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let err = assemble(&store, &fetcher, &target, &links(), &digest(9), &|_| {}).unwrap_err();
        assert!(matches!(err, RootfsError::InvalidDeb { .. }), "{err:?}");
        assert!(err.to_string().contains("path:"), "{err}");
    }

    #[test]
    fn nothing_is_written_through_a_symlink_of_a_deb() {
        let mirror = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let evil = make_deb(
            mirror.path(),
            "evil",
            "amd64",
            &[
                E::Dir("usr", 0o755),
                E::Link(
                    "usr/escape",
                    Box::leak(outside.path().display().to_string().into_boxed_str()),
                ),
                E::File("usr/escape/planted", 0o644, b"gotcha\n"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let target = TargetLock {
            arch: Arch::Amd64,
            debs: vec![evil],
        };
        let err = assemble(&store, &fetcher, &target, &BTreeMap::new(), &digest(3), &|_| {}).unwrap_err();
        assert!(matches!(err, RootfsError::Unpack { .. }), "{err:?}");
        assert!(!outside.path().join("planted").exists());
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn a_deb_following_a_symlink_of_another_stays_in_the_rootfs() {
        // `aaa` makes usr/share/doc/x a link to an absolute path; `bbb` ships a file under
        // that directory. dpkg would follow the link: so do we, but inside the rootfs.
        let mirror = tempfile::tempdir().unwrap();
        let a = make_deb(
            mirror.path(),
            "aaa",
            "all",
            &[
                E::Dir("usr", 0o755),
                E::Dir("usr/share", 0o755),
                E::Dir("usr/share/real", 0o755),
                E::Link("usr/share/x", "/usr/share/real"),
            ],
        );
        let b = make_deb(
            mirror.path(),
            "bbb",
            "all",
            &[
                E::Dir("usr", 0o755),
                E::Dir("usr/share", 0o755),
                E::Dir("usr/share/x", 0o755),
                E::File("usr/share/x/f", 0o644, b"f\n"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let target = TargetLock {
            arch: Arch::Arm64,
            debs: vec![a, b],
        };
        let root = assemble(&store, &fetcher, &target, &BTreeMap::new(), &digest(4), &|_| {}).unwrap();
        assert_eq!(fs::read(root.join("usr/share/real/f")).unwrap(), b"f\n");
        assert!(fs::symlink_metadata(root.join("usr/share/x"))
            .unwrap()
            .file_type()
            .is_symlink());
        // arm64 has no lib64 link.
        assert!(fs::symlink_metadata(root.join("lib64")).is_err());
    }

    #[test]
    fn conflicting_debs_and_bad_links_are_named() {
        let mirror = tempfile::tempdir().unwrap();
        let a = make_deb(
            mirror.path(),
            "aaa",
            "all",
            &[E::Dir("etc", 0o755), E::File("etc/thing", 0o644, b"x")],
        );
        let b = make_deb(
            mirror.path(),
            "bbb",
            "all",
            &[E::Dir("etc", 0o755), E::Dir("etc/thing", 0o755)],
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let target = TargetLock {
            arch: Arch::Amd64,
            debs: vec![a.clone(), b],
        };
        let err = assemble(&store, &fetcher, &target, &BTreeMap::new(), &digest(5), &|_| {}).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "/etc/thing: a file from aaa_1.0_all, but a directory in bbb_1.0_all"
        );

        let only_a = TargetLock {
            arch: Arch::Amd64,
            debs: vec![a],
        };
        for (link, target, expected) in [
            ("/usr/bin/cc", "gcc-13", "does not exist"),
            ("/opt/tools/cc", "gcc", "its directory"),
            ("usr/bin/cc", "gcc", "must be an absolute path"),
            ("/usr/../etc/x", "gcc", "normal path"),
            ("/etc", "x", "a directory is there"),
        ] {
            let links: BTreeMap<String, String> = [(link.to_string(), target.to_string())].into();
            let err = assemble(&store, &fetcher, &only_a, &links, &digest(6), &|_| {}).unwrap_err();
            assert!(matches!(err, RootfsError::Link { .. }), "{err:?}");
            assert!(err.to_string().contains(expected), "{link}: {err}");
        }
        assert_eq!(tmp_entries(&store), 0);
        assert!(!env_dir(&store, &digest(6)).exists());
    }

    #[test]
    fn verify_finds_a_changed_rootfs() {
        let mirror = tempfile::tempdir().unwrap();
        let target = synthetic(mirror.path());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, file_mirror(mirror.path()), false);
        let root = assemble(&store, &fetcher, &target, &links(), &digest(7), &|_| {}).unwrap();
        fs::write(root.join("usr/bin/tool"), b"tampered").unwrap();
        let err = verify(&store, &env_dir(&store, &digest(7))).unwrap_err();
        assert!(err.contains("usr/bin/tool"), "{err}");
    }

    #[test]
    fn resolve_in_root_never_leaves_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/usr/lib", root.join("abs")).unwrap();
        symlink("../../../../usr", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(root, Path::new("lib")).unwrap(), Path::new("usr/lib"));
        assert_eq!(resolve_in_root(root, Path::new("abs")).unwrap(), Path::new("usr/lib"));
        assert_eq!(
            resolve_in_root(root, Path::new("up/lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert!(resolve_in_root(root, Path::new("loop"))
            .unwrap_err()
            .contains("more than 40"));
        assert!(resolve_in_root(root, Path::new("lib/nope"))
            .unwrap_err()
            .contains("/usr/lib/nope"));
    }

    #[test]
    fn static_elf_check() {
        let dir = tempfile::tempdir().unwrap();
        // A minimal ELF64 header with one PT_LOAD program header.
        let elf = |machine: u16, ptype: u32| {
            let mut b = vec![0u8; 64 + 56];
            b[..4].copy_from_slice(b"\x7fELF");
            b[4] = 2;
            b[5] = 1;
            b[18..20].copy_from_slice(&machine.to_le_bytes());
            b[32..40].copy_from_slice(&64u64.to_le_bytes());
            b[54..56].copy_from_slice(&56u16.to_le_bytes());
            b[56..58].copy_from_slice(&1u16.to_le_bytes());
            b[64..68].copy_from_slice(&ptype.to_le_bytes());
            b
        };
        let p = dir.path().join("bin");
        fs::write(&p, elf(62, 1)).unwrap();
        check_static_elf(&p, Arch::Amd64).unwrap();
        assert!(check_static_elf(&p, Arch::Arm64).unwrap_err().contains("not aarch64"));
        fs::write(&p, elf(183, 3)).unwrap();
        assert!(check_static_elf(&p, Arch::Arm64)
            .unwrap_err()
            .contains("dynamically linked"));
        fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(check_static_elf(&p, Arch::Amd64).is_err());
    }

    /// The configured Debian mirror (apt sources or HB_MIRROR_DEBIAN); no mirror is a
    /// failure, never a skip.
    fn real_mirror() -> Mirrors {
        let m = Mirrors::from_environment();
        assert!(m.debian.is_some(), "no Debian mirror configured; set HB_MIRROR_DEBIAN");
        m
    }

    /// Three real bookworm debs that were never updated after the release (so the pool
    /// keeps them): top-level `bin/`, absolute symlinks, an epoch.
    fn real_debs() -> TargetLock {
        let deb = |name: &str, version: &str, path: &str, size: u64, sha256: &str| LockedDeb {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            path: path.into(),
            sha256: Sha256::parse(sha256).unwrap(),
            size,
        };
        TargetLock {
            arch: Arch::Amd64,
            debs: vec![
                deb(
                    "hello",
                    "2.10-3",
                    "pool/main/h/hello/hello_2.10-3_amd64.deb",
                    53080,
                    "2e6e2f1a0007dc43bc91c273fd36e91e40a4f1c2765a03eca68b70a42103878a",
                ),
                deb(
                    "libcrypt-dev",
                    "1:4.4.33-2",
                    "pool/main/libx/libxcrypt/libcrypt-dev_4.4.33-2_amd64.deb",
                    118144,
                    "81ccd29130f75a9e3adabc80e61921abff42f76761e1f792fa2d1bb69af7f52f",
                ),
                deb(
                    "sysvinit-utils",
                    "3.06-4",
                    "pool/main/s/sysvinit/sysvinit-utils_3.06-4_amd64.deb",
                    30996,
                    "11790842108768ec52432ea22e7b4f057232813b7c27ef6dfe1aba776a5cb90e",
                ),
            ],
        }
    }

    #[test]
    fn real_debs_give_the_same_rootfs_twice() {
        let target = real_debs();
        let links: BTreeMap<String, String> = [("/usr/bin/greet".to_string(), "hello".to_string())].into();
        let mut digests = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let fetcher = Fetcher::new(&store, real_mirror(), false);
            let root = assemble(&store, &fetcher, &target, &links, &digest(8), &|_| {}).unwrap();
            assert!(root.join("usr/bin/hello").is_file());
            // sysvinit-utils ships bin/pidof -> /sbin/killall5 and sbin/killall5.
            assert_eq!(
                fs::read_link(root.join("usr/bin/pidof")).unwrap(),
                Path::new("/sbin/killall5")
            );
            assert!(root.join("usr/sbin/killall5").is_file());
            assert_eq!(
                fs::read_link(root.join("usr/lib/x86_64-linux-gnu/libcrypt.so")).unwrap(),
                Path::new("/lib/x86_64-linux-gnu/libcrypt.so.1")
            );
            for deb in &target.debs {
                assert!(store.source_path(&deb.sha256).is_file());
            }
            verify(&store, &env_dir(&store, &digest(8))).unwrap();
            digests.push(meta(&store, &digest(8)).unwrap().content_digest);
        }
        assert_eq!(digests[0], digests[1]);
    }

    #[test]
    fn the_real_emulator_is_extracted_and_runs() {
        use crate::lock::{resolve, Lock};
        use crate::recipe::DebianEnvironment;
        let host = Arch::host().expect("tests run on amd64 or arm64");
        let other = Arch::ALL.into_iter().find(|a| *a != host).unwrap();
        let work = tempfile::tempdir().unwrap();
        let spec = DebianEnvironment {
            suite: "bookworm".into(),
            packages: vec![],
            links: BTreeMap::new(),
            cross_packages: vec![],
        };
        let lock: Lock = resolve(&spec, &[other], &real_mirror(), work.path()).unwrap();
        let emu = lock.emulator(host, other).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fetcher = Fetcher::new(&store, real_mirror(), false);
        let path = emulator(&store, &fetcher, emu).unwrap();
        assert_eq!(
            path,
            store.root().join(format!(
                "envs/emulator-{}/{}",
                emu.deb.sha256,
                Path::new(&emu.binary).file_name().unwrap().to_string_lossy()
            ))
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
        let out = std::process::Command::new(&path).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("version 7.2"), "{text}");
        verify(&store, path.parent().unwrap()).unwrap();
        // Again: already there.
        assert_eq!(emulator(&store, &fetcher, emu).unwrap(), path);
        assert_eq!(tmp_entries(&store), 0);
    }
}
