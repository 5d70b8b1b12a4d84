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
//! - binfmt_misc: with `policy.binfmt` empty, nothing is mounted and `execve` falls back to
//!   the host's registrations, as before. Otherwise the sandbox gets its own binfmt_misc
//!   instance (Linux >= 6.7, else [`Error::Unsupported`] `binfmt_misc in a user namespace
//!   (Linux >= 6.7)`) holding exactly those entries, registered with flags `F` (the
//!   interpreter, a HOST path resolved like a bind source, is opened at setup and need not be
//!   visible inside) and `P` (argv\[0\] preserved). Host registrations do not apply inside and
//!   nothing is ever registered on the host. The instance is mounted read-only
//!   (`nosuid,nodev,noexec`) at `/proc/sys/fs/binfmt_misc` when the policy has a `Proc` mount
//!   at `/proc`; without one it is in force but invisible. Emulated programs are confined by
//!   Landlock like native ones; the interpreter needs no rule (the kernel reopens it with the
//!   setup's credentials). The command then runs in a user namespace nested in the sandbox's
//!   (whose root is mapped to the caller, as binfmt_misc requires); ids, capabilities and
//!   the ban on new user namespaces are the same as without. An entry that would match the
//!   host's own executables (which it would hijack) is an [`Error::Policy`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod binfmt;
mod init;
mod landlock;
mod mounts;
mod report;
mod sys;

pub use binfmt::UNSUPPORTED as BINFMT_UNSUPPORTED;
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
    /// becomes read-only (e.g. `/etc/passwd`). If something already exists at `target` (an
    /// empty placeholder inside a read-only bind, say), the file is bound read-only over it
    /// instead; nothing is written to the bind's source.
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
    /// Private binfmt_misc registrations (flags F and P: interpreter opened at registration,
    /// argv\[0\] preserved). Empty = no binfmt_misc instance at all.
    #[serde(default)]
    pub binfmt: Vec<Binfmt>,
    /// The command's environment is passed sorted by name; in reverse order when true
    /// (reproducibility checks vary it: nothing may depend on `environ`'s order).
    #[serde(default)]
    pub env_order_reversed: bool,
}

/// A binfmt_misc registration made in the sandbox's private binfmt_misc instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Binfmt {
    /// Entry name, e.g. `qemu-aarch64`: `[A-Za-z0-9_-]+`, at most 64 bytes, not `register`
    /// or `status`.
    pub name: String,
    /// Bytes to match at offset 0 of an executable (1 to 128 bytes), e.g. an ELF header.
    pub magic: Vec<u8>,
    /// Bits of `magic` that must match; same length as `magic`.
    pub mask: Vec<u8>,
    /// HOST path (absolute) of a static emulator, e.g. `store/.../qemu-aarch64-static`. It is
    /// opened at registration thanks to flag F, so it need not be visible inside the sandbox.
    pub interpreter: PathBuf,
}

/// Targets [`qemu_binfmt`] knows.
pub const QEMU_TARGETS: [&str; 2] = ["aarch64", "x86_64"];

/// The registration Debian's qemu-user-static uses for `target`'s ELF executables (static and
/// dynamic: the mask ignores the OS/ABI byte and the ET_EXEC/ET_DYN bit), named
/// `qemu-{target}`, with `interpreter` (a host path of a static `qemu-{target}`).
///
/// # Panics
/// When `target` is not one of [`QEMU_TARGETS`] (`"aarch64"` or `"x86_64"`).
pub fn qemu_binfmt(target: &str, interpreter: PathBuf) -> Binfmt {
    // e_machine, little-endian: EM_AARCH64 = 183, EM_X86_64 = 62.
    let machine: u8 = match target {
        "aarch64" => 0xb7,
        "x86_64" => 0x3e,
        other => panic!("qemu_binfmt: unknown target {other:?} (known: {QEMU_TARGETS:?})"),
    };
    // 64-bit, little-endian, ELF version 1, any OS/ABI; e_type 2 or 3; e_machine.
    let mut magic = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00".to_vec();
    magic[18] = machine;
    let mask = b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff".to_vec();
    Binfmt {
        name: format!("qemu-{target}"),
        magic,
        mask,
        interpreter,
    }
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
/// [`Error::Unsupported`] when the kernel lacks namespaces or Landlock ABI >= 4, or binfmt_misc
/// in a user namespace (Linux >= 6.7) while `policy.binfmt` is not empty;
/// [`Error::Setup`] when a setup step fails; [`Error::Policy`] for relative targets or
/// similar policy mistakes. A command that exits non-zero is NOT an error: see [`Outcome`].
pub fn run(policy: &Policy, command: Command, helper: &std::path::Path) -> Result<(Outcome, Enforcement), Error> {
    init::spawn(policy, command, helper)
}

/// Check, without building anything, that this kernel supports everything [`run`] needs.
pub fn probe() -> Result<Enforcement, Error> {
    init::probe()
}
