//! Foreign-architecture programs under emulation, through the sandbox's private binfmt_misc
//! instance: they run inside (as the command, from a shell, nested), stay confined, and the
//! host's binfmt_misc is never touched.
//!
//! Needs a static qemu-aarch64 and a static aarch64 program: `scripts/fetch-test-binaries.sh`
//! fetches them and prints the variables to export (`scripts/test.sh` does both). Without
//! them, these tests fail under CI (`CI` set) and are skipped loudly elsewhere.

mod common;

use common::{supported, Ran, Sandbox};
use hb_sandbox::{qemu_binfmt, Error, Mount};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the aarch64 program is bound inside (read-only).
const PROGRAM: &str = "/opt/aarch64/busybox";

struct Binaries {
    qemu: PathBuf,
    program: PathBuf,
}

/// The test binaries from `HB_TEST_QEMU_AARCH64` and `HB_TEST_AARCH64_PROGRAM`; `None` (after
/// saying so) when they are not configured outside CI. Panics under CI.
fn binaries() -> Option<Binaries> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let (Some(qemu), Some(program)) = (var("HB_TEST_QEMU_AARCH64"), var("HB_TEST_AARCH64_PROGRAM")) else {
        let msg = "HB_TEST_QEMU_AARCH64 and HB_TEST_AARCH64_PROGRAM are not set: run \
                   `eval \"$(scripts/fetch-test-binaries.sh)\"` (scripts/test.sh does it)";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    };
    for p in [&qemu, &program] {
        assert!(
            p.is_file(),
            "{} does not exist: run scripts/fetch-test-binaries.sh again",
            p.display()
        );
    }
    Some(Binaries { qemu, program })
}

/// A test sandbox with qemu-aarch64 registered and the aarch64 program at [`PROGRAM`].
fn emulating(b: &Binaries) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.policy.mounts.push(Mount::Bind {
        source: b.program.clone(),
        target: PROGRAM.into(),
        writable: false,
    });
    sb.policy.binfmt = vec![qemu_binfmt("aarch64", b.qemu.clone())];
    sb
}

/// Run `argv`; `None` (after saying so) when the kernel cannot give a user namespace its own
/// binfmt_misc, which the caller must answer with a skip.
fn try_emulated(sb: &Sandbox, argv: &[&str]) -> Option<Ran> {
    match sb.try_run(argv, None) {
        Ok(r) => Some(r),
        Err(e @ Error::Unsupported { .. }) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("sandbox error: {e}"),
    }
}

macro_rules! setup {
    () => {{
        if !supported() {
            return;
        }
        match binaries() {
            Some(b) => b,
            None => return,
        }
    }};
}

/// What the host's binfmt_misc looks like: the mounts of binfmt_misc instances and of
/// anything at its usual place (an automount point, say), and, when an instance is mounted
/// there, every file in it with its contents. An automount point is not triggered.
#[derive(Debug, PartialEq, Eq)]
struct HostBinfmt {
    mounts: Vec<String>,
    files: Vec<(String, String)>,
}

const HOST_DIR: &str = "/proc/sys/fs/binfmt_misc";

fn host_binfmt() -> HostBinfmt {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut mounted_here = false;
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let fstype = line.split(" - ").nth(1).and_then(|rest| rest.split_whitespace().next());
        let (point, is_binfmt) = (fields[4], fstype == Some("binfmt_misc"));
        if is_binfmt || point == HOST_DIR {
            mounted_here |= is_binfmt && point == HOST_DIR;
            // Without the mount ids, which a remount would change.
            mounts.push(fields[3..].join(" "));
        }
    }
    let mut files = Vec::new();
    if mounted_here {
        for entry in std::fs::read_dir(HOST_DIR).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            // `register` is write-only.
            let contents = std::fs::read_to_string(entry.path()).unwrap_or_else(|e| format!("<{e}>"));
            files.push((name, contents));
        }
        files.sort();
    }
    HostBinfmt { mounts, files }
}

