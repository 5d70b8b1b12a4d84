//! What the sandbox guarantees about the command's environment, its outcome, its leftover
//! processes, setup errors and the standard streams.

mod common;

use common::{helper, host_processes_with, supported, Sandbox};
use hb_sandbox::{Error, Mount, Outcome};
use std::io::Write;
use std::time::{Duration, Instant};

macro_rules! require_support {
    () => {
        if !supported() {
            return;
        }
    };
}

#[test]
fn probe_reports_landlock_abi_4_or_newer() {
    require_support!();
    let e = hb_sandbox::probe().unwrap();
    assert!(e.landlock_abi >= 4, "{e:?}");
}

#[test]
fn environment_is_exactly_the_policys() {
    require_support!();
    let sb = Sandbox::new();
    let r = sb.run(&["/usr/bin/env"]).ok();
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["HB_TEST=yes", "HOME=/build", "LC_ALL=C", "PATH=/usr/bin:/bin"]);
    assert!(r.enforcement.landlock_abi >= 4);
}

#[test]
fn user_umask_and_cwd_are_the_policys() {
    require_support!();
    let mut sb = Sandbox::new();
    sb.policy.umask = 0o027;
    sb.policy.uid = 1000;
    sb.policy.gid = 1000;
    let r = sb
        .sh("id -u; id -g; id -un; umask; pwd; touch f; stat -c %a f; mkdir d; stat -c %a d")
        .ok();
    assert_eq!(r.stdout, "1000\n1000\nhb\n0027\n/build\n640\n750\n");
}

#[test]
fn programs_are_found_on_the_policys_path() {
    require_support!();
    let sb = Sandbox::new();
    let r = sb.run(&["echo", "found"]).ok();
    assert_eq!(r.stdout, "found\n");
    match sb.try_run(&["no-such-program-hb"], None) {
        Err(Error::Setup(m)) => assert!(m.contains("execve no-such-program-hb"), "{m}"),
        other => panic!("{:?}", other.map(|r| r.outcome)),
    }
}

#[test]
fn the_outcome_propagates() {
    require_support!();
    let sb = Sandbox::new();
    assert_eq!(sb.sh("exit 42").outcome, Outcome::Exited(42));
    assert_eq!(sb.sh("exit 0").outcome, Outcome::Exited(0));
    assert_eq!(sb.sh("kill -TERM $$").outcome, Outcome::Signaled(15));
    assert_eq!(sb.sh("kill -KILL $$").outcome, Outcome::Signaled(9));
}

#[test]
fn leftover_processes_die_with_the_command() {
    require_support!();
    let sb = Sandbox::new();
    // Unique arguments, to find the processes on the host afterwards.
    let tag = format!("{}.{}", 900_000 + std::process::id() % 100_000, 77);
    let tag2 = format!("{}.{}", 900_000 + std::process::id() % 100_000, 78);
    let r = sb
        .sh(&format!(
            "sleep {tag} & echo $! > /out/pid; \
             setsid sh -c 'sleep {tag2} & exit 0'; \
             sleep 0.2; echo started"
        ))
        .ok();
    assert_eq!(r.stdout, "started\n");
    let pid = std::fs::read_to_string(sb.out.path().join("pid")).unwrap();
    assert!(pid.trim().parse::<u32>().unwrap() > 1, "{pid}");
    // run() returns only once pid 1 is reaped, and the kernel has killed every other
    // process of the namespace before that.
    assert_eq!(host_processes_with(&tag), Vec::<String>::new());
    assert_eq!(host_processes_with(&tag2), Vec::<String>::new());
}

#[test]
fn a_missing_bind_source_is_a_setup_error_naming_it() {
    require_support!();
    let mut sb = Sandbox::new();
    sb.policy.mounts.push(Mount::Bind {
        source: "/nonexistent/hb-source".into(),
        target: "/src".into(),
        writable: false,
    });
    match sb.try_run(&["/bin/true"], None) {
        Err(Error::Setup(m)) => {
            assert!(m.contains("/nonexistent/hb-source"), "{m}");
            assert!(m.contains("/src"), "{m}");
            assert!(m.contains("No such file or directory"), "{m}");
        }
        other => panic!("{:?}", other.map(|r| r.outcome)),
    }
}

#[test]
fn a_file_over_an_existing_read_only_file_is_bound_and_leaves_no_trace() {
    require_support!();
    // A read-only bound directory with an empty placeholder, as /etc of a pinned rootfs.
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("hosts"), "").unwrap();
    std::fs::write(conf.path().join("kept"), "from the bind\n").unwrap();
    let mut sb = Sandbox::new();
    sb.policy.mounts.push(Mount::Bind {
        source: conf.path().to_path_buf(),
        target: "/conf".into(),
        writable: false,
    });
    sb.policy.mounts.push(Mount::File {
        target: "/conf/hosts".into(),
        contents: "127.0.0.1 localhost\n".into(),
        mode: 0o640,
    });
    let r = sb
        .sh("cat /conf/hosts /conf/kept; stat -c %a /conf/hosts; ls -A /; \
             if echo x >> /conf/hosts; then echo WRITABLE; fi 2>/dev/null")
        .ok();
    assert_eq!(
        r.stdout.lines().take(3).collect::<Vec<_>>(),
        ["127.0.0.1 localhost", "from the bind", "640"]
    );
    assert!(!r.stdout.contains(".hb-staged"), "staging name removed: {}", r.stdout);
    assert!(!r.stdout.contains("WRITABLE"), "{}", r.stdout);
    // The host's placeholder is untouched.
    assert_eq!(std::fs::read(conf.path().join("hosts")).unwrap(), b"");
}

