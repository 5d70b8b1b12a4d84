//! Running one plan node: unpacking its sources into a work directory, running its build
//! script and then its smoke test in the sandbox, capturing the log, and installing the
//! output tree with its manifest and metadata into the store.
//!
//! It does not decide what to build or in which order (see [`crate::executor`]).
//!
//! The complete environment of a build script (nothing else is inherited):
//! `PATH`, `HOME` (a path that does not exist), `SOURCE_DATE_EPOCH`, `TZ=UTC`,
//! `LC_ALL=C.UTF-8`, `HB_JOBS`, `HB_TARGET_ARCH`, `out=/out`, `TMPDIR=/tmp`, `USER`,
//! `LOGNAME`, `SHELL=/bin/sh`, `CC`, `CXX`, `AR`, `RANLIB`, `NM`, `STRIP`, `OBJDUMP` (with
//! the cross triplet's prefix and `QEMU_LD_PREFIX` for `--cross`), `CFLAGS` and
//! `CXXFLAGS` (`-O2 -ffile-prefix-map=/build=. -fdebug-prefix-map=/build=.`), `CPPFLAGS`
//! and `LDFLAGS` (include and lib directories of the dependencies), `PKG_CONFIG_PATH`.

use crate::archive::{self, UnpackOptions};
use crate::env::BuildEnvironment;
use crate::env_vars::{HB_JOBS, HB_TARGET_ARCH, SOURCE_DATE_EPOCH};
use crate::recipe::{Package, SourceKind};
use crate::store::{OutputMeta, Store, StoreError};
use crate::types::{Arch, PackageName, Sha256};
use crate::variation::Conditions;
use hb_sandbox::{Mount, Policy};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
    /// Canonical for normal builds; varied by `hb verify-repro`.
    pub conditions: Conditions,
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
        let result = self.run_in(store, work.path(), started, clock, None);
        if result.is_err() && self.keep_failed {
            let kept = work.keep();
            eprintln!("kept the failed build's work directory: {}", kept.display());
        }
        result.map(|b| (b, false))
    }

    /// Build from scratch, ignoring and not touching the store's outputs: the result (tree,
    /// manifest, meta, log) is moved to `dest`. For `hb verify-repro`.
    pub fn run_fresh(&self, store: &Store, dest: &Path) -> Result<Built, BuildError> {
        let work = store
            .temp_dir(&format!("repro-{}-{}-", self.package.name, self.arch))
            .map_err(|e| self.store_err(e))?;
        self.run_in(store, work.path(), SystemTime::now(), Instant::now(), Some(dest))
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
                        ..Default::default()
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
        let build_path = self.conditions.build_path.as_str();
        let mut mounts = self.base_mounts();
        mounts.push(bind(&build_dir, build_path, true));
        mounts.push(bind(&out_dir, "/out", true));
        let mut policy = self.policy(mounts, &[build_path, "/out", "/tmp"], &format!("{build_path}/src"));
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

    fn run_in(
        &self,
        store: &Store,
        work: &Path,
        started: SystemTime,
        clock: Instant,
        fresh_dest: Option<&Path>,
    ) -> Result<Built, BuildError> {
        let (build_dir, out_dir) = self.prepare_work(work)?;
        // Kept alive for the whole build: the reversed-order copy of the sources.
        let reordered = if self.conditions.dir_order_reversed {
            Some(reordered_copy(&build_dir).map_err(|e| self.store_err(e))?)
        } else {
            None
        };
        let build_dir = reordered.as_ref().map_or(build_dir, |t| t.path().join("build"));

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

        let build_path = self.conditions.build_path.as_str();
        let mut mounts = self.base_mounts();
        mounts.push(bind(&build_dir, build_path, true));
        mounts.push(bind(&out_dir, "/out", true));
        let policy = self.policy(mounts, &[build_path, "/out", "/tmp"], &format!("{build_path}/src"));
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
        let output_dir = match fresh_dest {
            None => store
                .install_output(&staging, self.input_hash)
                .map_err(|e| self.store_err(e))?,
            Some(dest) => {
                fs_err::rename(&staging, dest).map_err(|e| self.store_err(e))?;
                dest.to_owned()
            }
        };
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
        let (outcome, enforcement) = with_process_conditions(&self.conditions, || {
            hb_sandbox::run(policy, command, self.sandbox_helper)
        })
        .map_err(|source| BuildError::Sandbox {
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
        let c = &self.conditions;
        mounts.push(Mount::File {
            target: "/etc/passwd".into(),
            contents: format!(
                "root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{uid}:hb build user:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                user = c.user,
                uid = c.uid,
                home = c.home
            ),
            mode: 0o644,
        });
        mounts.push(Mount::File {
            target: "/etc/group".into(),
            contents: format!("root:x:0:\n{}:x:{}:\nnogroup:x:65534:\n", c.user, c.uid),
            mode: 0o644,
        });
        mounts.push(Mount::File {
            target: "/etc/hosts".into(),
            contents: format!("127.0.0.1 localhost {}\n::1 localhost\n", c.hostname),
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
            hostname: self.conditions.hostname.clone(),
            uid: self.conditions.uid,
            gid: self.conditions.uid,
            env: self.environment_variables(),
            cwd: cwd.into(),
            umask: self.conditions.umask,
            loopback: true,
            binfmt: self.environment.binfmt.clone(),
            env_order_reversed: self.conditions.env_order_reversed,
        }
    }

    /// The complete environment of the build script (see the module documentation).
    pub fn environment_variables(&self) -> BTreeMap<String, String> {
        let mut path: Vec<String> = self.deps.keys().map(|d| format!("/deps/{d}/bin")).collect();
        path.extend(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(String::from));
        let c = &self.conditions;
        let cflags = format!(
            "-O2 -ffile-prefix-map={path}=. -fdebug-prefix-map={path}=.",
            path = c.build_path
        );
        let cppflags: Vec<String> = self.deps.keys().map(|d| format!("-I/deps/{d}/include")).collect();
        let ldflags: Vec<String> = self.deps.keys().map(|d| format!("-L/deps/{d}/lib")).collect();
        let pkg_config: Vec<String> = self.deps.keys().map(|d| format!("/deps/{d}/lib/pkgconfig")).collect();
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("PATH", path.join(":"));
        set("HOME", c.home.clone());
        set("USER", c.user.clone());
        set("LOGNAME", c.user.clone());
        set("SHELL", "/bin/sh".into());
        set("TMPDIR", "/tmp".into());
        set("TZ", c.tz.clone());
        set("LC_ALL", c.lc_all.clone());
        if let Some(language) = &c.language {
            set("LANGUAGE", language.clone());
        }
        if let Some((name, value)) = &c.extra_env {
            set(name, value.clone());
        }
        if let (Some(offset), Some(lib)) = (&c.faketime, self.environment.faketime_library()) {
            set("LD_PRELOAD", lib);
            set("FAKETIME", offset.clone());
            // Let sub-processes see the same fake clock without re-reading the config.
            set("FAKETIME_DONT_RESET", "1".into());
        }
        set(SOURCE_DATE_EPOCH, self.source_date_epoch.to_string());
        set(HB_JOBS, c.jobs.to_string());
        set(HB_TARGET_ARCH, self.arch.to_string());
        set("out", "/out".into());
        // Cross builds use the triplet-prefixed tools of Debian's cross toolchain; their
        // test programs run under emulation and find the target's libraries through qemu.
        let prefix = self
            .environment
            .cross_triplet
            .as_ref()
            .map(|t| format!("{t}-"))
            .unwrap_or_default();
        for (var, tool) in [
            ("CC", "gcc"),
            ("CXX", "g++"),
            ("AR", "ar"),
            ("RANLIB", "ranlib"),
            ("NM", "nm"),
            ("STRIP", "strip"),
            ("OBJDUMP", "objdump"),
        ] {
            set(var, format!("{prefix}{tool}"));
        }
        if let Some(triplet) = &self.environment.cross_triplet {
            set("QEMU_LD_PREFIX", format!("/usr/{triplet}"));
        }
        set("CFLAGS", cflags.clone());
        set("CXXFLAGS", cflags);
        set("CPPFLAGS", cppflags.join(" "));
        set("LDFLAGS", ldflags.join(" "));
        set("PKG_CONFIG_PATH", pkg_config.join(":"));
        env
    }
}

/// A copy of `build_dir` on a tmpfs (the host's /dev/shm) whose directory entries are
/// created in reverse name order: tmpfs lists entries newest first, so `readdir` order
/// differs from the original. Used by the `dir-order` variation.
fn reordered_copy(build_dir: &Path) -> Result<tempfile::TempDir, std::io::Error> {
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    };
    let copy = tempfile::Builder::new().prefix("hb-dir-order-").tempdir_in(base)?;
    fn copy_reversed(from: &Path, to: &Path) -> Result<(), std::io::Error> {
        std::fs::create_dir(to)?;
        let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let src = entry.path();
            let dst = to.join(entry.file_name());
            let ft = entry.file_type()?;
            if ft.is_dir() {
                copy_reversed(&src, &dst)?;
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else {
                std::fs::copy(&src, &dst)?;
                let mtime = std::fs::metadata(&src)?.modified()?;
                std::fs::File::options().write(true).open(&dst)?.set_modified(mtime)?;
            }
        }
        Ok(())
    }
    copy_reversed(build_dir, &copy.path().join("build"))?;
    Ok(copy)
}

/// Run `f` (which starts the sandbox) with this thread's personality and CPU affinity set
/// as `conditions` say; the sandbox's processes inherit both. Restored afterwards.
fn with_process_conditions<T>(conditions: &Conditions, f: impl FnOnce() -> T) -> T {
    let mut persona: libc::c_ulong = 0;
    if conditions.no_aslr {
        persona |= libc::ADDR_NO_RANDOMIZE as libc::c_ulong;
    }
    if conditions.uname26 {
        persona |= 0x0020000; // UNAME26: uname() reports a 2.6 kernel
    }
    // SAFETY: personality(0xffffffff) only queries; setting affects this thread (task) only.
    let previous = unsafe { libc::personality(0xffff_ffff) };
    if persona != 0 {
        unsafe { libc::personality(persona) };
    }
    let mut saved_affinity: Option<libc::cpu_set_t> = None;
    if conditions.limit_cpus {
        // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity(0, ..) act on this thread.
        unsafe {
            let mut current: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut current) == 0 {
                let first = (0..libc::CPU_SETSIZE as usize).find(|&cpu| libc::CPU_ISSET(cpu, &current));
                if let Some(cpu) = first {
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut one);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
                    saved_affinity = Some(current);
                }
            }
        }
    }
    let result = f();
    if persona != 0 && previous >= 0 {
        // SAFETY: restores the value read above.
        unsafe { libc::personality(previous as libc::c_ulong) };
    }
    if let Some(set) = saved_affinity {
        // SAFETY: restores the mask read above.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    result
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
