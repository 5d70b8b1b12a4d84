//! The process choreography of a sandbox run: the caller's side ([`spawn`]), the helper's
//! side ([`init_if_requested`]) and the kernel feature [`probe`].
//!
//! ```text
//! caller (hb)            spawn(): validate, Landlock ABI check, Request -> memfd,
//!   |                    report pipe, posix_spawn(helper), wait, read report
//!   `- outer init        helper re-executed with HB_SANDBOX_INIT: PDEATHSIG, unshare(user,
//!      |                 mnt, pid, net, uts, ipc, cgroup), uid/gid maps, forbid nested user
//!      |                 namespaces, fork; forwards SIGINT/TERM/HUP/QUIT; exits like pid 1
//!      `- pid 1          PDEATHSIG, builds the root (mounts.rs; binfmt.rs registers
//!         |              policy.binfmt and creates the command's nested user namespace),
//!         |              hostname, lo, pivot_root, fork; reaps everything; reports the
//!         |              command's outcome; exits, which makes the kernel kill whatever is
//!         |              left in the namespace
//!         `- command     [setns into the nested user namespace,] setsid, umask, chdir,
//!                        signals reset, no_new_privs, capabilities dropped, Landlock
//!                        (landlock.rs), execve with exactly policy.env
//! ```
//!
//! User namespaces: without binfmt entries, the sandbox's maps `policy.uid`/`gid` to the
//! caller's euid/egid and everything runs in it. With binfmt entries it maps 0 instead (the
//! instance's files belong to its root, see binfmt.rs) and the command runs in a child
//! namespace mapping `policy.uid`/`gid` to that 0 ([`nested_userns`]).
//!
//! Setup failures of any of the three inner processes travel back through the report pipe
//! (report.rs) and become [`Error::Setup`] / [`Error::Unsupported`] in the caller.

use crate::report::{self, Fail, Reporter};
use crate::{binfmt, landlock, mounts, sys};
use crate::{Command, Enforcement, Error, Mount, Outcome, Policy};
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// Set in the helper's environment: "`request fd`,`report fd`,`caller pid`".
const MARKER: &str = "HB_SANDBOX_INIT";

/// Everything the helper needs, sent through a memfd (no size limit, unlike an environment
/// variable, and no pipe to keep drained).
#[derive(Serialize, Deserialize)]
struct Request {
    policy: Policy,
    argv: Vec<String>,
    /// Landlock ABI checked by the caller; the command enforces exactly this one.
    landlock_abi: i32,
}

const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWCGROUP);

/// Exit code of a sandbox process whose setup failed (the report says why).
const SETUP_FAILED: i32 = 127;

// ---------------------------------------------------------------------------------------
// Caller side
// ---------------------------------------------------------------------------------------

pub(crate) fn spawn(policy: &Policy, command: Command, helper: &Path) -> Result<(Outcome, Enforcement), Error> {
    validate(policy, &command.argv)?;
    binfmt::validate(&policy.binfmt, helper)?;
    let landlock_abi = landlock::effective_abi()?;

    let request = serde_json::to_vec(&Request {
        policy: policy.clone(),
        argv: command.argv,
        landlock_abi,
    })
    .map_err(|e| Error::Policy(format!("cannot serialize: {e}")))?;
    let request_fd = memfd_with(&request)
        .and_then(sys::above_stdio)
        .map_err(|e| Error::Setup(format!("memfd for the policy: {}", sys::err_text(&e))))?;
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(std::io::Error::from)
        .and_then(|(r, w)| Ok((r, sys::above_stdio(w)?)))
        .map_err(|e| Error::Setup(format!("report pipe: {}", sys::err_text(&e))))?;

    let marker = format!(
        "{MARKER}={},{},{}",
        request_fd.as_raw_fd(),
        report_w.as_raw_fd(),
        std::process::id()
    );
    let env = [CString::new(marker).expect("no NUL in numbers")];
    let stdio = [&command.stdin, &command.stdout, &command.stderr].map(|f| f.as_ref().map(|f| f.as_fd()));
    let pid = sys::spawn(
        helper,
        c"hb-sandbox-init",
        &env,
        stdio,
        &[request_fd.as_fd(), report_w.as_fd()],
    )
    .map_err(|source| Error::Spawn {
        path: helper.to_path_buf(),
        source,
    })?;
    drop(report_w);
    drop(request_fd);
    drop(command.stdin);
    drop(command.stdout);
    drop(command.stderr);
    let status = loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break s,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Setup(format!("wait for the sandbox init: {}", e.desc()))),
        }
    };

    let enforcement = Enforcement { landlock_abi };
    let report = report::read_all(report_r);
    if let Some(fail) = report.fail {
        return Err(fail.into());
    }
    if let Some(outcome) = report.outcome {
        return Ok((outcome, enforcement));
    }
    // No report at all: the sandbox was killed from outside (say, by a timeout or the OOM
    // killer), or the helper is not a sandbox init.
    match status {
        WaitStatus::Signaled(_, sig, _) => Ok((Outcome::Signaled(sig as i32), enforcement)),
        WaitStatus::Exited(_, code) => Err(Error::Setup(format!(
            "the sandbox init {} exited with code {code} without a report; does its main \
             call hb_sandbox::init_if_requested() first?",
            helper.display()
        ))),
        _ => unreachable!("the wait loop only returns exits and deaths by signal"),
    }
}

