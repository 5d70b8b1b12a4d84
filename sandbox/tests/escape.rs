//! Escape attempts against the sandbox. Each test checks the kernel state it relies on
//! (the attempt really ran and failed for the right reason) so that it fails, rather than
//! passes vacuously, if isolation breaks.

mod common;

use common::{supported, Sandbox};
use std::io::ErrorKind;
use std::net::TcpListener;

macro_rules! require_support {
    () => {
        if !supported() {
            return;
        }
    };
}

#[test]
fn tcp_to_a_host_listener_fails_and_never_connects() {
    require_support!();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sb = Sandbox::new();
    let r = sb
        .bash(&format!("echo hello > /dev/tcp/127.0.0.1/{port} && echo CONNECTED"))
        .failed();
    assert!(!r.stdout.contains("CONNECTED"), "{}", r.stdout);
    // Landlock refuses the connect before the (empty) network namespace gets a say.
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(100));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener saw a connection: {other:?}"),
    }
}

#[test]
fn tcp_on_the_sandbox_loopback_is_denied_by_landlock() {
    require_support!();
    let sb = Sandbox::new();
    // Nothing listens on port 1: without Landlock this would be "Connection refused".
    let r = sb.bash("exec 3<>/dev/tcp/127.0.0.1/1").failed();
    assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    assert!(!r.stderr.contains("refused"), "{}", r.stderr);
    // Binding a TCP port (a server) is denied too.
    let r = sb
        .run(&[
            "/usr/bin/perl",
            "-MSocket",
            "-e",
            "socket(S, PF_INET, SOCK_STREAM, 0) or die qq(socket: $!\\n); \
             bind(S, pack_sockaddr_in(8080, INADDR_LOOPBACK)) or die qq(bind: $!\\n); \
             print qq(BOUND\\n)",
        ])
        .failed();
    assert!(!r.stdout.contains("BOUND"));
    assert!(r.stderr.contains("bind: Permission denied"), "{}", r.stderr);
}

/// Control for the test above: `lo` is up (UDP, which Landlock ABI < 10 does not restrict,
/// goes through), so the TCP denials come from Landlock, not from a missing interface.
#[test]
fn loopback_is_up_when_requested_and_down_otherwise() {
    require_support!();
    let udp_echo = [
        "/usr/bin/perl",
        "-MSocket",
        "-e",
        "socket(S, PF_INET, SOCK_DGRAM, 0) or die qq(socket: $!\\n); \
         bind(S, pack_sockaddr_in(0, INADDR_LOOPBACK)) or die qq(bind: $!\\n); \
         send(S, qq(ping), 0, getsockname(S)) or die qq(send: $!\\n); \
         recv(S, $m, 4, 0); print qq(got $m\\n)",
    ];
    let mut sb = Sandbox::new();
    let r = sb.run(&udp_echo).ok();
    assert_eq!(r.stdout, "got ping\n");
    sb.policy.loopback = false;
    let r = sb.run(&udp_echo).failed();
    assert!(
        r.stderr.contains("send: Network is unreachable") || r.stderr.contains("bind: Cannot assign requested address"),
        "{}",
        r.stderr
    );
}

