//! Build environments: what the sandbox's root file system is made of.
//!
//! For now one kind exists: `host`, the machine's own /usr (read-only) with merged-/usr
//! symlinks and the few /etc files builds need. It is impure — results depend on this
//! machine — and says so in every record. Pinned environments (a rootfs assembled from
//! locked Debian packages) plug in here. This module does not run builds.

use crate::recipe::Environment;
use crate::store::EnvironmentRecord;
use crate::types::Arch;
use hb_sandbox::Mount;
use std::path::{Path, PathBuf};

/// A resolved build environment, ready to be mounted.
#[derive(Debug, Clone)]
pub struct BuildEnvironment {
    pub kind: String,
    /// Identifies the environment in input hashes (the lock digest for pinned ones).
    pub digest: String,
    pub impure: bool,
    /// "host", "native", "emulated" or "cross".
    pub method: String,
    /// Top-level entries of the root file system, as sandbox mounts.
    pub root_mounts: Vec<Mount>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("the host environment can only build for this machine's architecture ({host}), not {target}")]
    HostArch { host: String, target: Arch },
    #[error("{0} are not supported by this version of hb")]
    NotYetSupported(&'static str),
}

impl EnvError {
    pub fn hint(&self) -> Option<String> {
        match self {
            EnvError::HostArch { .. } => Some(
                "remove the architecture from set.targets or pass --arch with this machine's architecture; other architectures need a pinned environment".into(),
            ),
            EnvError::NotYetSupported(_) => Some("use kind = \"host\" for now".into()),
        }
    }
}

impl BuildEnvironment {
    pub fn resolve(environment: &Environment, arch: Arch) -> Result<BuildEnvironment, EnvError> {
        match environment {
            Environment::Host => {
                let host = Arch::host();
                if host != Some(arch) {
                    return Err(EnvError::HostArch {
                        host: host.map_or_else(|| std::env::consts::ARCH.to_string(), |a| a.to_string()),
                        target: arch,
                    });
                }
                Ok(BuildEnvironment {
                    kind: "host".into(),
                    digest: "host".into(),
                    impure: true,
                    method: "host".into(),
                    root_mounts: host_root_mounts(Path::new("/")),
                })
            }
            Environment::Debian(_) => Err(EnvError::NotYetSupported("kind = \"debian\" environments")),
        }
    }

    pub fn record(&self) -> EnvironmentRecord {
        EnvironmentRecord {
            kind: self.kind.clone(),
            digest: self.digest.clone(),
            impure: self.impure,
        }
    }
}

/// /usr read-only, the merged-/usr links as the host has them, and the /etc entries that
/// compilers and configure scripts look at (`alternatives` for `cc`/`awk`, the loader cache).
fn host_root_mounts(host_root: &Path) -> Vec<Mount> {
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
