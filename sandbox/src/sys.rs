//! Raw Linux system calls that neither `std` nor `nix` wrap: the new mount API
//! (`open_tree`, `fsopen`/`fsconfig`/`fsmount`, `move_mount`, `mount_setattr`), `openat2`,
//! `pivot_root` and `capset`, plus the small helpers that turn their results into
//! `io::Result` and readable error texts.
//!
//! This module owns every `unsafe` FFI call of the crate except the fork/exec choreography in
//! `init.rs`. Each wrapper takes and returns owned or borrowed file descriptors so that the
//! callers never juggle raw integers.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `errno` text without Rust's " (os error N)" suffix, e.g. "No such file or directory".
pub fn err_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// A path as a C string; fails (EINVAL) on an interior NUL byte.
pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A syscall's `long` result as a new owned descriptor, or the current `errno`.
fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const EMPTY: &CStr = c"";

/// `open_tree(path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount tree at
/// `path` (a host path), which can later be attached anywhere with [`move_mount`]. Cloning
/// recursively is required in a user namespace: a non-recursive clone of a mount that has
/// locked sub-mounts is refused, since it would reveal what those sub-mounts cover.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH)`: a detached bind mount of the file
/// or directory `fd` refers to (which must be on a mount of our mount namespace).
pub fn open_tree_clone_fd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: EMPTY is a valid NUL-terminated string; `fd` is live for the call.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    })
}

/// A new, detached file system instance of type `fstype` with string options `opts` (an empty
/// value sets a flag option), mounted with the `MOUNT_ATTR_*` bits `attrs`.
pub fn new_fs(fstype: &CStr, opts: &[(&CStr, &CStr)], attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is NUL-terminated; the result is checked.
    let fsfd = fd_result(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    for (key, value) in opts {
        let (cmd, val) = if value.is_empty() {
            (libc::FSCONFIG_SET_FLAG, std::ptr::null())
        } else {
            (libc::FSCONFIG_SET_STRING, value.as_ptr())
        };
        // SAFETY: key/value are NUL-terminated strings (or NULL for a flag) that outlive the
        // call; `fsfd` is a live fs context.
        unit_result(unsafe { libc::syscall(libc::SYS_fsconfig, fsfd.as_raw_fd(), cmd, key.as_ptr(), val, 0) })?;
    }
    // SAFETY: as above; no pointers besides NULL.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: `fsfd` is a created fs context; attrs are plain bits.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
}

/// `mount_setattr` on the mount `fd` refers to (and, when `recursive`, every mount below it):
/// add the `MOUNT_ATTR_*` bits in `set`. Adding restrictions is always allowed, even on mounts
/// locked by a user namespace.
pub fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, set: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` lives across the call and its size is passed alongside.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// Attach the detached mount `from` on top of the directory or file `to` (an `O_PATH` fd).
pub fn move_mount(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both paths are the empty C string; the fds are borrowed for the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            EMPTY.as_ptr(),
            to.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// Attach the detached mount `from` on the host path `to` (used once, for the staging root).
pub fn move_mount_to_path(from: BorrowedFd<'_>, to: &Path) -> io::Result<()> {
    let c = cpath(to)?;
    // SAFETY: `c` outlives the call; the fd is borrowed.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: resolve `rel` as if
/// `root` were `/`, so that absolute symlinks and `..` inside the future sandbox tree can
/// never lead back onto the host file system while we are still building it.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cpath(rel)?;
    // SAFETY: open_how is plain old data (non-exhaustive in libc, hence no literal);
    // all-zero is valid and means "no mode, no resolve flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` and `how` outlive the call; the size of `how` is passed.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })
}

/// `pivot_root(".", ".")` from inside the new root: the old root ends up stacked on top of
/// the new one and is then detached by the caller, so no `put_old` directory is needed.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: static NUL-terminated strings.
    unit_result(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drop every capability for good: the bounding set (so that executing a file, even as uid 0
/// of the namespace, cannot grant any), the ambient set, then effective, permitted and
/// inheritable sets via `capset`. Needs `CAP_SETPCAP`, so call it before anything else drops
/// privileges.
pub fn drop_all_capabilities() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: plain integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and the two-element data array (version 3 layout) outlive the call.
    unit_result(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) })
}

