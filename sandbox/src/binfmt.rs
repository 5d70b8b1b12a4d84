//! The sandbox's private binfmt_misc instance (Linux >= 6.7 lets a user namespace mount its
//! own): `policy.binfmt` entries, registered by pid 1 and in force for every `execve` in the
//! sandbox's user namespace, never on the host.
//!
//! How it works, and why in this order:
//! - [`register`] runs in pid 1 during phase 1 of the root's construction (mounts.rs), while
//!   the host tree is still fully visible: a new binfmt_misc instance is created with
//!   `fsopen`/`fsmount` (detached, `nosuid,nodev,noexec`), each entry is written to its
//!   `register` file with flags `F` and `P`, then the mount is made read-only. With `F` the
//!   kernel opens the interpreter at once, resolving its HOST path with pid 1's credentials,
//!   and keeps that open file: later `execve`s use it even though the path does not exist
//!   inside the sandbox. `P` passes the program's original argv\[0\] to the interpreter (qemu
//!   detects it through `AT_FLAGS_PRESERVE_ARGV0`).
//! - An instance lives as long as its superblock, i.e. as long as some mount of it exists.
//!   [`attach`] (phase 2) moves it onto `/proc/sys/fs/binfmt_misc` of the new root when the
//!   policy has a `Proc` mount at `/proc`, so it survives `pivot_root` as part of the new
//!   tree and tools inside can inspect it. Either way pid 1 also keeps the mount's descriptor
//!   open until it exits, which alone keeps the instance in force.
//! - `execve` looks for an instance in the caller's user namespace, then its ancestors: with
//!   one of our own, the host's registrations never apply inside. Nothing here writes to the
//!   host's instance: the only `register` file we ever open belongs to the instance we created.
//! - The instance's files belong to the root of the user namespace that mounted it, and no
//!   capability overrides permissions on a file whose owner is unmapped: registering needs
//!   uid 0 of the sandbox's user namespace mapped (to the caller), which is why the command
//!   then runs in a nested user namespace where it is `policy.uid` (init.rs).
//! - Landlock: the command needs `EXECUTE` on the emulated program (checked by `execve`) and
//!   `READ_FILE` (the emulator opens it by path: no `O` flag), both granted below `/`; none on
//!   the interpreter, which the kernel reopens from the registration's open file with that
//!   file's credentials (pid 1's, outside any Landlock domain). The read-only mount and
//!   Landlock's write restriction both keep the command from changing the registrations.

use crate::report::Fail;
use crate::sys;
use crate::{Binfmt, Error, Mount, Policy};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a kernel without binfmt_misc in user namespaces lacks ([`crate::Error::Unsupported`]).
pub const UNSUPPORTED: &str = "binfmt_misc in a user namespace (Linux >= 6.7)";

/// Where the instance is attached inside the sandbox (when `/proc` is a `Proc` mount).
const MOUNT_POINT: &str = "proc/sys/fs/binfmt_misc";

/// The kernel's limits: magic and mask at most 128 bytes (and offset + size within the
/// 256-byte header buffer), a register line at most 1920 bytes.
const MAX_MAGIC: usize = 128;
const MAX_LINE: usize = 1920;
const MAX_NAME: usize = 64;

/// Field separators to choose from: the first byte of a register line is its separator and
/// must not occur in any field. Names are `[A-Za-z0-9_-]` and magic and mask are fully
/// `\xHH`-escaped, so only the interpreter's path can clash.
const SEPARATORS: &[u8] = b":|#!,;@%^+=~";

/// Flags of every registration: F (open the interpreter now), P (preserve argv\[0\]).
const FLAGS: &str = "FP";