#[test]
fn host_files_outside_the_policy_are_invisible() {
    require_support!();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT\n").unwrap();
    let sb = Sandbox::new();
    // An absolute symlink planted in /build points at the host path; inside, it must
    // resolve in the sandbox's tree.
    std::os::unix::fs::symlink(&secret, sb.build.path().join("link")).unwrap();
    let s = secret.display();
    let r = sb.sh(&format!(
        "cat {s}; cat /build/link; cat /build/../{name}; cat /proc/1/root{s}; \
         cat /proc/1/root/etc/passwd; ls /proc/1/root/; cat /etc/shadow; \
         cat /proc/self/root{s}; ls -a /; ls /etc",
        name = secret.file_name().unwrap().to_string_lossy()
    ));
    assert!(!r.stdout.contains("TOP-SECRET"), "{}", r.stdout);
    assert!(!r.stderr.contains("TOP-SECRET"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/etc/shadow: No such file or directory"),
        "{}",
        r.stderr
    );
    // pid 1 (the sandbox's init) is outside the Landlock domain: no peeking through it.
    assert!(
        r.stderr.contains("/proc/1/root/etc/passwd: Permission denied"),
        "{}",
        r.stderr
    );
    // The root holds exactly what the policy put there.
    let listing: Vec<&str> = r.stdout.lines().collect();
    for expected in [
        "bin", "build", "dev", "etc", "lib", "lib64", "out", "proc", "sbin", "tmp", "usr",
    ] {
        assert!(listing.contains(&expected), "{expected} missing: {listing:?}");
    }
    for unexpected in ["home", "root", "var", "work", "srv", "mnt", "opt", "shadow"] {
        assert!(!listing.contains(&unexpected), "{unexpected} visible: {listing:?}");
    }
}

#[test]
fn setup_resolves_targets_inside_the_new_root() {
    require_support!();
    // A symlink inside a bound directory points at an absolute host path. A later mount
    // through it must land inside the sandbox, never on the host.
    let host_dir = tempfile::tempdir().unwrap();
    let sb = {
        let mut sb = Sandbox::new();
        std::os::unix::fs::symlink(host_dir.path(), sb.build.path().join("esc")).unwrap();
        // The same path inside the sandbox, on its /tmp tmpfs, for the symlink to reach.
        sb.policy.mounts.push(hb_sandbox::Mount::Dir {
            target: host_dir.path().to_path_buf(),
        });
        sb.policy.mounts.push(hb_sandbox::Mount::Dir {
            target: "/build/esc/created-dir".into(),
        });
        sb.policy.mounts.push(hb_sandbox::Mount::File {
            target: "/build/esc/created-file".into(),
            contents: "x".into(),
            mode: 0o644,
        });
        sb
    };
    // Inside, /build/esc -> <host_dir> resolves on the sandbox's root: the policy mounts
    // a tmpfs on /tmp before /build, so both entries land on that tmpfs.
    let result = sb.try_run(&["/bin/cat", "/build/esc/created-file"], None);
    assert!(
        !host_dir.path().join("created-dir").exists() && !host_dir.path().join("created-file").exists(),
        "setup wrote onto the host through a symlink"
    );
    let r = result.unwrap().ok();
    assert_eq!(r.stdout, "x");
}

#[test]
fn writes_outside_the_writable_paths_fail() {
    require_support!();
    let mut sb = Sandbox::new();
    // Writable at the mount level but not listed in `writable`: Landlock alone stops it.
    let extra = tempfile::tempdir().unwrap();
    sb.policy.mounts.push(hb_sandbox::Mount::Bind {
        source: extra.path().to_path_buf(),
        target: "/extra".into(),
        writable: true,
    });
    let r = sb.sh(
        "for f in /usr/hb-escape /hb-escape /etc/passwd /etc/hb-escape /extra/hb-escape \
                  /proc/hb-escape /dev/hb-escape; do \
           if echo pwned > $f; then echo WROTE $f; fi; \
         done; \
         mkdir /extra/d && echo MKDIR; \
         ln -s /x /extra/l && echo SYMLINK; \
         cat /etc/passwd; \
         grep ' / / ' /proc/self/mountinfo",
    );
    // Landlock alone would also refuse writes to /, but the root must be read-only too.
    assert!(r.stdout.contains(" / / ro,"), "{}", r.stdout);
    assert!(!r.stdout.contains("WROTE"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("MKDIR") && !r.stdout.contains("SYMLINK"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("hb:x:1000:1000"), "{}", r.stdout);
    assert!(r.stderr.contains("/extra/hb-escape: Permission denied"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/usr/hb-escape: Read-only file system"),
        "{}",
        r.stderr
    );
    assert!(!std::path::Path::new("/usr/hb-escape").exists());
    assert_eq!(std::fs::read_dir(extra.path()).unwrap().count(), 0);
}

#[test]
fn writes_to_build_out_and_tmp_work_and_land_on_the_host() {
    require_support!();
    let sb = Sandbox::new();
    std::fs::write(sb.build.path().join("input.txt"), "from host\n").unwrap();
    let r = sb.sh("set -e; cat input.txt > /out/copied.txt; mkdir -p /build/sub/dir; \
         echo built > /build/sub/dir/obj.o; mv /build/sub/dir/obj.o /out/obj.o; \
         echo t > /tmp/t; mv /tmp/t /build/t; ln -s obj.o /out/link; \
         truncate -s 0 /build/t; echo scratch > /dev/shm/x; echo done");
    let r = r.ok();
    assert_eq!(r.stdout, "done\n");
    let out = sb.out.path();
    assert_eq!(std::fs::read_to_string(out.join("copied.txt")).unwrap(), "from host\n");
    assert_eq!(std::fs::read_to_string(out.join("obj.o")).unwrap(), "built\n");
    assert_eq!(std::fs::read_link(out.join("link")).unwrap().to_str(), Some("obj.o"));
    assert_eq!(std::fs::read_to_string(sb.build.path().join("t")).unwrap(), "");
}

#[test]
fn host_processes_are_invisible() {
    require_support!();
    let sb = Sandbox::new();
    let me = std::process::id();
    let r = sb.sh(&format!(
        "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; \
         if kill -0 {me}; then echo SIGNALED_HOST; fi; \
         test -e /proc/{me} && echo SEES_HOST_PID; \
         echo self=$$"
    ));
    assert!(!r.stdout.contains("SIGNALED_HOST"), "{}", r.stdout);
    assert!(!r.stdout.contains("SEES_HOST_PID"), "{}", r.stdout);
    let pids: Vec<u32> = r
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // pid 1 (init), the shell, ls and grep: a handful, all small numbers.
    assert!(pids.contains(&1) && pids.len() <= 6, "{pids:?}");
    assert!(pids.iter().all(|p| *p < 100), "{pids:?}");
    assert!(r.stdout.contains("self=2\n"), "{}", r.stdout);
}

#[test]
fn signals_cannot_leave_the_landlock_domain() {
    require_support!();
    let sb = Sandbox::new();
    // Pid 1 is the sandbox's init, outside the command's Landlock domain (ABI >= 6 scopes
    // signals); the command's own children are inside it.
    let r = sb
        .sh("if kill -TERM 1; then echo KILLED_INIT; fi; sleep 5 & kill $! && echo KILLED_CHILD")
        .ok();
    assert!(!r.stdout.contains("KILLED_INIT"), "{}", r.stdout);
    assert!(r.stdout.contains("KILLED_CHILD"), "{}{}", r.stdout, r.stderr);
}

#[test]
fn mounting_and_new_namespaces_fail() {
    require_support!();
    let sb = Sandbox::new();
    let r = sb.sh("mkdir /tmp/x; \
         mount -t tmpfs none /tmp/x && echo MOUNTED; \
         unshare -m true && echo UNSHARE_M; \
         unshare -r true && echo UNSHARE_R; \
         unshare -U true && echo UNSHARE_U; \
         unshare -n true && echo UNSHARE_N; \
         grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status");
    for bad in ["MOUNTED", "UNSHARE_M", "UNSHARE_R", "UNSHARE_U", "UNSHARE_N"] {
        assert!(!r.stdout.contains(bad), "{bad}: {}", r.stdout);
    }
    for line in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(r.stdout.contains(line), "{line} missing: {}", r.stdout);
    }
}

#[test]
fn the_hostname_is_the_policys_and_cannot_change() {
    require_support!();
    let before = nix::unistd::gethostname().unwrap();
    let sb = Sandbox::new();
    // The sysctl file is the other way in; it matters when hb runs as host root, since the
    // sandbox user then owns root's files as far as permission bits go.
    let r = sb.sh("hostname; hostname evil && echo CHANGED; \
         echo evil > /proc/sys/kernel/hostname && echo CHANGED; hostname; uname -n");
    assert_eq!(nix::unistd::gethostname().unwrap(), before);
    assert!(!r.stdout.contains("CHANGED"), "{}", r.stdout);
    assert_eq!(r.stdout, "hb-sandbox\nhb-sandbox\nhb-sandbox\n", "{}", r.stderr);
}

#[test]
fn no_descriptor_of_the_caller_leaks_into_the_command() {
    require_support!();
    // A descriptor opened without close-on-exec, as a careless library in hb could.
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("leaky.txt");
    std::fs::write(&secret, "LEAKED-DESCRIPTOR\n").unwrap();
    let path = std::ffi::CString::new(secret.to_str().unwrap()).unwrap();
    // SAFETY: a plain open of a NUL-terminated path; closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    let sb = Sandbox::new();
    let r = sb.sh(&format!("ls /proc/self/fd; cat <&{fd}")).failed();
    // SAFETY: the descriptor opened above, closed once.
    unsafe { libc::close(fd) };
    assert!(!r.stdout.contains("LEAKED"), "{}", r.stdout);
    // 0, 1, 2 and the directory ls is reading.
    assert_eq!(r.stdout, "0\n1\n2\n3\n", "{}", r.stderr);
}

#[test]
fn read_only_binds_are_read_only_all_the_way_down() {
    require_support!();
    // Host /dev has sub-mounts (/dev/shm, /dev/pts). Listing the target as writable leaves
    // the mount flags as the only barrier.
    let has_shm_mount = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/dev/shm"));
    if !has_shm_mount {
        eprintln!("SKIPPED: the host has no /dev/shm mount to test recursive binds with");
        return;
    }
    let mut sb = Sandbox::new();
    sb.policy.mounts.push(hb_sandbox::Mount::Bind {
        source: "/dev".into(),
        target: "/hostdev".into(),
        writable: false,
    });
    sb.policy.writable.push("/hostdev/shm".into());
    // A file bind, on a path whose parents do not exist yet.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "bound file\n").unwrap();
    sb.policy.mounts.push(hb_sandbox::Mount::Bind {
        source: file.path().to_path_buf(),
        target: "/etc/deep/bound.txt".into(),
        writable: false,
    });
    let name = format!("hb-sandbox-test-{}", std::process::id());
    let r = sb.sh(&format!(
        "cat /etc/deep/bound.txt; echo x > /etc/deep/bound.txt && echo WROTE_FILE; \
         echo x > /hostdev/shm/{name} && echo WROTE_SHM; \
         grep ' /hostdev/shm ' /proc/self/mountinfo"
    ));
    assert!(r.stdout.starts_with("bound file\n"), "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("WROTE"), "{}", r.stdout);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(r.stdout.contains(" /hostdev/shm ro,"), "{}", r.stdout);
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
    assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "bound file\n");
}