/// An anonymous file (memfd) holding `data`, close-on-exec.
fn memfd_with(data: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: a static NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"hb-sandbox-request".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: freshly created descriptor, owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data)?;
    Ok(file.into())
}

/// Reject policies the sandbox cannot apply faithfully.
fn validate(policy: &Policy, argv: &[String]) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Policy(m));
    if argv.is_empty() {
        return bad("empty command".into());
    }
    for a in argv {
        no_nul(a, "command argument")?;
    }
    for m in &policy.mounts {
        let target = match m {
            Mount::Bind { source, target, .. } => {
                if !source.is_absolute() {
                    return bad(format!("bind source {} is not absolute", source.display()));
                }
                no_nul(&source.to_string_lossy(), "bind source")?;
                target
            }
            Mount::Symlink { link, points_to } => {
                if points_to.as_os_str().is_empty() {
                    return bad(format!("symlink {} points to nothing", link.display()));
                }
                no_nul(&points_to.to_string_lossy(), "symlink destination")?;
                link
            }
            Mount::File { target, mode, .. } => {
                if *mode > 0o7777 {
                    return bad(format!("file {} has mode {mode:o}", target.display()));
                }
                target
            }
            Mount::Tmpfs { target } | Mount::Proc { target } | Mount::Dev { target } | Mount::Dir { target } => target,
        };
        sandbox_path(target, "mount target")?;
        if target.parent().is_none() {
            return bad("a mount target cannot be / (the root is always a fresh tmpfs)".into());
        }
    }
    for w in &policy.writable {
        sandbox_path(w, "writable path")?;
    }
    sandbox_path(&policy.cwd, "working directory")?;
    if policy.hostname.is_empty() || policy.hostname.len() > 64 {
        return bad(format!("hostname {:?} must have 1 to 64 bytes", policy.hostname));
    }
    no_nul(&policy.hostname, "hostname")?;
    for (k, v) in &policy.env {
        if k.is_empty() || k.contains('=') {
            return bad(format!("environment variable name {k:?}"));
        }
        no_nul(k, "environment variable name")?;
        no_nul(v, "environment variable value")?;
    }
    if policy.uid == u32::MAX || policy.gid == u32::MAX {
        return bad("uid/gid 4294967295 is reserved".into());
    }
    if policy.umask > 0o777 {
        return bad(format!("umask {:o}", policy.umask));
    }
    for b in &policy.binfmt {
        binfmt::register_line(b).map_err(Error::Policy)?;
    }
    Ok(())
}

fn no_nul(s: &str, what: &str) -> Result<(), Error> {
    if s.contains('\0') {
        return Err(Error::Policy(format!("{what} {s:?} contains a NUL byte")));
    }
    Ok(())
}

