//! Running one plan node: unpacking its sources into a work directory, running its build
//! script and then its smoke test in the sandbox, capturing the log, and installing the
//! output tree with its manifest and metadata into the store.
//!
//! It does not decide what to build or in which order (see [`crate::executor`]).
//!
//! The complete environment of a build script (nothing else is inherited):
//! `PATH`, `HOME` (a path that does not exist), `SOURCE_DATE_EPOCH`, `TZ=UTC`,
//! `LC_ALL=C.UTF-8`, `HB_JOBS`, `HB_TARGET_ARCH`, `out=/out`, `TMPDIR=/tmp`, `USER`,
//! `LOGNAME`, `SHELL=/bin/sh`, `CC`, `CXX`, `AR`, `RANLIB`, `NM`, `STRIP`, `CFLAGS` and
//! `CXXFLAGS` (`-O2 -ffile-prefix-map=/build=. -fdebug-prefix-map=/build=.`), `CPPFLAGS`
//! and `LDFLAGS` (include and lib directories of the dependencies), `PKG_CONFIG_PATH`.

use crate::archive::{self, UnpackOptions};
use crate::env::BuildEnvironment;
use crate::env_vars::{HB_JOBS, HB_TARGET_ARCH, SOURCE_DATE_EPOCH};
use crate::recipe::{Package, SourceKind};
use crate::store::{OutputMeta, Store, StoreError};
use crate::types::{Arch, PackageName, Sha256};
use hb_sandbox::{Mount, Policy};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// User the build runs as inside the sandbox.
pub const BUILD_USER: &str = "hb";
pub const BUILD_UID: u32 = 1000;
pub const BUILD_HOSTNAME: &str = "hb-build";
/// `HOME` inside builds: deliberately a path that does not exist (as Nix does).
pub const BUILD_HOME: &str = "/homeless-shelter";
/// Lines of the log shown when a build fails.
const LOG_TAIL_LINES: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{phase} of {package} ({arch}) failed: {outcome}\nlog: {}\n--- last lines of the log ---\n{tail}", .log.display())]
    Failed {
        package: String,
        arch: Arch,
        phase: &'static str,
        outcome: String,
        log: PathBuf,
        tail: String,
    },
    #[error("build of {package} ({arch}) installed nothing into $out\nlog: {}", .log.display())]
    EmptyOutput { package: String, arch: Arch, log: PathBuf },
    #[error("{package} ({arch}): the sandbox could not run")]
    Sandbox {
        package: String,
        arch: Arch,
        #[source]
        source: hb_sandbox::Error,
    },
    #[error("{package}: unpacking source {source_name} failed")]
    Unpack {
        package: String,
        source_name: String,
        #[source]
        source: archive::ArchiveError,
    },
    #[error("{package} ({arch}): store error")]
    Store {
        package: String,
        arch: Arch,
        #[source]
        source: StoreError,
    },
}

/// Everything one node's build needs, resolved by the caller.
pub struct NodeBuild<'a> {
    pub package: &'a Package,
    pub arch: Arch,
    pub input_hash: &'a Sha256,
    pub environment: &'a BuildEnvironment,
    /// Paths of the source files in the store (or local directories), in recipe order.
    pub sources: Vec<PathBuf>,
    /// Output trees of the direct and indirect dependencies, by package name.
    pub deps: BTreeMap<PackageName, PathBuf>,
    pub source_date_epoch: u64,
    pub hb_jobs: usize,
    pub keep_failed: bool,
    /// The executable that serves as the sandbox init (hb itself).
    pub sandbox_helper: &'a Path,
}

/// The result of building one node.
#[derive(Debug, Clone)]
pub struct Built {
    pub output_dir: PathBuf,
    pub meta: OutputMeta,
}

