//! Build environments: what the sandbox's root file system is made of, per target arch.
//!
//! Two kinds exist. `debian`: a rootfs assembled from the `.deb` files pinned in the set's
//! `set.lock` ([`crate::lock`], [`crate::rootfs`]), identified by the lock's environment
//! digest, the same bytes on every machine; a foreign architecture runs under a private
//! qemu-user registration inside the sandbox (method `emulated`). `host`: the machine's own
//! /usr (read-only), impure, for development, and said so in every record.
//!
//! Resolution ([`resolve`]) only reads the lock, so planning stays cheap; [`materialize`]
//! fetches and assembles what the sandbox will mount. This module does not run builds.

use crate::fetch::Fetcher;
use crate::lock::{self, EmulatorLock, LockError, TargetLock};
use crate::recipe::{DebianEnvironment, Environment, Set};
use crate::rootfs::{self, RootfsError};
use crate::store::{EnvironmentRecord, Store};
use crate::types::{Arch, Sha256};
use hb_sandbox::{Binfmt, Mount};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The lock file, next to `set.toml`.
pub const LOCK_FILE: &str = "set.lock";
/// The lock of the `--cross` environment (host arch + `cross_packages`), next to `set.toml`.
pub const CROSS_LOCK_FILE: &str = "set.cross.lock";

/// Top-level directories of a rootfs that the sandbox provides fresh.
const SANDBOX_OWNED: [&str; 6] = ["dev", "proc", "tmp", "build", "out", "deps"];

/// A resolved build environment.
#[derive(Debug, Clone)]
pub struct BuildEnvironment {
    pub kind: String,
    /// Identifies the environment in input hashes (the lock's environment digest, or "host").
    pub digest: String,
    pub impure: bool,
    /// "host", "native", "emulated" or "cross".
    pub method: String,
    pub arch: Arch,
    /// For `cross`: the GNU triplet whose tools (`<triplet>-gcc`, ...) build for `arch`.
    pub cross_triplet: Option<String>,
    source: Source,
    /// Filled by [`materialize`]: the root file system as sandbox mounts.
    pub root_mounts: Vec<Mount>,
    /// Filled by [`materialize`]: the emulator registration for a foreign arch.
    pub binfmt: Vec<Binfmt>,
    /// Filled by [`materialize`]: the host directory that is the build's `/`.
    pub root_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Source {
    Host,
    Debian {
        target: Box<TargetLock>,
        links: BTreeMap<String, String>,
        emulator: Option<EmulatorLock>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("the host environment can only build for this machine's architecture ({host}), not {target}")]
    HostArch { host: String, target: Arch },
    #[error("{}: no lock file for the debian environment", .path.display())]
    NoLock { path: PathBuf },
    #[error("{} has no emulator for {target} on {host} hosts", .path.display())]
    NoEmulator { path: PathBuf, host: Arch, target: Arch },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("the {arch} environment could not be assembled")]
    Assemble {
        arch: Arch,
        #[source]
        source: RootfsError,
    },
    #[error("this machine's architecture ({0}) is not one hb builds for")]
    UnknownHost(String),
    #[error("{}: --cross needs environment.cross_packages (the cross toolchains)", .path.display())]
    NoCross { path: PathBuf },
}

impl EnvError {
    pub fn hint(&self) -> Option<String> {
        match self {
            EnvError::HostArch { .. } => Some(
                "pass --arch with this machine's architecture, or use kind = \"debian\" in set.toml (pinned, any arch)".into(),
            ),
            EnvError::NoLock { .. } | EnvError::NoEmulator { .. } => {
                Some("run `hb lock SET` to resolve the environment into set.lock".into())
            }
            EnvError::Lock(e) => e.hint(),
            EnvError::Rootfs(e) | EnvError::Assemble { source: e, .. } => e.hint(),
            EnvError::UnknownHost(_) => None,
            EnvError::NoCross { .. } => Some(
                "add for example cross_packages = [\"gcc-aarch64-linux-gnu\", \"libc6-dev-arm64-cross\"] to [environment], then run `hb lock SET`".into(),
            ),
        }
    }

    /// Bad input (a lock to fix, an arch to change) rather than a failing machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            EnvError::HostArch { .. } | EnvError::NoLock { .. } | EnvError::NoEmulator { .. } => true,
            EnvError::Lock(e) => !matches!(
                e,
                LockError::Apt { .. } | LockError::AptSpawn { .. } | LockError::Io { .. }
            ),
            EnvError::Rootfs(e) | EnvError::Assemble { source: e, .. } => match e {
                RootfsError::Fetch { source, .. } => !matches!(source, crate::fetch::FetchError::Store(_)),
                RootfsError::Manifest(_) | RootfsError::Io { .. } | RootfsError::Store(_) => false,
                _ => true,
            },
            EnvError::UnknownHost(_) | EnvError::NoCross { .. } => true,
        }
    }
}