/// An absolute path without `.` or `..` components.
fn sandbox_path(p: &Path, what: &str) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    if !p.is_absolute() {
        return Err(Error::Policy(format!("{what} {} is not absolute", p.display())));
    }
    let bytes = p.as_os_str().as_bytes();
    if bytes.split(|b| *b == b'/').any(|c| c == b"." || c == b"..") {
        return Err(Error::Policy(format!(
            "{what} {} must not contain . or ..",
            p.display()
        )));
    }
    no_nul(&p.to_string_lossy(), what)
}

// ---------------------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------------------

pub(crate) fn probe() -> Result<Enforcement, Error> {
    let landlock_abi = landlock::effective_abi()?;
    probe_namespaces()?;
    Ok(Enforcement { landlock_abi })
}

/// Fork a child that creates all the sandbox's namespaces and a tmpfs in them; it reports
/// the failing step and errno through a pipe. The caller may be multi-threaded, so the
/// child only makes raw system calls (no allocation, no locks) before `_exit`.
fn probe_namespaces() -> Result<(), Error> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Setup(format!("probe pipe: {}", e.desc())))?;
    let flags = NAMESPACES.bits();
    let fstype = c"tmpfs";
    // SAFETY: the child only performs async-signal-safe system calls and `_exit`s.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: raw syscalls on values prepared before the fork; no allocation.
            unsafe {
                let fail = |step: u8| -> ! {
                    let errno = *libc::__errno_location();
                    let mut msg = [step, 0, 0, 0, 0];
                    msg[1..].copy_from_slice(&errno.to_le_bytes());
                    libc::write(w.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                    libc::_exit(1)
                };
                if libc::unshare(flags) < 0 {
                    fail(1);
                }
                let fsfd = libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC);
                if fsfd < 0 {
                    fail(2);
                }
                let created = libc::syscall(
                    libc::SYS_fsconfig,
                    fsfd as RawFd,
                    libc::FSCONFIG_CMD_CREATE,
                    std::ptr::null::<libc::c_char>(),
                    std::ptr::null::<libc::c_void>(),
                    0,
                );
                if created < 0 {
                    fail(2);
                }
                if libc::syscall(libc::SYS_fsmount, fsfd as RawFd, libc::FSMOUNT_CLOEXEC, 0) < 0 {
                    fail(2);
                }
                libc::_exit(0)
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let _ = waitpid(child, None);
            let mut buf = Vec::new();
            let _ = std::fs::File::from(r).read_to_end(&mut buf);
            if buf.len() < 5 {
                return Ok(());
            }
            let errno = nix::errno::Errno::from_raw(i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]));
            let feature = match buf[0] {
                1 => format!(
                    "unprivileged user, mount, pid, network, uts, ipc and cgroup namespaces \
                     (unshare: {})",
                    errno.desc()
                ),
                _ => format!("mounting a tmpfs inside a user namespace (fsmount: {})", errno.desc()),
            };
            Err(Error::Unsupported { feature })
        }
        Err(e) => Err(Error::Setup(format!("probe fork: {}", e.desc()))),
    }
}

// ---------------------------------------------------------------------------------------
// Helper side
// ---------------------------------------------------------------------------------------

/// If this process was started by [`crate::run`] as the sandbox's init, act as that init and
/// never return; otherwise return at once. Call it first thing in `main`, while the process
/// is still single-threaded.
pub fn init_if_requested() {
    let Some(marker) = std::env::var_os(MARKER) else {
        return;
    };
    let marker = marker.to_string_lossy().into_owned();
    let nums: Vec<i64> = marker.split(',').filter_map(|s| s.parse().ok()).collect();
    let [request_fd, report_fd, caller] = nums[..] else {
        eprintln!("hb-sandbox: malformed {MARKER}={marker}");
        std::process::exit(SETUP_FAILED);
    };
    // Every inherited descriptor except stdio must be gone at the command's execve: our two
    // and anything the caller leaked without close-on-exec.
    // SAFETY: close_range only changes descriptor flags.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    }
    // SAFETY: the caller passed these two descriptors to us (and to nobody else).
    let (request_fd, reporter) = unsafe {
        (
            OwnedFd::from_raw_fd(request_fd as RawFd),
            Reporter::new(OwnedFd::from_raw_fd(report_fd as RawFd)),
        )
    };
    reporter.report_panics();
    // Die with the caller. If it died before the prctl, we were re-parented: stop now.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if i64::from(nix::unistd::getppid().as_raw()) != caller {
        std::process::exit(SETUP_FAILED);
    }
    match outer_init(request_fd, &reporter) {
        Ok(never) => match never {},
        Err(fail) => {
            reporter.fail(&fail);
            std::process::exit(SETUP_FAILED);
        }
    }
}