impl NodeBuild<'_> {
    fn store_err(&self, source: impl Into<StoreError>) -> BuildError {
        BuildError::Store {
            package: self.package.name.to_string(),
            arch: self.arch,
            source: source.into(),
        }
    }

    /// Build (or reuse) the output of this node. Holds the node's store lock while building,
    /// so two hb processes never build the same input hash at once.
    pub fn run(&self, store: &Store) -> Result<(Built, bool), BuildError> {
        if let Some(meta) = store.output_meta(self.input_hash) {
            return Ok((
                Built {
                    output_dir: store.output_dir(self.input_hash),
                    meta,
                },
                true,
            ));
        }
        let _lock = store
            .lock_object("output", self.input_hash.as_str())
            .map_err(|e| self.store_err(e))?;
        if let Some(meta) = store.output_meta(self.input_hash) {
            return Ok((
                Built {
                    output_dir: store.output_dir(self.input_hash),
                    meta,
                },
                true,
            ));
        }
        let started = SystemTime::now();
        let clock = Instant::now();
        let work = store
            .temp_dir(&format!("work-{}-{}-", self.package.name, self.arch))
            .map_err(|e| self.store_err(e))?;
        let result = self.run_in(store, work.path(), started, clock);
        if result.is_err() && self.keep_failed {
            let kept = work.keep();
            eprintln!("kept the failed build's work directory: {}", kept.display());
        }
        result.map(|b| (b, false))
    }

    /// Create `build/src` (with the sources unpacked) and `out` under `work`.
    fn prepare_work(&self, work: &Path) -> Result<(PathBuf, PathBuf), BuildError> {
        let build_dir = work.join("build");
        let src_dir = build_dir.join("src");
        let out_dir = work.join("out");
        for dir in [&src_dir, &out_dir] {
            fs_err::create_dir_all(dir).map_err(|e| self.store_err(e))?;
        }
        for (index, (source, path)) in self.package.sources.iter().zip(&self.sources).enumerate() {
            let dest = if source.dest.is_empty() {
                src_dir.clone()
            } else {
                src_dir.join(&source.dest)
            };
            // Each source is unpacked into a fresh directory, then moved into place, so a
            // later source can land in a directory an earlier one populated.
            let staging = work.join(format!("source-{index}"));
            let unpacked = match &source.kind {
                SourceKind::Remote { .. } => archive::unpack_file(
                    path,
                    &staging,
                    &UnpackOptions {
                        strip_single_top_dir: true,
                    },
                )
                .map(|_| ()),
                SourceKind::LocalDir { .. } => copy_tree(path, &staging),
            }
            .and_then(|()| merge_into(&staging, &dest));
            unpacked.map_err(|source_err| BuildError::Unpack {
                package: self.package.name.to_string(),
                source_name: source.display_name(),
                source: source_err,
            })?;
        }
        Ok((build_dir, out_dir))
    }

    /// Run `argv` (an interactive shell by default) in this node's build sandbox, with the
    /// caller's terminal. The work directory is removed afterwards.
    pub fn shell(&self, store: &Store, argv: Vec<String>) -> Result<hb_sandbox::Outcome, BuildError> {
        let work = store
            .temp_dir(&format!("shell-{}-{}-", self.package.name, self.arch))
            .map_err(|e| self.store_err(e))?;
        let (build_dir, out_dir) = self.prepare_work(work.path())?;
        let mut mounts = self.base_mounts();
        mounts.push(bind(&build_dir, "/build", true));
        mounts.push(bind(&out_dir, "/out", true));
        let mut policy = self.policy(mounts, &["/build", "/out", "/tmp"], "/build/src");
        policy
            .env
            .insert("PS1".into(), format!("[hb {} {}] \\w$ ", self.package.name, self.arch));
        let command = hb_sandbox::Command {
            argv,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        hb_sandbox::run(&policy, command, self.sandbox_helper)
            .map(|(outcome, _)| outcome)
            .map_err(|source| BuildError::Sandbox {
                package: self.package.name.to_string(),
                arch: self.arch,
                source,
            })
    }

    fn run_in(&self, store: &Store, work: &Path, started: SystemTime, clock: Instant) -> Result<Built, BuildError> {
        let (build_dir, out_dir) = self.prepare_work(work)?;

        let log_path = work.join("build.log");
        let mut log = fs_err::File::create(&log_path).map_err(|e| self.store_err(e))?;
        let _ = writeln!(
            log,
            "hb: building {} {} for {} (input {}) in the {} environment{}",
            self.package.name,
            self.package.version,
            self.arch,
            self.input_hash,
            self.environment.kind,
            if self.environment.impure {
                " (impure: results depend on this machine)"
            } else {
                ""
            }
        );

        let mut mounts = self.base_mounts();
        mounts.push(bind(&build_dir, "/build", true));
        mounts.push(bind(&out_dir, "/out", true));
        let policy = self.policy(mounts, &["/build", "/out", "/tmp"], "/build/src");
        let enforcement = self.run_phase(&policy, &self.package.build_script, &mut log, &log_path, store, "build")?;

        let has_output = fs_err::read_dir(&out_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !has_output {
            return Err(BuildError::EmptyOutput {
                package: self.package.name.to_string(),
                arch: self.arch,
                log: persist_log(store, &log_path, self),
            });
        }

        if let Some(test) = &self.package.test_script {
            let _ = writeln!(log, "hb: running the smoke test");
            let mut mounts = self.base_mounts();
            mounts.push(bind(&out_dir, "/out", false));
            let policy = self.policy(mounts, &["/tmp"], "/tmp");
            self.run_phase(&policy, test, &mut log, &log_path, store, "smoke test")?;
        }

        let staging = work.join("staging");
        fs_err::create_dir(&staging).map_err(|e| self.store_err(e))?;
        fs_err::rename(&out_dir, staging.join("tree")).map_err(|e| self.store_err(e))?;
        let manifest = archive::manifest(&staging.join("tree")).map_err(|e| self.store_err(e))?;
        let meta = OutputMeta {
            package: self.package.name.to_string(),
            version: self.package.version.clone(),
            arch: self.arch.to_string(),
            input_hash: self.input_hash.to_string(),
            content_digest: manifest.digest(),
            method: self.environment.method.clone(),
            environment: self.environment.record(),
            started_unix: started.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            duration_ms: clock.elapsed().as_millis() as u64,
            hb_version: env!("CARGO_PKG_VERSION").to_string(),
            landlock_abi: enforcement.landlock_abi,
        };
        let write_json = |name: &str, bytes: Vec<u8>| -> Result<(), BuildError> {
            fs_err::write(staging.join(name), bytes).map_err(|e| self.store_err(e))
        };
        write_json(
            "manifest.json",
            serde_json::to_vec_pretty(&manifest).expect("plain data"),
        )?;
        drop(log);
        fs_err::rename(&log_path, staging.join("build.log")).map_err(|e| self.store_err(e))?;
        // meta.json last: its presence is what marks an output complete.
        write_json("meta.json", serde_json::to_vec_pretty(&meta).expect("plain data"))?;
        let output_dir = store
            .install_output(&staging, self.input_hash)
            .map_err(|e| self.store_err(e))?;
        Ok(Built { output_dir, meta })
    }

    fn run_phase(
        &self,
        policy: &Policy,
        script: &str,
        log: &mut fs_err::File,
        log_path: &Path,
        store: &Store,
        phase: &'static str,
    ) -> Result<hb_sandbox::Enforcement, BuildError> {
        let stdout = log.file().try_clone().map_err(|e| self.store_err(e))?;
        let stderr = log.file().try_clone().map_err(|e| self.store_err(e))?;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| self.store_err(e))?;
        let command = hb_sandbox::Command {
            argv: vec!["/bin/sh".into(), "-eu".into(), "-c".into(), script.to_string()],
            stdin: Some(devnull),
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        let (outcome, enforcement) =
            hb_sandbox::run(policy, command, self.sandbox_helper).map_err(|source| BuildError::Sandbox {
                package: self.package.name.to_string(),
                arch: self.arch,
                source,
            })?;
        let _ = log.seek(SeekFrom::End(0));
        if !outcome.success() {
            let _ = log.flush();
            let tail = log_tail(log_path, LOG_TAIL_LINES);
            return Err(BuildError::Failed {
                package: self.package.name.to_string(),
                arch: self.arch,
                phase,
                outcome: outcome.to_string(),
                log: persist_log(store, log_path, self),
                tail,
            });
        }
        Ok(enforcement)
    }

    /// Root file system, /proc, /dev, /tmp, /etc files and the dependencies.
    fn base_mounts(&self) -> Vec<Mount> {
        let mut mounts = self.environment.root_mounts.clone();
        mounts.push(Mount::Proc { target: "/proc".into() });
        mounts.push(Mount::Dev { target: "/dev".into() });
        mounts.push(Mount::Tmpfs { target: "/tmp".into() });
        mounts.push(Mount::File {
            target: "/etc/passwd".into(),
            contents: format!(
                "root:x:0:0:root:/root:/bin/sh\n{BUILD_USER}:x:{BUILD_UID}:{BUILD_UID}:hb build user:{BUILD_HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            mode: 0o644,
        });
        mounts.push(Mount::File {
            target: "/etc/group".into(),
            contents: format!("root:x:0:\n{BUILD_USER}:x:{BUILD_UID}:\nnogroup:x:65534:\n"),
            mode: 0o644,
        });
        mounts.push(Mount::File {
            target: "/etc/hosts".into(),
            contents: format!("127.0.0.1 localhost {BUILD_HOSTNAME}\n::1 localhost\n"),
            mode: 0o644,
        });
        for (name, path) in &self.deps {
            mounts.push(bind(path, &format!("/deps/{name}"), false));
        }
        mounts
    }

    fn policy(&self, mounts: Vec<Mount>, writable: &[&str], cwd: &str) -> Policy {
        Policy {
            mounts,
            writable: writable.iter().map(PathBuf::from).collect(),
            hostname: BUILD_HOSTNAME.into(),
            uid: BUILD_UID,
            gid: BUILD_UID,
            env: self.environment_variables(),
            cwd: cwd.into(),
            umask: 0o022,
            loopback: true,
        }
    }

    /// The complete environment of the build script (see the module documentation).
    pub fn environment_variables(&self) -> BTreeMap<String, String> {
        let mut path: Vec<String> = self.deps.keys().map(|d| format!("/deps/{d}/bin")).collect();
        path.extend(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(String::from));
        let cflags = "-O2 -ffile-prefix-map=/build=. -fdebug-prefix-map=/build=.";
        let cppflags: Vec<String> = self.deps.keys().map(|d| format!("-I/deps/{d}/include")).collect();
        let ldflags: Vec<String> = self.deps.keys().map(|d| format!("-L/deps/{d}/lib")).collect();
        let pkg_config: Vec<String> = self.deps.keys().map(|d| format!("/deps/{d}/lib/pkgconfig")).collect();
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("PATH", path.join(":"));
        set("HOME", BUILD_HOME.into());
        set("USER", BUILD_USER.into());
        set("LOGNAME", BUILD_USER.into());
        set("SHELL", "/bin/sh".into());
        set("TMPDIR", "/tmp".into());
        set("TZ", "UTC".into());
        set("LC_ALL", "C.UTF-8".into());
        set(SOURCE_DATE_EPOCH, self.source_date_epoch.to_string());
        set(HB_JOBS, self.hb_jobs.to_string());
        set(HB_TARGET_ARCH, self.arch.to_string());
        set("out", "/out".into());
        for (var, tool) in [
            ("CC", "gcc"),
            ("CXX", "g++"),
            ("AR", "ar"),
            ("RANLIB", "ranlib"),
            ("NM", "nm"),
            ("STRIP", "strip"),
        ] {
            set(var, tool.into());
        }
        set("CFLAGS", cflags.into());
        set("CXXFLAGS", cflags.into());
        set("CPPFLAGS", cppflags.join(" "));
        set("LDFLAGS", ldflags.join(" "));
        set("PKG_CONFIG_PATH", pkg_config.join(":"));
        env
    }
}

fn bind(source: &Path, target: &str, writable: bool) -> Mount {
    Mount::Bind {
        source: source.to_owned(),
        target: PathBuf::from(target),
        writable,
    }
}

/// Copy a failed build's log to `logs/` so it outlives the work directory.
fn persist_log(store: &Store, log_path: &Path, node: &NodeBuild<'_>) -> PathBuf {
    let dest = store.logs_dir().join(format!(
        "{}-{}-{}-{}.log",
        node.package.name,
        node.arch,
        node.input_hash.short(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    match std::fs::copy(log_path, &dest) {
        Ok(_) => dest,
        Err(_) => log_path.to_owned(),
    }
}

/// The last `lines` lines of a log file (lossily decoded).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Move the entries of `from` into `to` (created if needed); an entry that exists in both
/// is an error unless both are directories, which are merged.
fn merge_into(from: &Path, to: &Path) -> Result<(), archive::ArchiveError> {
    let io = |path: &Path, source: std::io::Error| archive::ArchiveError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let dest = to.join(entry.file_name());
        match std::fs::symlink_metadata(&dest) {
            Err(_) => std::fs::rename(entry.path(), &dest).map_err(|e| io(&dest, e))?,
            Ok(existing) if existing.is_dir() && entry.file_type().map_err(|e| io(&dest, e))?.is_dir() => {
                merge_into(&entry.path(), &dest)?
            }
            Ok(_) => {
                return Err(io(
                    &dest,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "an earlier source already provides this path",
                    ),
                ))
            }
        }
    }
    std::fs::remove_dir(from).map_err(|e| io(from, e))
}

/// Copy a local source directory (fixtures) into the work directory.
fn copy_tree(from: &Path, to: &Path) -> Result<(), archive::ArchiveError> {
    std::fs::create_dir_all(to).map_err(|source| archive::ArchiveError::Io {
        path: to.to_owned(),
        source,
    })?;
    let io = |path: &Path, source: std::io::Error| archive::ArchiveError::Io {
        path: path.to_owned(),
        source,
    };
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.map_err(|e| io(from, e.into()))?;
        let rel = entry.path().strip_prefix(from).expect("walkdir stays below its root");
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| io(&dest, e))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(|e| io(entry.path(), e))?;
            std::os::unix::fs::symlink(target, &dest).map_err(|e| io(&dest, e))?;
        } else {
            std::fs::copy(entry.path(), &dest).map_err(|e| io(&dest, e))?;
        }
    }
    Ok(())
}
