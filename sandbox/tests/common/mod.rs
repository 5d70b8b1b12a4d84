//! Shared fixtures of the sandbox's integration tests: a policy shaped like the ones hb
//! builds (tmpfs root, read-only /usr, /proc, /dev, /tmp, writable /build and /out), and a
//! runner that captures the command's output.

#![allow(dead_code)]

use hb_sandbox::{Command, Enforcement, Error, Mount, Outcome, Policy};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The helper that acts as the sandbox's init.
pub fn helper() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hb-sandbox-exec"))
}

/// False (after saying so on stderr) when this kernel cannot run sandboxes at all: then the
/// test must return early. Any other failure is a real failure.
pub fn supported() -> bool {
    match hb_sandbox::probe() {
        Ok(_) => true,
        Err(e @ Error::Unsupported { .. }) => {
            eprintln!("SKIPPED: this kernel cannot run the hb sandbox: {e}");
            false
        }
        Err(e) => panic!("probe failed: {e}"),
    }
}

pub struct Sandbox {
    pub build: tempfile::TempDir,
    pub out: tempfile::TempDir,
    pub policy: Policy,
}

pub struct Ran {
    pub outcome: Outcome,
    pub enforcement: Enforcement,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let build = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let p = |s: &str| PathBuf::from(s);
        let mut mounts = vec![Mount::Bind {
            source: p("/usr"),
            target: p("/usr"),
            writable: false,
        }];
        for (link, to) in [
            ("/bin", "usr/bin"),
            ("/lib", "usr/lib"),
            ("/lib64", "usr/lib64"),
            ("/sbin", "usr/sbin"),
        ] {
            mounts.push(Mount::Symlink {
                link: p(link),
                points_to: p(to),
            });
        }
        mounts.extend([
            Mount::File {
                target: p("/etc/passwd"),
                contents: "hb:x:1000:1000:hb:/build:/bin/sh\n".into(),
                mode: 0o644,
            },
            Mount::File {
                target: p("/etc/group"),
                contents: "hb:x:1000:\n".into(),
                mode: 0o644,
            },
            Mount::Proc { target: p("/proc") },
            Mount::Dev { target: p("/dev") },
            Mount::Tmpfs { target: p("/tmp") },
            Mount::Bind {
                source: build.path().to_path_buf(),
                target: p("/build"),
                writable: true,
            },
            Mount::Bind {
                source: out.path().to_path_buf(),
                target: p("/out"),
                writable: true,
            },
        ]);
        let env: BTreeMap<String, String> = [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/build"),
            ("LC_ALL", "C"),
            ("HB_TEST", "yes"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let policy = Policy {
            mounts,
            writable: vec![p("/build"), p("/out"), p("/tmp")],
            hostname: "hb-sandbox".into(),
            uid: 1000,
            gid: 1000,
            env,
            cwd: p("/build"),
            umask: 0o022,
            loopback: true,
            binfmt: Vec::new(),
            env_order_reversed: false,
        };
        Sandbox { build, out, policy }
    }

    /// Run `argv` with stdout and stderr captured; panics on a sandbox error.
    pub fn run(&self, argv: &[&str]) -> Ran {
        self.try_run(argv, None)
            .unwrap_or_else(|e| panic!("sandbox error: {e}"))
    }

    /// Run `/bin/sh -c script`.
    pub fn sh(&self, script: &str) -> Ran {
        self.run(&["/bin/sh", "-c", script])
    }

    /// Run `/bin/bash -c script`.
    pub fn bash(&self, script: &str) -> Ran {
        self.run(&["/bin/bash", "-c", script])
    }

    pub fn try_run(&self, argv: &[&str], stdin: Option<std::fs::File>) -> Result<Ran, Error> {
        let mut stdout = tempfile::tempfile().unwrap();
        let mut stderr = tempfile::tempfile().unwrap();
        let command = Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdout: Some(stdout.try_clone().unwrap()),
            stderr: Some(stderr.try_clone().unwrap()),
        };
        let (outcome, enforcement) = hb_sandbox::run(&self.policy, command, helper())?;
        let read = |f: &mut std::fs::File| {
            let mut s = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut s).unwrap();
            s
        };
        Ok(Ran {
            outcome,
            enforcement,
            stdout: read(&mut stdout),
            stderr: read(&mut stderr),
        })
    }
}

impl Ran {
    /// Panics with the command's output unless it exited 0.
    pub fn ok(self) -> Ran {
        assert_eq!(
            self.outcome,
            Outcome::Exited(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed (non-zero or signal).
    pub fn failed(self) -> Ran {
        assert!(
            !self.outcome.success(),
            "expected a failure; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Host processes one of whose arguments is exactly `arg` (a unique `sleep` duration, say;
/// a shell whose script merely mentions it does not count).
pub fn host_processes_with(arg: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
                let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push(format!("{}: {shown}", name.to_string_lossy()));
            }
        }
    }
    found
}