enum Never {}

/// Outer init: still in the caller's pid namespace. Creates the namespaces, forks pid 1 and
/// waits for it.
fn outer_init(request_fd: OwnedFd, reporter: &Reporter) -> Result<Never, Fail> {
    let mut file = std::fs::File::from(request_fd);
    let mut buf = Vec::new();
    // The caller's write left the shared offset at the end.
    file.rewind()
        .and_then(|_| file.read_to_end(&mut buf))
        .map_err(|e| Fail::io("read the sandbox request", &e))?;
    drop(file);
    let req: Request =
        serde_json::from_slice(&buf).map_err(|e| Fail::Setup(format!("decode the sandbox request: {e}")))?;

    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    nix::sched::unshare(NAMESPACES).map_err(|e| match e {
        nix::errno::Errno::EPERM
        | nix::errno::Errno::EINVAL
        | nix::errno::Errno::ENOSPC
        | nix::errno::Errno::EUSERS => Fail::Unsupported(format!(
            "unprivileged user, mount, pid, network, uts, ipc and cgroup namespaces \
             (unshare: {})",
            e.desc()
        )),
        e => Fail::errno("unshare namespaces", e),
    })?;
    // With binfmt_misc entries, the sandbox's own root must be mapped (see `nested`): the
    // caller is uid/gid 0 here and policy.uid/gid only in the command's nested namespace.
    let nested = !req.policy.binfmt.is_empty();
    let (inner_uid, inner_gid) = if nested {
        (0, 0)
    } else {
        (req.policy.uid, req.policy.gid)
    };
    write_id_maps(
        Path::new("/proc/self"),
        (inner_uid, uid.as_raw()),
        (inner_gid, gid.as_raw()),
    )?;
    // The limit of our user namespace: the command cannot create user namespaces of its own
    // (and with them regain capabilities over new mount or network namespaces). With a nested
    // namespace for the command, pid 1 creates exactly that one, then lowers this to 0 too.
    forbid_user_namespaces(if nested { "1" } else { "0" })?;

    // SAFETY: this process is single-threaded (init_if_requested runs first in main).
    match unsafe { nix::unistd::fork() }.map_err(|e| Fail::errno("fork the sandbox's pid 1", e))? {
        ForkResult::Child => {
            let code = match pid1(&req, reporter) {
                Ok(never) => match never {},
                Err(fail) => {
                    reporter.fail(&fail);
                    SETUP_FAILED
                }
            };
            // SAFETY: ends this process without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            forward_signals(child.as_raw());
            let status = wait_for(child);
            exit_like(status)
        }
    }
}