/// The line to write to `register` for `e`: `:name:M::magic:mask:interpreter:FP`.
pub fn register_line(e: &Binfmt) -> Result<Vec<u8>, String> {
    if e.name.is_empty()
        || e.name.len() > MAX_NAME
        || !e
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "binfmt name {:?} must be 1 to {MAX_NAME} characters of [A-Za-z0-9_-]",
            e.name
        ));
    }
    if e.name == "register" || e.name == "status" {
        return Err(format!("binfmt name {:?} is reserved by binfmt_misc", e.name));
    }
    if e.magic.is_empty() || e.magic.len() > MAX_MAGIC {
        return Err(format!(
            "binfmt {}: magic has {} bytes (1 to {MAX_MAGIC} allowed)",
            e.name,
            e.magic.len()
        ));
    }
    if e.mask.len() != e.magic.len() {
        return Err(format!(
            "binfmt {}: mask has {} bytes, magic {}",
            e.name,
            e.mask.len(),
            e.magic.len()
        ));
    }
    let interp = e.interpreter.as_os_str().as_bytes();
    if !e.interpreter.is_absolute() || interp.contains(&0) {
        return Err(format!(
            "binfmt {}: interpreter {} must be an absolute host path without NUL bytes",
            e.name,
            e.interpreter.display()
        ));
    }
    let Some(&sep) = SEPARATORS.iter().find(|s| !interp.contains(s)) else {
        return Err(format!(
            "binfmt {}: interpreter path {} contains every usable separator ({})",
            e.name,
            e.interpreter.display(),
            String::from_utf8_lossy(SEPARATORS)
        ));
    };
    let escape = |bytes: &[u8]| bytes.iter().map(|b| format!("\\x{b:02x}")).collect::<String>();
    let mut line = Vec::with_capacity(64 + 8 * e.magic.len() + interp.len());
    let (magic, mask) = (escape(&e.magic), escape(&e.mask));
    // An empty offset field means 0.
    for field in [
        e.name.as_bytes(),
        b"M",
        b"",
        magic.as_bytes(),
        mask.as_bytes(),
        interp,
        FLAGS.as_bytes(),
    ] {
        line.push(sep);
        line.extend_from_slice(field);
    }
    if line.len() > MAX_LINE {
        return Err(format!(
            "binfmt {}: the registration is {} bytes long, the kernel takes at most {MAX_LINE} \
             (shorten the interpreter's path)",
            e.name,
            line.len()
        ));
    }
    Ok(line)
}

/// Whether `e` matches `header` (the first bytes of an executable), as the kernel decides.
pub fn matches(e: &Binfmt, header: &[u8]) -> bool {
    header.len() >= e.magic.len()
        && e.magic
            .iter()
            .zip(&e.mask)
            .zip(header)
            .all(|((m, k), h)| (m ^ h) & k == 0)
}