/// Whether the host itself runs `program` through an enabled binfmt_misc entry (a machine with
/// qemu-user-binfmt installed): then "does not run outside" cannot be asserted.
fn host_emulates(host: &HostBinfmt, program: &Path) -> bool {
    let mut header = vec![0u8; 128];
    let n = std::fs::File::open(program).unwrap().read(&mut header).unwrap();
    header.truncate(n);
    let status_enabled = host
        .files
        .iter()
        .any(|(n, c)| n == "status" && c.starts_with("enabled"));
    status_enabled
        && host.files.iter().any(|(_, c)| {
            let field = |key: &str| {
                c.lines().find_map(|l| l.strip_prefix(key)).map(|hex| {
                    (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                        .collect::<Vec<u8>>()
                })
            };
            let (Some(magic), offset) = (field("magic "), c.lines().find_map(|l| l.strip_prefix("offset "))) else {
                return false;
            };
            let offset: usize = offset.and_then(|o| o.trim().parse().ok()).unwrap_or(0);
            let mask = field("mask ").unwrap_or_else(|| vec![0xff; magic.len()]);
            c.starts_with("enabled")
                && header.len() >= offset + magic.len()
                && magic
                    .iter()
                    .zip(&mask)
                    .zip(&header[offset..])
                    .all(|((m, k), h)| (m ^ h) & k == 0)
        })
}

/// Run `program` on the host (not in a sandbox): it must fail with ENOEXEC.
fn assert_does_not_run_on_the_host(program: &Path) {
    match std::process::Command::new(program).arg("true").output() {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOEXEC),
            "{}: expected 'Exec format error', got {e}",
            program.display()
        ),
        Ok(out) => panic!("{} ran on the host: {:?}", program.display(), out),
    }
}