/// Pid 1 of the new pid namespace: builds the file system, starts the command, reaps every
/// process, and exits when the command does.
fn pid1(req: &Request, reporter: &Reporter) -> Result<Never, Fail> {
    // PDEATHSIG is not inherited through fork. Sent by the dying outer init, which lives in
    // the parent pid namespace, SIGKILL does reach a namespace init.
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let policy = &req.policy;
    // Modes of created files and directories are exactly the requested ones.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Fail::errno("mount --make-rprivate /", e))?;
    let captured = mounts::capture(policy)?;
    // Like the captures, while host paths (the interpreters) still resolve as on the host.
    // Kept open until pid 1 exits: that alone keeps the instance alive (see binfmt.rs).
    let binfmt_instance = binfmt::register(&policy.binfmt)?;
    // Also while the host's /proc is still there.
    let command_userns = if binfmt_instance.is_some() {
        let userns = nested_userns(policy)?;
        forbid_user_namespaces("0")?;
        Some(userns)
    } else {
        None
    };
    let root = mounts::build(policy, captured)?;
    if let Some(instance) = &binfmt_instance {
        binfmt::attach(root.as_fd(), instance.as_fd(), policy)?;
    }
    nix::unistd::sethostname(&policy.hostname)
        .map_err(|e| Fail::errno(format_args!("sethostname {}", policy.hostname), e))?;
    // Do not leak the host's NIS domain name either.
    let domain = b"(none)";
    // SAFETY: pointer and length describe a live byte string.
    if unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) } < 0 {
        return Err(Fail::io("setdomainname", &std::io::Error::last_os_error()));
    }
    if policy.loopback {
        sys::loopback_up().map_err(|e| Fail::io("bring lo up", &e))?;
    }
    mounts::enter(root)?;

    forward_signals(0);
    // SAFETY: pid 1 is single-threaded (a fork of the single-threaded outer init).
    match unsafe { nix::unistd::fork() }.map_err(|e| Fail::errno("fork the command", e))? {
        ForkResult::Child => {
            let fail = match command(req, command_userns.as_ref().map(|fd| fd.as_fd())) {
                Ok(never) => match never {},
                Err(fail) => fail,
            };
            reporter.fail(&fail);
            // SAFETY: ends the process without running atexit handlers.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        ForkResult::Parent { child } => {
            // The command leads its own process group (setsid): forward to all of it.
            FORWARD_TO.store(-child.as_raw(), Ordering::SeqCst);
            loop {
                match waitpid(None::<Pid>, None) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                        reporter.outcome(Outcome::Exited(code));
                        break;
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        reporter.outcome(Outcome::Signaled(sig as i32));
                        break;
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(Fail::errno("wait for the command", e)),
                }
            }
            // Exiting kills every process left in the namespace.
            // SAFETY: ends the process without running atexit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

/// The command's process, from fork to `execve`. `userns`: the nested user namespace to
/// enter first (see [`nested_userns`]).
fn command(req: &Request, userns: Option<BorrowedFd<'_>>) -> Result<Never, Fail> {
    let policy = &req.policy;
    if let Some(userns) = userns {
        // Full capabilities in it (we own it), dropped below like the others.
        nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| Fail::errno("enter the command's user namespace", e))?;
    }
    // Its own session: no controlling terminal, so TIOCSTI on an inherited terminal cannot
    // inject input into the caller's shell.
    nix::unistd::setsid().map_err(|e| Fail::errno("setsid", e))?;
    reset_signals();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(policy.umask as _));
    nix::unistd::chdir(&policy.cwd).map_err(|e| Fail::errno(format_args!("chdir {}", policy.cwd.display()), e))?;
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(Fail::io("set no_new_privs", &std::io::Error::last_os_error()));
    }
    sys::drop_all_capabilities().map_err(|e| Fail::io("drop capabilities", &e))?;
    landlock::restrict(policy, req.landlock_abi)?;

    let cstr = |s: &str| CString::new(s).expect("validated: no NUL");
    let argv: Vec<CString> = req.argv.iter().map(|a| cstr(a)).collect();
    let mut env: Vec<CString> = policy.env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect();
    if policy.env_order_reversed {
        env.reverse();
    }
    let program = &req.argv[0];
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        // Like execvp, but with the sandbox's PATH, never the caller's.
        policy
            .env
            .get("PATH")
            .map(|p| {
                p.split(':')
                    .map(|d| format!("{}/{program}", if d.is_empty() { "." } else { d }))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        let e = nix::unistd::execve(&cstr(c), &argv, &env).unwrap_err();
        match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {}
            nix::errno::Errno::EACCES => last = e,
            _ => return Err(Fail::errno(format_args!("execve {c}"), e)),
        }
    }
    Err(Fail::errno(format_args!("execve {program}"), last))
}

