//! Building the sandbox's root file system from `policy.mounts`, inside the new mount
//! namespace, by the namespace's pid 1.
//!
//! Three phases, in this order:
//! 1. [`capture`] (host still fully visible): a detached clone (`open_tree`) of every bind
//!    source and of the host device nodes a `Dev` mount needs. Capturing first means that
//!    nothing done later (the staging mount in particular, which covers the host's `/tmp`)
//!    can hide a source.
//! 2. [`build`]: a fresh tmpfs is attached at a staging point of the host tree and every mount
//!    is applied onto it in order. Targets are resolved with `openat2(RESOLVE_IN_ROOT)`
//!    relative to the new root, so a symlink in the tree (`/lib -> usr/lib`, or an absolute
//!    one inside a bound directory) resolves exactly as it will inside the sandbox and can
//!    never lead the setup onto the host. `Proc` must be mounted here, while the host's
//!    procfs is still visible: the kernel refuses a new procfs in a user namespace unless a
//!    fully visible one exists in the mount namespace.
//! 3. [`enter`]: `pivot_root` into the new root, detach the host tree, make the root tmpfs
//!    read-only.
//!
//! Every mount is `nosuid,nodev`, except the bind mounts of the host's device nodes in a
//! `Dev` mount, which could not work with `nodev`.

use crate::report::Fail;
use crate::sys;
use crate::{Mount, Policy};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

const NOSUID_NODEV: u64 = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;

/// Host device nodes a `Dev` mount binds, by name below `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks of a `Dev` mount: name -> destination.
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Candidate host directories for attaching the new root while it is built; the first one
/// that exists is covered (in our private mount namespace only).
const STAGING: [&str; 4] = ["/tmp", "/mnt", "/var/tmp", "/run"];

