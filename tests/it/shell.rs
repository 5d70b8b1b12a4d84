//! `hb shell`: the recipe's build sandbox, with its sources unpacked and its dependencies
//! mounted, driven through stdin like a person at a terminal would.

use crate::common::*;
use std::io::Write;
use std::process::Stdio;

#[test]
fn shell_opens_the_build_sandbox_with_sources_and_deps() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    let mut child = hb
        .command()
        .args(["shell", set.join("greet.toml").to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pwd; ls; ls /deps; hostname; id -u; echo $out; exit 5\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "the shell's exit code is hb's\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["/build/src", "main.c", "libgreet", "hb-build", "1000", "/out"] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} missing from:\n{stdout}");
    }
}

#[test]
fn shell_runs_a_given_command_and_rejects_a_set() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    let run = hb.run(&[
        "shell",
        set.join("libgreet.toml").to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "test -f greet.c",
    ]);
    run.expect_code(0);
    hb.run(&["shell", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("takes one recipe file");
}