/// Write `uid_map` and `gid_map` (one line each: inside -> outside) of the process whose
/// `/proc/PID` directory is `proc`, after denying `setgroups` (required for an unprivileged
/// gid_map; the file is missing on very old kernels only).
fn write_id_maps(proc: &Path, uid: (u32, u32), gid: (u32, u32)) -> Result<(), Fail> {
    match std::fs::write(proc.join("setgroups"), "deny") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Fail::io(format_args!("write deny to {}/setgroups", proc.display()), &e))
        }
        _ => {}
    }
    for (file, (inside, outside)) in [("uid_map", uid), ("gid_map", gid)] {
        let map = format!("{inside} {outside} 1\n");
        std::fs::write(proc.join(file), &map)
            .map_err(|e| Fail::io(format_args!("write {:?} to {}/{file}", map.trim(), proc.display()), &e))?;
    }
    Ok(())
}

/// Set `max_user_namespaces` of the calling process's user namespace (through the host's
/// /proc, which must still be mounted).
fn forbid_user_namespaces(limit: &str) -> Result<(), Fail> {
    std::fs::write("/proc/sys/user/max_user_namespaces", limit)
        .map_err(|e| Fail::io(format_args!("write {limit} to /proc/sys/user/max_user_namespaces"), &e))
}

/// The command's user namespace when the sandbox has binfmt_misc entries. binfmt_misc files
/// belong to the root of the instance's user namespace, so registering needs that root
/// mapped: the sandbox's namespace maps uid/gid 0 to the caller, and the command runs in this
/// child namespace, where `policy.uid`/`policy.gid` map to that 0 (so to the caller, as
/// without binfmt), and which may not create user namespaces either. `execve` in it still
/// finds the instance: binfmt_misc looks in the caller's user namespace, then its ancestors.
///
/// A child process creates it (a process cannot leave a user namespace it entered with
/// `unshare`) and sends back a descriptor of it; pid 1 keeps it for the command's `setns`.
/// Uses the host's /proc: call it before `pivot_root`.
fn nested_userns(policy: &Policy) -> Result<OwnedFd, Fail> {
    use nix::sys::socket::{self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType};
    let (ours, theirs) = socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| Fail::errno("socketpair for the command's user namespace", e))?;
    // SAFETY: pid 1 is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(|e| Fail::errno("fork to create the command's user namespace", e))? {
        ForkResult::Child => {
            drop(ours);
            let made = (|| -> Result<OwnedFd, Fail> {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
                    .map_err(|e| Fail::errno("unshare the command's user namespace", e))?;
                write_id_maps(Path::new("/proc/self"), (policy.uid, 0), (policy.gid, 0))?;
                forbid_user_namespaces("0")?;
                nix::fcntl::open(
                    "/proc/self/ns/user",
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Fail::errno("open the command's user namespace", e))
            })();
            let sent = match made {
                Ok(fd) => socket::sendmsg::<()>(
                    theirs.as_raw_fd(),
                    &[std::io::IoSlice::new(b"K")],
                    &[ControlMessage::ScmRights(&[fd.as_raw_fd()])],
                    MsgFlags::empty(),
                    None,
                ),
                Err(fail) => {
                    let (tag, text) = match &fail {
                        Fail::Unsupported(t) => (b'U', t),
                        Fail::Setup(t) => (b'S', t),
                    };
                    let mut msg = vec![tag];
                    msg.extend_from_slice(&text.as_bytes()[..text.len().min(4000)]);
                    socket::send(theirs.as_raw_fd(), &msg, MsgFlags::empty())
                }
            };
            // SAFETY: ends this helper process without running atexit handlers.
            unsafe { libc::_exit(i32::from(sent.is_err())) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let mut buf = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!(RawFd);
            let received = loop {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                match socket::recvmsg::<()>(ours.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => break Err(Fail::errno("receive the command's user namespace", e)),
                    Ok(msg) => {
                        let fd = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                            // SAFETY: the kernel just installed this descriptor in our table
                            // for us (the helper sends exactly one).
                            ControlMessageOwned::ScmRights(fds) => {
                                fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
                            }
                            _ => None,
                        });
                        break Ok((msg.bytes, fd));
                    }
                }
            };
            let _ = wait_for(child);
            let (len, fd) = received?;
            match (buf[..len].first(), fd) {
                (Some(b'K'), Some(fd)) => Ok(fd),
                (Some(b'S' | b'U'), _) => {
                    let text = String::from_utf8_lossy(&buf[1..len]).into_owned();
                    Err(if buf[0] == b'U' {
                        Fail::Unsupported(text)
                    } else {
                        Fail::Setup(text)
                    })
                }
                _ => Err(Fail::Setup(
                    "create the command's user namespace: the helper died".into(),
                )),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Signals and exit statuses
// ---------------------------------------------------------------------------------------

/// Where [`forward`] sends the signals it catches: a pid (outer init -> pid 1), a negated
/// process group (pid 1 -> the command), or 0 (not yet known: drop).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

extern "C" fn forward(sig: libc::c_int) {
    let to = FORWARD_TO.load(Ordering::SeqCst);
    if to != 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(to, sig) };
    }
}