/// Resolve the environment of every arch in `arches` from the set (and its lock). With
/// `cross`, foreign arches build in the host arch's cross environment (`set.cross.lock`)
/// instead of under emulation; their smoke tests still run under emulation.
pub fn resolve(set: &Set, arches: &[Arch], cross: bool) -> Result<BTreeMap<Arch, BuildEnvironment>, EnvError> {
    resolve_on(host_arch()?, set, arches, cross)
}

/// This machine's architecture, if hb builds for it.
pub fn host_arch() -> Result<Arch, EnvError> {
    Arch::host().ok_or_else(|| EnvError::UnknownHost(std::env::consts::ARCH.to_string()))
}

/// The lock at `path`, refused when missing or stale against `spec` and `targets`.
fn read_fresh(path: &Path, spec: &DebianEnvironment, targets: &[Arch]) -> Result<lock::Lock, EnvError> {
    if !path.is_file() {
        return Err(EnvError::NoLock { path: path.to_owned() });
    }
    let lock = lock::read(path)?;
    if let Some(reason) = lock.stale_reason(spec, targets) {
        return Err(LockError::Stale {
            file: path.to_owned(),
            reason,
        }
        .into());
    }
    Ok(lock)
}

/// [`resolve`] as on a `host` machine (amd64 targets on an arm64 host are emulated with the
/// lock's `qemu-x86_64`, the mirror image of arm64 on amd64).
fn resolve_on(
    host: Arch,
    set: &Set,
    arches: &[Arch],
    cross: bool,
) -> Result<BTreeMap<Arch, BuildEnvironment>, EnvError> {
    let mut out = BTreeMap::new();
    match &set.environment {
        Environment::Host => {
            for &arch in arches {
                if arch != host {
                    return Err(EnvError::HostArch {
                        host: host.to_string(),
                        target: arch,
                    });
                }
                out.insert(
                    arch,
                    BuildEnvironment {
                        kind: "host".into(),
                        digest: "host".into(),
                        impure: true,
                        method: "host".into(),
                        arch,
                        cross_triplet: None,
                        source: Source::Host,
                        root_mounts: Vec::new(),
                        binfmt: Vec::new(),
                        root_dir: None,
                    },
                );
            }
        }
        Environment::Debian(spec) => {
            let path = set.dir.join(LOCK_FILE);
            let lock = read_fresh(&path, spec, &set.targets)?;
            let cross_lock = if cross && arches.iter().any(|&a| a != host) {
                let cross_path = set.dir.join(CROSS_LOCK_FILE);
                if spec.cross_packages.is_empty() {
                    return Err(EnvError::NoCross {
                        path: set.dir.join("set.toml"),
                    });
                }
                let cross_lock = read_fresh(&cross_path, &spec.cross(), &[host])?;
                Some((cross_lock, cross_path))
            } else {
                None
            };
            for &arch in arches {
                let emulator = if arch == host {
                    None
                } else {
                    Some(lock.emulator(host, arch).cloned().ok_or_else(|| EnvError::NoEmulator {
                        path: path.clone(),
                        host,
                        target: arch,
                    })?)
                };
                let (target, digest, method, cross_triplet) = match (&cross_lock, arch == host) {
                    (Some((cross_lock, cross_path)), false) => (
                        cross_lock.require_target(host, cross_path)?.clone(),
                        cross_lock.environment_digest(host, &spec.links),
                        "cross",
                        Some(gnu_triplet(arch).to_string()),
                    ),
                    _ => (
                        lock.require_target(arch, &path)?.clone(),
                        lock.environment_digest(arch, &spec.links),
                        if emulator.is_some() { "emulated" } else { "native" },
                        None,
                    ),
                };
                out.insert(
                    arch,
                    BuildEnvironment {
                        kind: "debian".into(),
                        digest: digest.to_string(),
                        impure: false,
                        method: method.into(),
                        arch,
                        cross_triplet,
                        source: Source::Debian {
                            target: Box::new(target),
                            links: spec.links.clone(),
                            emulator,
                        },
                        root_mounts: Vec::new(),
                        binfmt: Vec::new(),
                        root_dir: None,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Fetch and assemble what every environment mounts (rootfs, emulator); cheap when the
/// store already has them.
pub fn materialize(
    environments: &mut BTreeMap<Arch, BuildEnvironment>,
    store: &Store,
    fetcher: &Fetcher<'_>,
    progress: &dyn Fn(&str),
) -> Result<(), EnvError> {
    for env in environments.values_mut() {
        match &env.source {
            Source::Host => {
                env.root_mounts = host_root_mounts(Path::new("/"));
                env.root_dir = Some(PathBuf::from("/"));
            }
            Source::Debian {
                target,
                links,
                emulator,
            } => {
                let digest = Sha256::parse(&env.digest).expect("environment digests are sha256");
                let rootfs = rootfs::assemble(store, fetcher, target, links, &digest, progress)
                    .map_err(|source| EnvError::Assemble { arch: env.arch, source })?;
                env.root_mounts = rootfs_mounts(&rootfs)?;
                env.root_dir = Some(rootfs);
                if let Some(emulator) = emulator {
                    let binary = rootfs::emulator(store, fetcher, emulator)?;
                    let machine = match env.arch {
                        Arch::Arm64 => "aarch64",
                        Arch::Amd64 => "x86_64",
                    };
                    env.binfmt = vec![hb_sandbox::qemu_binfmt(machine, binary)];
                }
            }
        }
    }
    Ok(())
}

impl BuildEnvironment {
    pub fn record(&self) -> EnvironmentRecord {
        EnvironmentRecord {
            kind: self.kind.clone(),
            digest: self.digest.clone(),
            impure: self.impure,
        }
    }

    /// What goes into input hashes for this environment: the rootfs digest, and for builds
    /// that run foreign binaries the emulator's deb too (its behaviour is an input).
    pub fn input_digest(&self) -> String {
        match &self.source {
            Source::Debian {
                emulator: Some(emulator),
                ..
            } => format!("{}+emulator:{}", self.digest, emulator.deb.sha256),
            _ => self.digest.clone(),
        }
    }

    /// libfaketime's preload library inside the environment, if it has one (the `clock`
    /// variation needs it).
    pub fn faketime_library(&self) -> Option<String> {
        // The environment's own architecture: a cross environment runs host binaries.
        let native = if self.cross_triplet.is_some() {
            Arch::host()?
        } else {
            self.arch
        };
        let path = format!("/usr/lib/{}/faketime/libfaketime.so.1", gnu_triplet(native));
        let root = self.root_dir.as_ref()?;
        root.join(path.trim_start_matches('/')).exists().then_some(path)
    }

    /// Names of the store's `envs/` entries this environment uses once materialized (its
    /// rootfs, its emulator), for gc roots. Empty for `host`.
    pub fn store_entries(&self) -> Vec<String> {
        match &self.source {
            Source::Host => Vec::new(),
            Source::Debian { emulator, .. } => std::iter::once(self.digest.clone())
                .chain(emulator.iter().map(rootfs::emulator_entry))
                .collect(),
        }
    }

    /// The `.deb` files of this environment (empty for `host`).
    pub fn debs(&self) -> Vec<&lock::LockedDeb> {
        match &self.source {
            Source::Host => Vec::new(),
            Source::Debian { target, emulator, .. } => {
                target.debs.iter().chain(emulator.iter().map(|e| &e.deb)).collect()
            }
        }
    }
}

/// The GNU triplet of Debian's cross toolchain for `arch`.
pub fn gnu_triplet(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64-linux-gnu",
        Arch::Arm64 => "aarch64-linux-gnu",
    }
}

/// A rootfs directory as mounts: every top-level directory bound read-only (`/etc` too: it
/// has placeholders for the files hb writes over it, [`rootfs::PROVIDED_ETC_FILES`]), empty
/// ones recreated as plain directories (cheaper than a bind), top-level symlinks (merged
/// /usr) recreated. A dozen mounts for a Debian rootfs: sandbox start costs what it costs
/// with the `host` environment.
pub fn rootfs_mounts(rootfs: &Path) -> Result<Vec<Mount>, EnvError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path, source: std::io::Error| {
        EnvError::Rootfs(RootfsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    for name in rootfs::PROVIDED_ETC_FILES {
        let path = rootfs.join("etc").join(name);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(io(
                &path,
                std::io::Error::other(
                    "missing: every rootfs has it (hb writes it for each build); the environment is damaged, run `hb store verify`",
                ),
            ));
        }
    }
    let mut mounts = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(rootfs)
        .map_err(|e| io(rootfs, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if SANDBOX_OWNED.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let target = PathBuf::from("/").join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if meta.file_type().is_symlink() {
            mounts.push(Mount::Symlink {
                link: target,
                points_to: std::fs::read_link(&path).map_err(|e| io(&path, e))?,
            });
        } else if meta.is_dir()
            && meta.permissions().mode() & 0o7777 == 0o755
            && std::fs::read_dir(&path).map_err(|e| io(&path, e))?.next().is_none()
        {
            mounts.push(Mount::Dir { target });
        } else {
            mounts.push(Mount::Bind {
                source: path,
                target,
                writable: false,
            });
        }
    }
    Ok(mounts)
}

/// /usr read-only, the merged-/usr links as the host has them, and the /etc entries that
/// compilers and configure scripts look at (`alternatives` for `cc`/`awk`, the loader cache).
pub fn host_root_mounts(host_root: &Path) -> Vec<Mount> {
    let mut mounts = vec![Mount::Bind {
        source: host_root.join("usr"),
        target: PathBuf::from("/usr"),
        writable: false,
    }];
    for link in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let path = host_root.join(link);
        if let Ok(target) = std::fs::read_link(&path) {
            mounts.push(Mount::Symlink {
                link: PathBuf::from("/").join(link),
                points_to: target,
            });
        } else if path.is_dir() {
            mounts.push(Mount::Bind {
                source: path,
                target: PathBuf::from("/").join(link),
                writable: false,
            });
        }
    }
    for etc in [
        "etc/alternatives",
        "etc/ld.so.cache",
        "etc/ld.so.conf",
        "etc/ld.so.conf.d",
    ] {
        let path = host_root.join(etc);
        if path.exists() {
            mounts.push(Mount::Bind {
                source: path,
                target: PathBuf::from("/").join(etc),
                writable: false,
            });
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_rootfs_is_a_dozen_mounts_with_etc_bound_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["usr/bin", "etc/apt", "boot", "root", "dev", "tmp", "var/lib"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::set_permissions(root.join("boot"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        for f in rootfs::PROVIDED_ETC_FILES {
            std::fs::write(root.join("etc").join(f), "").unwrap();
        }
        let mounts = rootfs_mounts(root).unwrap();
        let bind = |name: &str| Mount::Bind {
            source: root.join(name),
            target: PathBuf::from("/").join(name),
            writable: false,
        };
        assert_eq!(
            mounts,
            [
                Mount::Symlink {
                    link: "/bin".into(),
                    points_to: "usr/bin".into()
                },
                // Empty and 0755: a plain directory, not a bind.
                Mount::Dir { target: "/boot".into() },
                bind("etc"),
                // Empty but 0700: bound, so that the mode is the rootfs's.
                bind("root"),
                bind("usr"),
                bind("var"),
            ]
        );

        std::fs::remove_file(root.join("etc/hosts")).unwrap();
        let e = rootfs_mounts(root).unwrap_err().to_string();
        assert!(e.contains("etc/hosts"), "{e}");
    }

    /// The same set on an amd64 and on an arm64 host: the host's arch is native, the other
    /// emulated with the lock's emulator for that direction; the environment digests (what
    /// goes into input hashes) are the target's, whatever the host.
    #[test]
    fn each_host_builds_its_own_arch_natively_and_emulates_the_other() {
        let set = crate::recipe::load_set(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pinned")).unwrap();
        let both = [Arch::Amd64, Arch::Arm64];
        let on_amd64 = resolve_on(Arch::Amd64, &set, &both, false).unwrap();
        let on_arm64 = resolve_on(Arch::Arm64, &set, &both, false).unwrap();
        let emulator = |e: &BuildEnvironment| match &e.source {
            Source::Debian { emulator, .. } => emulator.as_ref().map(|e| (e.host, e.target, e.binary.clone())),
            Source::Host => panic!("debian environment expected"),
        };
        assert_eq!(on_amd64[&Arch::Amd64].method, "native");
        assert_eq!(on_amd64[&Arch::Arm64].method, "emulated");
        assert_eq!(
            emulator(&on_amd64[&Arch::Arm64]),
            Some((Arch::Amd64, Arch::Arm64, "usr/bin/qemu-aarch64-static".to_string()))
        );
        assert_eq!(on_arm64[&Arch::Arm64].method, "native");
        assert_eq!(on_arm64[&Arch::Amd64].method, "emulated");
        assert_eq!(
            emulator(&on_arm64[&Arch::Amd64]),
            Some((Arch::Arm64, Arch::Amd64, "usr/bin/qemu-x86_64-static".to_string()))
        );
        assert_eq!(emulator(&on_arm64[&Arch::Arm64]), None);
        for arch in both {
            assert_eq!(on_amd64[&arch].digest, on_arm64[&arch].digest, "{arch}");
        }
        // The emulator deb is part of the input digest of emulated builds only, so an
        // emulated amd64 build on arm64 never shares outputs with a native one.
        assert_ne!(
            on_amd64[&Arch::Amd64].input_digest(),
            on_arm64[&Arch::Amd64].input_digest()
        );
        // --cross is locked for one host arch (set.cross.lock holds the amd64 environment
        // with cross_packages): on an arm64 host it is a clear, located error.
        let cross = resolve_on(Arch::Amd64, &set, &[Arch::Arm64], true).unwrap();
        assert_eq!(cross[&Arch::Arm64].method, "cross");
        assert_eq!(cross[&Arch::Arm64].cross_triplet.as_deref(), Some("aarch64-linux-gnu"));
        let e = resolve_on(Arch::Arm64, &set, &[Arch::Amd64], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("set.cross.lock") && e.contains("arm64"), "{e}");
    }
}
