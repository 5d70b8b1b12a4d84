//! hb-sandbox: run one command inside Linux namespaces with Landlock on top.
//!
//! This crate owns isolation and process lifetime only: it takes a serializable [`Policy`]
//! and a command, and knows nothing about recipes, stores or hashes. The single entry point
//! is [`run`]; the executable that calls it must call [`init_if_requested`] first thing in
//! `main`, because the sandbox re-executes that executable as its init process.
//!
//! CONTRACT (the rest of hb relies on it; change it only together with its callers):
//! - The new root is a fresh tmpfs; `policy.mounts` are applied in order onto it, then the
//!   root is remounted read-only. Every mount is `nosuid,nodev`.
//! - Namespaces: user, mount, pid, net (only `lo`, up), uts (`policy.hostname`), ipc,
//!   cgroup. Inside, the command runs as `policy.uid`/`policy.gid` mapped to the caller's
//!   effective uid/gid, with no capabilities and `no_new_privs`.
//! - Landlock is required (ABI >= 4: filesystem + TCP bind/connect). Writes are allowed only
//!   below `policy.writable` paths (plus `/dev/null`-style devices); reads/exec anywhere in the
//!   new root; TCP bind and connect denied. A kernel without it makes [`run`] fail with
//!   [`Error::Unsupported`] naming the missing feature; never a silent downgrade.
//! - When the command exits, every other process of the sandbox is killed (pid namespace
//!   init dies). When the caller dies, the sandbox is killed too (`PR_SET_PDEATHSIG`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod init;
mod landlock;
mod mounts;
mod report;
mod sys;

pub use init::init_if_requested;

/// One step of building the sandbox's root file system. Targets are absolute paths inside
/// the sandbox; missing parent directories are created on the tmpfs root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mount {
    /// Bind `source` (a host path, file or directory) at `target`; read-only unless `writable`.
    Bind {
        source: PathBuf,
        target: PathBuf,
        writable: bool,
    },
    /// A fresh tmpfs at `target` (writable by the sandbox user, mode 1777 for /tmp-like use).
    Tmpfs { target: PathBuf },
    /// A fresh procfs of the sandbox's pid namespace at `target` (normally `/proc`).
    Proc { target: PathBuf },
    /// A minimal /dev at `target`: null, zero, full, random, urandom, tty bound from the host,
    /// `fd`, `stdin`, `stdout`, `stderr` symlinks, `pts` and `shm`.
    Dev { target: PathBuf },
    /// A symbolic link `link` -> `points_to` (e.g. `/bin` -> `usr/bin`).
    Symlink { link: PathBuf, points_to: PathBuf },
    /// A regular file with the given contents and mode, created on the tmpfs root before it
    /// becomes read-only (e.g. `/etc/passwd`).
    File {
        target: PathBuf,
        contents: String,
        mode: u32,
    },
    /// An empty directory (e.g. a mount point for later use).
    Dir { target: PathBuf },
}

/// Everything the sandbox needs to know. MUST be fully explicit: nothing of the caller's
/// environment leaks in except what is listed here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// Applied in order onto a fresh tmpfs root.
    pub mounts: Vec<Mount>,
    /// Paths inside the sandbox where the command may write (Landlock). Typically
    /// `/build`, `/out`, `/tmp`.
    pub writable: Vec<PathBuf>,
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// User and group id of the command inside the user namespace.
    pub uid: u32,
    pub gid: u32,
    /// The complete environment of the command (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// File-mode creation mask of the command.
    pub umask: u32,
    /// Allow the loopback interface only; there is never any other interface. When false,
    /// `lo` stays down as well.
    pub loopback: bool,
}

/// What to run and where its output goes.
#[derive(Debug)]
pub struct Command {
    /// Program path inside the sandbox, then its arguments. A program name without `/` is
    /// looked up in the `PATH` of `policy.env` (never the caller's), like `execvp`.
    pub argv: Vec<String>,
    /// Standard streams of the command. `None` inherits the caller's.
    pub stdin: Option<std::fs::File>,
    pub stdout: Option<std::fs::File>,
    pub stderr: Option<std::fs::File>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl Outcome {
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Exited(0))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exit code {code}"),
            Outcome::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// Landlock enforcement that was applied, for records and `-v` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub landlock_abi: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel lacks a feature the sandbox requires; the message names it.
    #[error("sandbox not supported on this kernel: {feature}")]
    Unsupported { feature: String },
    /// Setting the sandbox up failed (a mount, a namespace, a map); the message says which step.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("could not start the sandbox helper {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox policy: {0}")]
    Policy(String),
}

/// Run `command` inside a sandbox built from `policy`, wait for it, return how it ended.
///
/// The sandbox init is a re-execution of `helper` (normally `std::env::current_exe()`), whose
/// `main` must call [`init_if_requested`] before anything else.
///
/// # Errors
/// [`Error::Unsupported`] when the kernel lacks namespaces or Landlock ABI >= 4;
/// [`Error::Setup`] when a setup step fails; [`Error::Policy`] for relative targets or
/// similar policy mistakes. A command that exits non-zero is NOT an error: see [`Outcome`].
pub fn run(policy: &Policy, command: Command, helper: &std::path::Path) -> Result<(Outcome, Enforcement), Error> {
    init::spawn(policy, command, helper)
}

/// Check, without building anything, that this kernel supports everything [`run`] needs.
pub fn probe() -> Result<Enforcement, Error> {
    init::probe()
}