#[test]
fn other_setup_errors_name_the_step() {
    require_support!();
    let mut sb = Sandbox::new();
    sb.policy.cwd = "/nonexistent-cwd".into();
    match sb.try_run(&["/bin/true"], None) {
        Err(Error::Setup(m)) => assert_eq!(m, "chdir /nonexistent-cwd: No such file or directory"),
        other => panic!("{:?}", other.map(|r| r.outcome)),
    }
    let mut sb = Sandbox::new();
    sb.policy.writable.push("/not-there".into());
    match sb.try_run(&["/bin/true"], None) {
        Err(Error::Setup(m)) => assert!(m.contains("/not-there"), "{m}"),
        other => panic!("{:?}", other.map(|r| r.outcome)),
    }
}

#[test]
fn invalid_policies_are_rejected_before_starting_anything() {
    let mut sb = Sandbox::new();
    sb.policy.mounts.push(Mount::Tmpfs {
        target: "relative".into(),
    });
    assert!(matches!(sb.try_run(&["/bin/true"], None), Err(Error::Policy(_))));
    let mut sb = Sandbox::new();
    sb.policy.writable.push("/build/../etc".into());
    assert!(matches!(sb.try_run(&["/bin/true"], None), Err(Error::Policy(_))));
    let sb = Sandbox::new();
    assert!(matches!(sb.try_run(&[], None), Err(Error::Policy(_))));
}

#[test]
fn a_helper_that_is_not_a_sandbox_init_is_an_error() {
    require_support!();
    let sb = Sandbox::new();
    let command = hb_sandbox::Command {
        argv: vec!["/bin/true".into()],
        stdin: None,
        stdout: None,
        stderr: None,
    };
    match hb_sandbox::run(&sb.policy, command, std::path::Path::new("/bin/true")) {
        Err(Error::Setup(m)) => assert!(m.contains("init_if_requested"), "{m}"),
        other => panic!("{other:?}"),
    }
    let command = hb_sandbox::Command {
        argv: vec!["/bin/true".into()],
        stdin: None,
        stdout: None,
        stderr: None,
    };
    assert!(matches!(
        hb_sandbox::run(&sb.policy, command, std::path::Path::new("/nonexistent/helper")),
        Err(Error::Spawn { .. })
    ));
}

#[test]
fn standard_streams_are_the_commands() {
    require_support!();
    let sb = Sandbox::new();
    let mut input = tempfile::tempfile().unwrap();
    input.write_all(b"line one\nline two\n").unwrap();
    use std::io::Seek;
    input.rewind().unwrap();
    let r = sb
        .try_run(&["/bin/sh", "-c", "wc -l; echo to-stderr >&2"], Some(input))
        .unwrap()
        .ok();
    assert_eq!(r.stdout.trim(), "2");
    assert_eq!(r.stderr, "to-stderr\n");
}

#[test]
fn devices_behave() {
    require_support!();
    let sb = Sandbox::new();
    let r = sb
        .sh("echo x > /dev/null && echo null-ok; \
             head -c 8 /dev/urandom | wc -c; head -c 8 /dev/zero | wc -c; \
             echo x > /dev/full || echo full-refused; \
             test -c /dev/tty && echo tty-ok; test -L /dev/fd && echo fd-ok; \
             test -e /dev/pts/ptmx && echo pts-ok")
        .ok();
    assert_eq!(
        r.stdout, "null-ok\n8\n8\nfull-refused\ntty-ok\nfd-ok\npts-ok\n",
        "{}",
        r.stderr
    );
}

/// hb-sandbox-exec forwards SIGTERM from the outer init to the command, and kills the whole
/// sandbox when the caller dies.
#[test]
fn exec_binary_forwards_signals_and_dies_with_its_caller() {
    require_support!();
    let sb = Sandbox::new();
    let policy_tmp = tempfile::NamedTempFile::new().unwrap();
    let policy_file = policy_tmp.path();
    std::fs::write(policy_file, serde_json::to_string(&sb.policy).unwrap()).unwrap();

    // 1. SIGTERM to the outer init reaches the command, whose exit code comes back.
    let tag = format!("{}.{}", 800_000 + std::process::id() % 100_000, 11);
    let mut child = std::process::Command::new(helper())
        .arg(policy_file)
        .arg("--")
        .args([
            "/bin/sh",
            "-c",
            &format!("trap 'echo got-term; exit 3' TERM; sleep {tag} & wait"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let outer = wait_for_child_of(child.id());
    wait_until(|| !host_processes_with(&tag).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(outer as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Bounded: a lost signal must fail the test, not hang it.
    let mut exited = None;
    wait_until_or(Duration::from_secs(10), || {
        exited = child.try_wait().unwrap();
        exited.is_some()
    });
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("SIGTERM was not forwarded to the command");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-term\n");
    assert!(host_processes_with(&tag).is_empty());

    // 2. SIGKILL to the caller (hb-sandbox-exec itself) kills the sandbox.
    let tag = format!("{}.{}", 800_000 + std::process::id() % 100_000, 12);
    let mut child = std::process::Command::new(helper())
        .arg(policy_file)
        .arg("--")
        .args(["/bin/sleep", &tag])
        .spawn()
        .unwrap();
    wait_until(|| !host_processes_with(&tag).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(|| host_processes_with(&tag).is_empty());
}

fn wait_until(cond: impl FnMut() -> bool) {
    assert!(
        wait_until_or(Duration::from_secs(10), cond),
        "condition not met in 10 s"
    );
}

/// Poll `cond` until it holds (true) or `limit` passes (false).
fn wait_until_or(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The first child of `pid` (the outer init of hb-sandbox-exec).
fn wait_for_child_of(pid: u32) -> u32 {
    let mut found = 0;
    wait_until(|| {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        found = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        found != 0
    });
    found
}