/// Catch [`FORWARDED`] signals and pass them on to `to` (see [`FORWARD_TO`]). A namespace
/// init only receives signals it has a handler for, so pid 1 needs this to be interruptible.
fn forward_signals(to: i32) {
    FORWARD_TO.store(to, Ordering::SeqCst);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    for sig in FORWARDED {
        // SAFETY: `forward` is async-signal-safe (an atomic load and kill).
        let _ = unsafe { signal::sigaction(sig, &action) };
    }
}

/// Default dispositions and an empty mask for the command: ignored signals would survive
/// execve (the helper, a Rust program, ignores SIGPIPE), and the caller's mask or ignored
/// signals must not leak into the build either.
fn reset_signals() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing the default disposition.
            let _ = unsafe { signal::sigaction(sig, &default) };
        }
    }
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD cannot happen for our own child; report it as a setup failure code.
            Err(_) => return WaitStatus::Exited(pid, SETUP_FAILED),
        }
    }
}

/// End the outer init the way pid 1 ended: same exit code, or killed by the same signal.
fn exit_like(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Signaled(_, sig, _) => {
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: default disposition, then the signal kills us.
            unsafe {
                let _ = signal::sigaction(sig, &default);
            }
            let mut set = SigSet::empty();
            set.add(sig);
            let _ = signal::sigprocmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = signal::raise(sig);
            std::process::exit(128 + sig as i32)
        }
        WaitStatus::Exited(_, code) => std::process::exit(code),
        _ => std::process::exit(SETUP_FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn policy() -> Policy {
        Policy {
            mounts: vec![Mount::Tmpfs { target: "/tmp".into() }],
            writable: vec!["/tmp".into()],
            hostname: "h".into(),
            uid: 1000,
            gid: 1000,
            env: BTreeMap::new(),
            cwd: "/".into(),
            umask: 0o022,
            loopback: false,
            binfmt: Vec::new(),
            env_order_reversed: false,
        }
    }

    #[test]
    fn validation() {
        let argv = vec!["/bin/true".to_string()];
        assert!(validate(&policy(), &argv).is_ok());
        assert!(validate(&policy(), &[]).is_err());
        for bad in ["tmp", "/a/../b", "/a/./b", "/"] {
            let mut p = policy();
            p.mounts = vec![Mount::Dir {
                target: PathBuf::from(bad),
            }];
            assert!(validate(&p, &argv).is_err(), "{bad}");
        }
        let mut p = policy();
        p.mounts = vec![Mount::Bind {
            source: "relative".into(),
            target: "/x".into(),
            writable: false,
        }];
        assert!(validate(&p, &argv).is_err());
        let mut p = policy();
        p.writable = vec!["build".into()];
        assert!(validate(&p, &argv).is_err());
        let mut p = policy();
        p.env.insert("A=B".into(), "c".into());
        assert!(validate(&p, &argv).is_err());
        let mut p = policy();
        p.hostname = "x".repeat(65);
        assert!(validate(&p, &argv).is_err());
        let mut p = policy();
        p.binfmt = vec![crate::qemu_binfmt("aarch64", "relative/qemu".into())];
        assert!(validate(&p, &argv).is_err());
        p.binfmt[0].interpreter = "/store/qemu".into();
        assert!(validate(&p, &argv).is_ok());
    }
}
