//! Landlock: detecting the kernel's ABI and restricting the command's process just before
//! `execve`.
//!
//! The ruleset handles every file system right of the ABI in use and TCP bind/connect, and,
//! from ABI 6 on, scopes abstract unix sockets and signals to the sandbox. It allows
//! read+execute below `/` of the sandbox, full access below each `policy.writable` path and
//! write access to the harmless devices of every `Dev` mount (`null`, `zero`, `full`, `tty`,
//! `pts/`, `shm/`). No TCP port is allowed. Everything is a hard requirement: a kernel that
//! cannot enforce all of it makes the setup fail instead of running less confined.

use crate::report::Fail;
use crate::{Mount, Policy};
use ::landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use std::path::Path;

/// The oldest ABI the sandbox accepts: 4 brought TCP bind/connect restrictions.
pub const MIN_ABI: i32 = 4;

/// First ABI with scoping of abstract unix sockets and signals.
const SCOPE_ABI: i32 = 6;

/// Devices (relative to a `Dev` mount's target) the command may write to.
const WRITABLE_DEVICES: [&str; 6] = ["null", "zero", "full", "tty", "pts", "shm"];

/// The ABI the sandbox will enforce: the kernel's, capped at the newest one the `landlock`
/// crate knows. Fails with [`Fail::Unsupported`] below [`MIN_ABI`].
pub fn effective_abi() -> Result<i32, Fail> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a NULL attribute and size 0 only queries
    // the ABI version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => "Landlock is built in but disabled at boot (add it to lsm=)",
            Some(libc::ENOSYS) => "this kernel is built without Landlock",
            _ => "the Landlock ABI query failed",
        };
        return Err(Fail::Unsupported(format!(
            "Landlock ABI >= {MIN_ABI} (TCP restrictions); {why}: {}",
            crate::sys::err_text(&e)
        )));
    }
    let v = v as i32;
    if v < MIN_ABI {
        return Err(Fail::Unsupported(format!(
            "Landlock ABI >= {MIN_ABI} (TCP restrictions); this kernel has ABI {v}"
        )));
    }
    Ok(ABI::from(v) as i32)
}

/// Restrict the calling process (single-threaded, about to `execve`) as described in the
/// module docs, enforcing `abi` (from [`effective_abi`]). Paths are those of the sandbox: call
/// it after `pivot_root`.
pub fn restrict(policy: &Policy, abi: i32) -> Result<(), Fail> {
    let abi_v = ABI::from(abi);
    let all = AccessFs::from_all(abi_v);
    let read = AccessFs::from_read(abi_v);
    let err = |step: &str, e: &dyn std::fmt::Display| Fail::Setup(format!("Landlock: {step}: {e}"));

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .map_err(|e| err("handle access rights", &e))?;
    if abi >= SCOPE_ABI {
        ruleset = ruleset
            .scope(Scope::from_all(abi_v))
            .map_err(|e| err("scope signals and abstract sockets", &e))?;
    }
    let mut created = ruleset.create().map_err(|e| err("create ruleset", &e))?;

    created = add_path(created, Path::new("/"), read, abi_v, true)?;
    for w in &policy.writable {
        created = add_path(created, w, all, abi_v, true)?;
    }
    for m in &policy.mounts {
        if let Mount::Dev { target } = m {
            for dev in WRITABLE_DEVICES {
                // pts may have been skipped (see mounts.rs); the others always exist.
                created = add_path(created, &target.join(dev), all, abi_v, false)?;
            }
        }
    }

    let status = created.restrict_self().map_err(|e| err("restrict self", &e))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(Fail::Unsupported(format!(
            "Landlock ABI {abi} fully enforced (got {:?})",
            status.ruleset
        )));
    }
    Ok(())
}

/// Allow `access` below `path`, trimmed to the rights that apply to a file when `path` is
/// not a directory. A missing path is an error when `required`, skipped otherwise.
fn add_path(
    created: ::landlock::RulesetCreated,
    path: &Path,
    access: ::landlock::BitFlags<AccessFs>,
    abi: ABI,
    required: bool,
) -> Result<::landlock::RulesetCreated, Fail> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(created),
        Err(e) => return Err(Fail::io(format_args!("Landlock: allowed path {}", path.display()), &e)),
    };
    let access = if meta.is_dir() {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    let fd = PathFd::new(path).map_err(|e| Fail::Setup(format!("Landlock: open {}: {e}", path.display())))?;
    created
        .add_rule(PathBeneath::new(fd, access))
        .map_err(|e| Fail::Setup(format!("Landlock: rule for {}: {e}", path.display())))
}
