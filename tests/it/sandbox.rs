//! Escape attempts from inside a real `hb build`: the build script tries, records what
//! happened in $out/report, and the test checks that every attempt failed. (The sandbox
//! crate has finer-grained tests of its own; these prove the policy hb builds holds.)

use crate::common::*;
use std::io::Read;
use std::process::Command;

#[test]
fn build_scripts_cannot_escape() {
    let hb = Hb::new();
    // A TCP server on the host's loopback: the build must not reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    // A host file outside every allowed path.
    let secret = hb.dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret\n").unwrap();
    let host_name_before = nix_hostname();
    let own_pid = std::process::id();

    let script = format!(
        r#"
report=$out/report
mkdir -p $out
try() {{ if sh -c "$2" >/dev/null 2>&1; then echo "ESCAPED $1" >> $report; else echo "blocked $1" >> $report; fi; }}
try tcp-host "exec bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}'"
try read-secret "cat {secret}"
try read-shadow "cat /etc/shadow"
try write-usr "touch /usr/hb-escape"
try write-root "touch /hb-escape"
try write-etc "echo x >> /etc/passwd"
try see-host-pid "test -e /proc/{own_pid}/cmdline && grep -q build_scripts_cannot_escape /proc/{own_pid}/cmdline"
try kill-host-pid "kill -0 {own_pid}"
try mount "mount -t tmpfs none /tmp"
try unshare "unshare -r true"
try hostname "hostname evil-host"
try setuid-root "test \"\$(id -u)\" = 0"
echo "pids $(ls /proc | grep -c '^[0-9]')" >> $report
echo "hostname $(hostname)" >> $report
echo "uid $(id -u)" >> $report
"#,
        secret = secret.display()
    );
    let set = make_set(
        &hb.work().join("escape"),
        &[("escape", &script_package("escape", &script))],
    );
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);

    let unpack = hb.dir.path().join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(hb.work().join("dist/t-linux-amd64.tar.gz"))
        .arg("-C")
        .arg(&unpack)
        .status()
        .unwrap()
        .success());
    let report = std::fs::read_to_string(unpack.join("t-linux-amd64/report")).unwrap();
    assert!(!report.contains("ESCAPED"), "escape succeeded:\n{report}");
    for attempt in [
        "tcp-host",
        "read-secret",
        "read-shadow",
        "write-usr",
        "write-root",
        "write-etc",
        "see-host-pid",
        "kill-host-pid",
        "mount",
        "unshare",
        "hostname",
        "setuid-root",
    ] {
        assert!(
            report.contains(&format!("blocked {attempt}")),
            "{attempt} not tried:\n{report}"
        );
    }
    let pids: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("pids "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        pids < 10,
        "the build sees {pids} processes: host processes are visible\n{report}"
    );
    assert!(report.contains("hostname hb-build"), "{report}");
    assert!(report.contains("uid 1000"), "{report}");
    // Nothing reached the listener, and the host's name is unchanged.
    let mut buf = [0u8; 16];
    match listener.accept() {
        Ok((mut stream, _)) => panic!("the build connected to the host: {:?}", stream.read(&mut buf)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    assert_eq!(nix_hostname(), host_name_before);
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

#[test]
fn the_build_environment_is_exactly_the_documented_one() {
    let hb = Hb::new();
    let script = "mkdir -p $out; env | sort > $out/env; umask > $out/umask; pwd > $out/pwd";
    let set = make_set(
        &hb.work().join("env"),
        &[("envdump", &script_package("envdump", script))],
    );
    let run = hb
        .command()
        .env("LEAKY_VARIABLE", "oops")
        .args(["build", set.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = std::fs::read_dir(hb.store().join("outputs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("tree");
    let env = std::fs::read_to_string(out.join("env")).unwrap();
    let names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert!(!env.contains("LEAKY_VARIABLE"), "host environment leaked:\n{env}");
    for expected in [
        "SOURCE_DATE_EPOCH=1700000000",
        "TZ=UTC",
        "LC_ALL=C.UTF-8",
        "HOME=/homeless-shelter",
        "HB_TARGET_ARCH=amd64",
        "out=/out",
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected} missing:\n{env}");
    }
    assert!(env.contains("CFLAGS=-O2 -ffile-prefix-map=/build=."), "{env}");
    assert!(names.contains(&"HB_JOBS"));
    assert!(!std::path::Path::new("/homeless-shelter").exists());
    assert_eq!(std::fs::read_to_string(out.join("umask")).unwrap().trim(), "0022");
    assert_eq!(std::fs::read_to_string(out.join("pwd")).unwrap().trim(), "/build/src");
}