/// What phase 1 captured for one entry of `policy.mounts`.
pub enum Captured {
    Nothing,
    /// Detached clone of a bind source.
    Tree(OwnedFd),
    /// Detached clones of the host device nodes, by name.
    Devices(Vec<(&'static str, OwnedFd)>),
}

/// Phase 1: clone every bind source and host device node (see the module docs).
pub fn capture(policy: &Policy) -> Result<Vec<Captured>, Fail> {
    policy
        .mounts
        .iter()
        .map(|m| match m {
            Mount::Bind { source, target, .. } => sys::open_tree_clone(source).map(Captured::Tree).map_err(|e| {
                Fail::io(
                    format_args!("mount --bind {} on {}", source.display(), target.display()),
                    &e,
                )
            }),
            Mount::Dev { target } => DEVICES
                .iter()
                .map(|name| {
                    let host = Path::new("/dev").join(name);
                    sys::open_tree_clone(&host).map(|fd| (*name, fd)).map_err(|e| {
                        Fail::io(
                            format_args!("mount --bind {} on {}", host.display(), target.join(name).display()),
                            &e,
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Captured::Devices),
            _ => Ok(Captured::Nothing),
        })
        .collect()
}

/// Phase 2: attach a fresh tmpfs at a staging point and apply every mount onto it. Returns
/// a descriptor of the new root.
pub fn build(policy: &Policy, captured: Vec<Captured>) -> Result<OwnedFd, Fail> {
    let root = sys::new_fs(c"tmpfs", &[(c"mode", c"0755")], NOSUID_NODEV)
        .map_err(|e| Fail::io("mount tmpfs for the new root", &e))?;
    let staging = STAGING.iter().map(Path::new).find(|p| p.is_dir()).ok_or_else(|| {
        Fail::Setup(format!(
            "no directory to stage the new root on (tried {})",
            STAGING.join(", ")
        ))
    })?;
    sys::move_mount_to_path(root.as_fd(), staging)
        .map_err(|e| Fail::io(format_args!("attach the new root at {}", staging.display()), &e))?;

    for (m, cap) in policy.mounts.iter().zip(captured) {
        apply(root.as_fd(), m, cap)?;
    }
    Ok(root)
}

/// Phase 3: make `root` the root of the mount namespace, drop the host tree, and make the
/// root tmpfs read-only. The working directory ends up at `/`.
pub fn enter(root: OwnedFd) -> Result<(), Fail> {
    nix::unistd::fchdir(&root).map_err(|e| Fail::errno("chdir into the new root", e))?;
    sys::pivot_root_here().map_err(|e| Fail::io("pivot_root into the new root", &e))?;
    // The old root is now stacked on top of the new one at "/"; detach it with every host
    // mount below it.
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(|e| Fail::errno("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Fail::errno("chdir /", e))?;
    // Non-recursive: only the root tmpfs itself; the mounts on it keep their own flags.
    sys::mount_setattr(root.as_fd(), false, libc::MOUNT_ATTR_RDONLY)
        .map_err(|e| Fail::io("remount / read-only", &e))?;
    Ok(())
}

/// `target` relative to the new root ("/a/b" -> "a/b").
fn rel(target: &Path) -> &Path {
    target.strip_prefix("/").unwrap_or(target)
}

fn apply(root: BorrowedFd<'_>, m: &Mount, cap: Captured) -> Result<(), Fail> {
    match (m, cap) {
        (
            Mount::Bind {
                source,
                target,
                writable,
            },
            Captured::Tree(tree),
        ) => {
            let what = format!("mount --bind {} on {}", source.display(), target.display());
            let mut attrs = NOSUID_NODEV;
            if !writable {
                attrs |= libc::MOUNT_ATTR_RDONLY;
            }
            // Recursive: read-only must also cover mounts below the source.
            sys::mount_setattr(tree.as_fd(), true, attrs).map_err(|e| Fail::io(&what, &e))?;
            let is_dir = nix::sys::stat::fstat(&tree)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(|e| Fail::errno(&what, e))?;
            let point = if is_dir {
                ensure_dir(root, rel(target))
            } else {
                ensure_file(root, rel(target))
            }
            .map_err(|e| Fail::io(format_args!("{what}: create mount point"), &e))?;
            sys::move_mount(tree.as_fd(), point.as_fd()).map_err(|e| Fail::io(&what, &e))
        }
        (Mount::Tmpfs { target }, _) => mount_new(root, target, c"tmpfs", &[(c"mode", c"1777")], NOSUID_NODEV),
        (Mount::Proc { target }, _) => mount_new(root, target, c"proc", &[], NOSUID_NODEV | libc::MOUNT_ATTR_NOEXEC),
        (Mount::Dev { target }, Captured::Devices(devices)) => mount_dev(root, target, devices),
        (Mount::Symlink { link, points_to }, _) => {
            let what = format!("symlink {} -> {}", link.display(), points_to.display());
            let (parent, name) = ensure_parent(root, rel(link)).map_err(|e| Fail::io(&what, &e))?;
            nix::unistd::symlinkat(points_to.as_path(), parent.as_fd(), name.as_path())
                .map_err(|e| Fail::errno(&what, e))
        }
        (Mount::File { target, contents, mode }, _) => place_file(root, target, contents.as_bytes(), *mode)
            .map_err(|e| Fail::io(format_args!("create file {}", target.display()), &e)),
        (Mount::Dir { target }, _) => ensure_dir(root, rel(target))
            .map(drop)
            .map_err(|e| Fail::io(format_args!("create directory {}", target.display()), &e)),
        // capture() produced one entry per mount, of the matching kind.
        (Mount::Bind { .. } | Mount::Dev { .. }, _) => unreachable!("capture/apply mismatch"),
    }
}

/// Mount a new instance of `fstype` at `target` (a directory, created if missing).
fn mount_new(
    root: BorrowedFd<'_>,
    target: &Path,
    fstype: &CStr,
    opts: &[(&CStr, &CStr)],
    attrs: u64,
) -> Result<(), Fail> {
    let what = format!("mount -t {} on {}", fstype.to_string_lossy(), target.display());
    let fs = sys::new_fs(fstype, opts, attrs).map_err(|e| Fail::io(&what, &e))?;
    let point = ensure_dir(root, rel(target)).map_err(|e| Fail::io(format_args!("{what}: create mount point"), &e))?;
    sys::move_mount(fs.as_fd(), point.as_fd()).map_err(|e| Fail::io(&what, &e))
}

/// A minimal /dev: tmpfs, host device nodes bound on empty files, the usual symlinks, a
/// private devpts instance (skipped when the kernel refuses it) and a /dev/shm tmpfs.
fn mount_dev(root: BorrowedFd<'_>, target: &Path, devices: Vec<(&'static str, OwnedFd)>) -> Result<(), Fail> {
    mount_new(
        root,
        target,
        c"tmpfs",
        &[(c"mode", c"0755")],
        NOSUID_NODEV | libc::MOUNT_ATTR_NOEXEC,
    )?;
    for (name, tree) in devices {
        let dest = target.join(name);
        let what = format!("mount --bind /dev/{name} on {}", dest.display());
        // Not nodev (the whole point), but nosuid like everything else.
        sys::mount_setattr(tree.as_fd(), true, libc::MOUNT_ATTR_NOSUID).map_err(|e| Fail::io(&what, &e))?;
        let point =
            ensure_file(root, rel(&dest)).map_err(|e| Fail::io(format_args!("{what}: create mount point"), &e))?;
        sys::move_mount(tree.as_fd(), point.as_fd()).map_err(|e| Fail::io(&what, &e))?;
    }
    let dir = ensure_dir(root, rel(target)).map_err(|e| Fail::io(format_args!("open {}", target.display()), &e))?;
    for (name, dest) in DEV_LINKS {
        nix::unistd::symlinkat(dest, dir.as_fd(), name)
            .map_err(|e| Fail::errno(format_args!("symlink {} -> {dest}", target.join(name).display()), e))?;
    }
    // A private devpts instance, so that ptys opened inside never reach the host's. Some
    // kernels or container setups refuse it: a sandbox without ptys is still useful for
    // builds, so skip it then (the ptmx symlink dangles).
    let pts = sys::new_fs(
        c"devpts",
        &[(c"newinstance", c""), (c"ptmxmode", c"0666"), (c"mode", c"0620")],
        NOSUID_NODEV | libc::MOUNT_ATTR_NOEXEC,
    );
    if let Ok(pts) = pts {
        let point = ensure_dir(root, &rel(target).join("pts"))
            .map_err(|e| Fail::io(format_args!("create {}", target.join("pts").display()), &e))?;
        sys::move_mount(pts.as_fd(), point.as_fd())
            .map_err(|e| Fail::io(format_args!("mount -t devpts on {}", target.join("pts").display()), &e))?;
    }
    mount_new(root, &target.join("shm"), c"tmpfs", &[(c"mode", c"1777")], NOSUID_NODEV)
}

/// Where [`place_file`] writes a file before binding it over an existing target.
const STAGED_FILE: &str = ".hb-staged-file";

/// A `File` mount. Usually nothing is at `target` yet and the file is created there, on the
/// root tmpfs. When something already is (an empty placeholder inside a read-only bind, such
/// as `/etc/passwd` of a pinned rootfs whose `/etc` is bound whole), the file is written at
/// the top of the root tmpfs instead, bind-mounted read-only over the target, and its staging
/// name removed: the sandbox sees the contents only at `target`.
fn place_file(root: BorrowedFd<'_>, target: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let point = match sys::open_in_root(root, rel(target), libc::O_PATH) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return write_file(root, target, contents, mode),
        other => other?,
    };
    let staged = Path::new(STAGED_FILE);
    write_file(root, staged, contents, mode)?;
    let bound = sys::open_in_root(root, staged, libc::O_PATH | libc::O_NOFOLLOW)
        .and_then(|file| sys::open_tree_clone_fd(file.as_fd()))
        .and_then(|tree| {
            sys::mount_setattr(tree.as_fd(), false, NOSUID_NODEV | libc::MOUNT_ATTR_RDONLY)?;
            sys::move_mount(tree.as_fd(), point.as_fd())
        });
    // The bind mount keeps the file alive without its name.
    let removed = nix::unistd::unlinkat(root, staged, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io::Error::from);
    bound.and(removed)
}

fn write_file(root: BorrowedFd<'_>, target: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let (parent, name) = ensure_parent(root, rel(target))?;
    let fd = nix::fcntl::openat(
        parent.as_fd(),
        name.as_path(),
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_TRUNC
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)?;
    // After writing, so that even a mode without the owner's write bit works.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Open (creating it and its parents, mode 0755, if missing) the directory `rel` of the new
/// root, resolving symlinks inside the new root.
fn ensure_dir(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    const FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;
    match sys::open_in_root(root, rel, FLAGS) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let (parent, name) = ensure_parent(root, rel)?;
    match nix::sys::stat::mkdirat(
        parent.as_fd(),
        name.as_path(),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    sys::open_in_root(root, rel, FLAGS)
}

/// Open (creating it empty if missing) the mount point `rel` for a non-directory.
fn ensure_file(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    match sys::open_in_root(root, rel, libc::O_PATH) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let (parent, name) = ensure_parent(root, rel)?;
    match nix::fcntl::openat(
        parent.as_fd(),
        name.as_path(),
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    ) {
        Ok(_) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    sys::open_in_root(root, rel, libc::O_PATH)
}

/// The parent directory of `rel` (created if missing) and the last component's name.
fn ensure_parent(root: BorrowedFd<'_>, rel: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = ensure_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    Ok((parent, PathBuf::from(name)))
}