/// Bring the interface `lo` up in the current network namespace (`SIOCSIFFLAGS`).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: creating a socket has no memory-safety preconditions.
    let sock =
        fd_result(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a properly sized ifreq that outlives both calls.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fd` itself, or a close-on-exec copy numbered 3 or more when it is 0, 1 or 2 (a caller
/// that runs with closed standard streams hands out those numbers first).
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a live descriptor; the result is checked.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// Start `program` with `posix_spawn`, which glibc and musl implement with `CLONE_VM |
/// CLONE_VFORK`: unlike `fork`, its cost does not grow with the caller's memory (a fork of a
/// process with 1 GiB resident costs tens of milliseconds here). The child gets `argv0` as its
/// only argument, exactly `env`, default signal dispositions, an empty signal mask, the three
/// `stdio` descriptors (None: inherit the caller's) and the descriptors in `keep` under their
/// own numbers; every other close-on-exec descriptor stays closed.
///
/// Relies on `posix_spawn_file_actions_adddup2(fd, fd)` clearing close-on-exec (POSIX 2024;
/// glibc >= 2.29, musl >= 1.1.24); that is what lets `keep` survive without a `pre_exec`
/// hook, which would force std's `fork` path.
pub fn spawn(
    program: &Path,
    argv0: &CStr,
    env: &[CString],
    stdio: [Option<BorrowedFd<'_>>; 3],
    keep: &[BorrowedFd<'_>],
) -> io::Result<libc::pid_t> {
    let program = cpath(program)?;
    // File actions run in order in the child: sources below 3 could be overwritten by an
    // earlier dup2 onto 0..2, so move them out of the way first (close-on-exec copies).
    let mut lifted: Vec<OwnedFd> = Vec::new();
    let mut source = |fd: BorrowedFd<'_>| -> io::Result<RawFd> {
        if fd.as_raw_fd() >= 3 {
            return Ok(fd.as_raw_fd());
        }
        let high = above_stdio(fd.try_clone_to_owned()?)?;
        let raw = high.as_raw_fd();
        lifted.push(high);
        Ok(raw)
    };
    let mut dups: Vec<(RawFd, RawFd)> = Vec::new();
    for (target, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            dups.push((source(*fd)?, target as RawFd));
        }
    }
    for fd in keep {
        // Kept under their own numbers: callers pass descriptors from [`above_stdio`].
        if fd.as_raw_fd() < 3 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        dups.push((fd.as_raw_fd(), fd.as_raw_fd()));
    }

    let argv = [argv0.as_ptr(), std::ptr::null()];
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    // SAFETY: the file actions and attributes are initialised before use and destroyed on
    // every path; all pointers (program, argv, envp) point to NUL-terminated strings or
    // NULL-terminated arrays that outlive the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let r = libc::posix_spawn_file_actions_init(&mut actions);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let r = libc::posix_spawnattr_init(&mut attr);
        if r != 0 {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(io::Error::from_raw_os_error(r));
        }
        let result = (|| {
            for (from, to) in &dups {
                let r = libc::posix_spawn_file_actions_adddup2(&mut actions, *from, *to);
                if r != 0 {
                    return Err(io::Error::from_raw_os_error(r));
                }
            }
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut none);
            let flags = libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            for r in [
                libc::posix_spawnattr_setsigdefault(&mut attr, &all),
                libc::posix_spawnattr_setsigmask(&mut attr, &none),
                libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short),
            ] {
                if r != 0 {
                    return Err(io::Error::from_raw_os_error(r));
                }
            }
            let mut pid: libc::pid_t = 0;
            let r = libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr() as *const *mut libc::c_char,
                envp.as_ptr() as *const *mut libc::c_char,
            );
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        drop(lifted);
        result
    }
}