/// Caller-side checks of `policy.binfmt`: valid entries, distinct names, and none that would
/// capture the host's own executables (binfmt_misc is consulted before the native ELF loader,
/// so such an entry would send every native program through the emulator). `native` is a
/// native executable (the sandbox helper).
pub fn validate(entries: &[Binfmt], native: &Path) -> Result<(), Error> {
    let mut names = std::collections::BTreeSet::new();
    for e in entries {
        register_line(e).map_err(Error::Policy)?;
        if !names.insert(e.name.as_str()) {
            return Err(Error::Policy(format!("binfmt name {:?} appears twice", e.name)));
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    let mut header = [0u8; 64];
    let n = std::fs::File::open(native)
        .and_then(|mut f| {
            use std::io::Read;
            f.read(&mut header)
        })
        .map_err(|e| {
            Error::Setup(format!(
                "read the helper {} to check the binfmt entries: {}",
                native.display(),
                sys::err_text(&e)
            ))
        })?;
    let header = &mut header[..n];
    for e in entries {
        // Executables and position-independent ones (ET_EXEC = 2, ET_DYN = 3 at offset 16).
        for e_type in [2u8, 3] {
            if header.len() > 17 {
                header[16] = e_type;
                header[17] = 0;
            }
            if matches(e, header) {
                return Err(Error::Policy(format!(
                    "binfmt {}: its magic matches this host's own executables (like {}); \
                     registering it would run every native program through {}",
                    e.name,
                    native.display(),
                    e.interpreter.display()
                )));
            }
        }
    }
    Ok(())
}

/// Phase 1 (host tree visible, pid 1 with its capabilities): create the instance and register
/// every entry. Returns its (detached, read-only) mount, or `None` when there are no entries.
pub fn register(entries: &[Binfmt]) -> Result<Option<OwnedFd>, Fail> {
    if entries.is_empty() {
        return Ok(None);
    }
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let instance = sys::new_fs(c"binfmt_misc", &[], attrs).map_err(|e| match e.raw_os_error() {
        // EPERM: binfmt_misc cannot be mounted in a user namespace before 6.7. ENODEV: no
        // binfmt_misc in this kernel at all.
        Some(libc::EPERM | libc::ENODEV) => Fail::Unsupported(UNSUPPORTED.into()),
        _ => Fail::io("mount -t binfmt_misc", &e),
    })?;
    let register = nix::fcntl::openat(
        instance.as_fd(),
        "register",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Fail::errno("binfmt_misc: open register", e))?;
    for e in entries {
        let line = register_line(e).map_err(Fail::Setup)?;
        write_once(register.as_fd(), &line).map_err(|err| {
            let why = match err.raw_os_error() {
                Some(libc::ENOENT) => "the interpreter does not exist".to_string(),
                Some(libc::EACCES) => "the interpreter is not an executable file on an exec-enabled mount".to_string(),
                Some(libc::ENOEXEC) => "the interpreter is not an executable file".to_string(),
                Some(libc::EEXIST) => "an entry of that name exists".to_string(),
                _ => sys::err_text(&err),
            };
            Fail::Setup(format!(
                "binfmt_misc: register {} (interpreter {}): {why}",
                e.name,
                e.interpreter.display()
            ))
        })?;
    }
    drop(register);
    sys::mount_setattr(instance.as_fd(), false, libc::MOUNT_ATTR_RDONLY)
        .map_err(|e| Fail::io("binfmt_misc: make the instance read-only", &e))?;
    Ok(Some(instance))
}

/// One `write` of the whole line: binfmt_misc parses each write as one registration.
fn write_once(fd: BorrowedFd<'_>, line: &[u8]) -> io::Result<()> {
    // SAFETY: `line` is a live buffer of the given length; the descriptor is borrowed.
    let n = unsafe { libc::write(fd.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != line.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}

/// Phase 2: attach the instance at `/proc/sys/fs/binfmt_misc` of the new root when the policy
/// mounts a procfs at `/proc` (and that directory exists in it). Otherwise it stays detached,
/// held by pid 1's descriptor.
pub fn attach(root: BorrowedFd<'_>, instance: BorrowedFd<'_>, policy: &Policy) -> Result<(), Fail> {
    let has_proc = policy
        .mounts
        .iter()
        .any(|m| matches!(m, Mount::Proc { target } if target == Path::new("/proc")));
    if !has_proc {
        return Ok(());
    }
    let what = format!("mount -t binfmt_misc on /{MOUNT_POINT}");
    match sys::open_in_root(root, Path::new(MOUNT_POINT), libc::O_PATH | libc::O_DIRECTORY) {
        Ok(point) => sys::move_mount(instance, point.as_fd()).map_err(|e| Fail::io(&what, &e)),
        // A procfs without the directory (or a later mount covering /proc/sys): the instance is
        // in force all the same, just not visible.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(()),
        Err(e) => Err(Fail::io(&what, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu_binfmt;

    #[test]
    fn qemu_lines_are_debians() {
        let e = qemu_binfmt("aarch64", "/store/q/bin/qemu-aarch64-static".into());
        let line = String::from_utf8(register_line(&e).unwrap()).unwrap();
        assert_eq!(
            line,
            ":qemu-aarch64:M::\
             \\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\
             \\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:\
             /store/q/bin/qemu-aarch64-static:FP"
        );
        let x = qemu_binfmt("x86_64", "/q".into());
        assert_eq!(x.name, "qemu-x86_64");
        assert_eq!(x.magic[18], 0x3e);
        assert_eq!(x.mask, e.mask);
    }

    #[test]
    fn the_separator_avoids_the_interpreters_path() {
        let e = qemu_binfmt("aarch64", "/odd:path|x/qemu".into());
        let line = register_line(&e).unwrap();
        assert_eq!(line[0], b'#');
        assert!(line.ends_with(b"#/odd:path|x/qemu#FP"));
    }

    #[test]
    fn bad_entries_are_rejected() {
        let ok = qemu_binfmt("aarch64", "/q".into());
        let bad = |f: &dyn Fn(&mut Binfmt)| {
            let mut e = ok.clone();
            f(&mut e);
            register_line(&e).unwrap_err()
        };
        bad(&|e| e.name = "a/b".into());
        bad(&|e| e.name = String::new());
        bad(&|e| e.name = "status".into());
        bad(&|e| e.name = "x".repeat(65));
        bad(&|e| e.magic.clear());
        bad(&|e| e.mask.pop().map(drop).unwrap_or(()));
        bad(&|e| e.magic = vec![1; 129]);
        bad(&|e| e.interpreter = "relative/qemu".into());
        bad(&|e| e.interpreter = format!("/{}", "d".repeat(1800)).into());
    }

    #[test]
    fn matching_follows_the_mask() {
        let e = qemu_binfmt("aarch64", "/q".into());
        let mut header = e.magic.clone();
        assert!(matches(&e, &header));
        header[7] = 3; // OS/ABI: ignored
        header[16] = 3; // ET_DYN: matched too
        assert!(matches(&e, &header));
        header[18] = 0x3e;
        assert!(!matches(&e, &header));
        assert!(!matches(&e, &header[..4]));
    }
}