#[test]
fn the_host_binfmt_misc_is_untouched_and_aarch64_runs_only_inside() {
    let b = setup!();
    let before = host_binfmt();
    let outside_checked = !host_emulates(&before, &b.program);
    if outside_checked {
        assert_does_not_run_on_the_host(&b.program);
    } else {
        eprintln!("NOTE: this host runs aarch64 programs itself (binfmt_misc); not checking that they fail outside");
    }

    // Check the host while the registration is live: the emulated shell waits for "go".
    let sb = emulating(&b);
    let build = sb.build.path().to_path_buf();
    let script = "echo ready > /build/ready; n=0; \
                  while [ ! -e /build/go ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; \
                  uname -m";
    let running = std::thread::spawn(move || try_emulated(&sb, &[PROGRAM, "sh", "-c", script]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !build.join("ready").exists() && !running.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = host_binfmt();
    if outside_checked {
        assert_does_not_run_on_the_host(&b.program);
    }
    // The sandbox may have failed already and its directory be gone.
    let _ = std::fs::write(build.join("go"), "");
    let Some(r) = running.join().unwrap() else { return };
    let r = r.ok();
    assert_eq!(r.stdout, "aarch64\n");

    assert_eq!(before, during, "the host's binfmt_misc changed while the sandbox ran");
    assert_eq!(
        before,
        host_binfmt(),
        "the host's binfmt_misc changed after the sandbox ran"
    );
    if outside_checked {
        assert_does_not_run_on_the_host(&b.program);
    }
}

#[test]
fn an_aarch64_program_runs_as_the_command_and_from_a_shell() {
    let b = setup!();
    let sb = emulating(&b);
    // argv[0] of the command is the aarch64 ELF itself.
    let Some(r) = try_emulated(&sb, &[PROGRAM, "echo", "hi"]) else {
        return;
    };
    assert_eq!(r.ok().stdout, "hi\n");
    let r = sb.run(&[PROGRAM, "uname", "-m"]).ok();
    assert_eq!(r.stdout, "aarch64\n");

    // From a native shell, from an emulated shell, and with argv[0] preserved (flag P:
    // busybox picks its applet from argv[0]).
    let r = sb
        .bash(&format!(
            "{PROGRAM} echo hi; /bin/sh -c '{PROGRAM} uname -m'; \
             {PROGRAM} sh -c '{PROGRAM} echo nested'; \
             (exec -a echo {PROGRAM} argv0 preserved); \
             {PROGRAM} id -u"
        ))
        .ok();
    assert_eq!(r.stdout, "hi\naarch64\nnested\nargv0 preserved\n1000\n", "{}", r.stderr);

    // The instance is visible and read-only; the interpreter's host path is not visible.
    let r = sb
        .sh(&format!(
            "cat /proc/sys/fs/binfmt_misc/status /proc/sys/fs/binfmt_misc/qemu-aarch64; \
             grep ' /proc/sys/fs/binfmt_misc ' /proc/self/mountinfo; \
             test -e '{}' && echo INTERPRETER_VISIBLE; true",
            b.qemu.display()
        ))
        .ok();
    assert!(r.stdout.starts_with("enabled\nenabled\n"), "{}", r.stdout);
    assert!(r.stdout.contains("flags: PF\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("magic 7f454c460201010000000000000000000200b700\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(" /proc/sys/fs/binfmt_misc ro,nosuid,nodev,noexec"),
        "{}",
        r.stdout
    );
    if !b.qemu.starts_with("/usr") {
        assert!(!r.stdout.contains("INTERPRETER_VISIBLE"), "{}", r.stdout);
    }
}

#[test]
fn landlock_still_confines_emulated_programs() {
    let b = setup!();
    let mut sb = emulating(&b);
    // Writable at the mount level but not listed in `writable`: Landlock alone stops it.
    let extra = tempfile::tempdir().unwrap();
    sb.policy.mounts.push(Mount::Bind {
        source: extra.path().to_path_buf(),
        target: "/extra".into(),
        writable: true,
    });
    let Some(r) = try_emulated(
        &sb,
        &[
            PROGRAM,
            "sh",
            "-c",
            "for f in /extra/escape /usr/escape /escape /proc/sys/fs/binfmt_misc/status; do \
               if echo 0 > $f; then echo WROTE $f; fi; \
             done; \
             mkdir /extra/d && echo MKDIR; \
             echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 && echo UNREGISTERED; \
             echo built > /build/obj && cat /build/obj; \
             echo t > /tmp/t && cat /tmp/t",
        ],
    ) else {
        return;
    };
    let r = r.ok();
    assert_eq!(r.stdout, "built\nt\n", "{}", r.stderr);
    assert!(r.stderr.contains("/extra/escape: Permission denied"), "{}", r.stderr);
    assert!(r.stderr.contains("/usr/escape: Read-only file system"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(extra.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(sb.build.path().join("obj")).unwrap(), "built\n");
    // Still registered and enabled.
    let r = sb.run(&[PROGRAM, "cat", "/proc/sys/fs/binfmt_misc/status"]).ok();
    assert_eq!(r.stdout, "enabled\n");
}

/// With binfmt entries the command runs in a nested user namespace (see init.rs): the usual
/// isolation must hold there too.
#[test]
fn the_usual_isolation_holds_with_binfmt_entries() {
    let b = setup!();
    let sb = emulating(&b);
    let Some(r) = try_emulated(
        &sb,
        &[
            "/bin/sh",
            "-c",
            "id -u; id -g; cat /proc/self/uid_map; \
             mkdir /tmp/x; mount -t tmpfs none /tmp/x && echo MOUNTED; \
             unshare -U true && echo UNSHARE_U; unshare -r true && echo UNSHARE_R; \
             hostname evil && echo HOSTNAME; \
             if kill -TERM 1; then echo KILLED_INIT; fi; \
             grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
        ],
    ) else {
        return;
    };
    let r = r.ok();
    assert!(r.stdout.starts_with("1000\n1000\n"), "{}", r.stdout);
    for bad in ["MOUNTED", "UNSHARE_U", "UNSHARE_R", "HOSTNAME", "KILLED_INIT"] {
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
    // Files the setup created belong to the command's user, as without binfmt.
    let r = sb.sh("stat -c '%u:%g' /etc/passwd /build").ok();
    assert_eq!(r.stdout, "1000:1000\n1000:1000\n");
}

#[test]
fn without_proc_the_registration_is_in_force_but_invisible() {
    let b = setup!();
    let mut sb = emulating(&b);
    sb.policy.mounts.retain(|m| !matches!(m, Mount::Proc { .. }));
    let Some(r) = try_emulated(
        &sb,
        &[PROGRAM, "sh", "-c", "uname -m; test -e /proc/self || echo no-proc"],
    ) else {
        return;
    };
    assert_eq!(r.ok().stdout, "aarch64\nno-proc\n");
}

#[test]
fn without_entries_there_is_no_binfmt_misc_mount() {
    if !supported() {
        return;
    }
    let r = Sandbox::new()
        .sh("grep -c binfmt_misc /proc/self/mountinfo; ls /proc/sys/fs/binfmt_misc | wc -l")
        .ok();
    assert_eq!(r.stdout, "0\n0\n");
}

#[test]
fn entries_that_would_capture_native_programs_are_refused() {
    let native = if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        eprintln!("SKIPPED: no qemu_binfmt target matches this host");
        return;
    };
    let mut sb = Sandbox::new();
    sb.policy.binfmt = vec![qemu_binfmt(native, "/nonexistent/qemu".into())];
    match sb.try_run(&["/bin/true"], None) {
        Err(Error::Policy(m)) => assert!(m.contains("this host's own executables"), "{m}"),
        other => panic!("expected a policy error, got {:?}", other.map(|r| r.outcome)),
    }
}

#[test]
fn invalid_entries_are_policy_errors() {
    let mut sb = Sandbox::new();
    let e = qemu_binfmt("aarch64", "/q".into());
    for bad in [
        vec![e.clone(), e.clone()],
        vec![hb_sandbox::Binfmt {
            name: "qemu aarch64".into(),
            ..e.clone()
        }],
        vec![hb_sandbox::Binfmt {
            mask: vec![0xff],
            ..e.clone()
        }],
        vec![hb_sandbox::Binfmt {
            interpreter: "qemu".into(),
            ..e.clone()
        }],
    ] {
        sb.policy.binfmt = bad.clone();
        match sb.try_run(&["/bin/true"], None) {
            Err(Error::Policy(_)) => {}
            other => panic!("{bad:?}: expected a policy error, got {:?}", other.map(|r| r.outcome)),
        }
    }
}

#[test]
fn a_missing_interpreter_is_a_setup_error_naming_it() {
    if !supported() {
        return;
    }
    let mut sb = Sandbox::new();
    sb.policy.binfmt = vec![qemu_binfmt("aarch64", "/nonexistent/qemu-aarch64-static".into())];
    match sb.try_run(&["/bin/true"], None) {
        Err(Error::Setup(m)) => assert_eq!(
            m,
            "binfmt_misc: register qemu-aarch64 (interpreter /nonexistent/qemu-aarch64-static): \
             the interpreter does not exist"
        ),
        Err(e @ Error::Unsupported { .. }) => eprintln!("SKIPPED: {e}"),
        other => panic!("expected a setup error, got {:?}", other.map(|r| r.outcome)),
    }
}

/// Not a test: `cargo test --release -p hb-sandbox --test binfmt -- --ignored --nocapture`
/// prints, for a sandbox running native `/bin/true` (without and with binfmt entries) and
/// emulated `busybox true`, and for qemu running `busybox true` on the host, the median wall
/// time and the mean CPU time (user + system, all processes) of one run.
#[test]
#[ignore]
fn startup_cost() {
    let b = setup!();
    let runs = 41;
    let children_cpu = || {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    let measure = |run: &dyn Fn()| {
        run(); // warm-up
        let cpu_before = children_cpu();
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                run();
                start.elapsed()
            })
            .collect();
        let cpu = (children_cpu() - cpu_before) / runs as u32;
        times.sort();
        format!(
            "median {:.1} ms, CPU {:.1} ms",
            times[runs / 2].as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3
        )
    };
    let native = Sandbox::new();
    let emulated = emulating(&b);
    let lines = [
        (
            "sandbox, native /bin/true",
            measure(&|| drop(native.run(&["/bin/true"]).ok())),
        ),
        (
            "sandbox with binfmt, native /bin/true",
            measure(&|| drop(emulated.run(&["/bin/true"]).ok())),
        ),
        (
            "sandbox with binfmt, emulated busybox true",
            measure(&|| drop(emulated.run(&[PROGRAM, "true"]).ok())),
        ),
        (
            "no sandbox, qemu-aarch64 busybox true",
            measure(&|| {
                let status = std::process::Command::new(&b.qemu)
                    .args(["-0".as_ref(), "busybox".as_ref(), b.program.as_os_str()])
                    .arg("true")
                    .status()
                    .unwrap();
                assert!(status.success());
            }),
        ),
    ];
    for (what, figures) in lines {
        eprintln!("{what:<45} {figures} ({runs} runs)");
    }
}
