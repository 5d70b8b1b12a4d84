//! The shared test context: each test gets a private store and work directory, a clean
//! environment (no colour, fixed locale), and helpers to run the real `hb` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Hb {
    pub dir: tempfile::TempDir,
}

impl Hb {
    pub fn new() -> Hb {
        Hb {
            dir: tempfile::Builder::new().prefix("hb-test-").tempdir().expect("tempdir"),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn work(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        work
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hb"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("HB_STORE", self.store())
            .env("NO_COLOR", "1")
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.work());
        if let Some(m) = std::env::var_os("HB_MIRROR_DEBIAN") {
            cmd.env("HB_MIRROR_DEBIAN", m);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command().args(args).output().expect("running hb");
        Run::from(output, args)
    }

    /// Copy a fixture set from `fixtures/NAME` into the work directory and return its path.
    pub fn fixture(&self, name: &str) -> PathBuf {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
        let to = self.work().join(name);
        copy_dir(&from, &to);
        to
    }

    /// A listing of every path under the store with sizes, to check "nothing changed".
    pub fn store_snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.store().exists() {
            return out;
        }
        for e in walkdir::WalkDir::new(self.store()).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(self.store()).unwrap().display().to_string();
            if rel.starts_with("locks") || rel == "store.lock" {
                continue;
            }
            let len = if e.file_type().is_file() {
                e.metadata().unwrap().len()
            } else {
                0
            };
            out.push(format!("{rel} {len}"));
        }
        out
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    fn from(output: Output, args: &[&str]) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "hb {} exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr of hb {} lacks {needle:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

/// Unpack a .tar.gz with GNU tar into `dest` (created), as a consumer would.
pub fn untar(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "tar -xzf {} failed", archive.display());
}

/// Write a file, creating its parent directories.
pub fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A minimal set directory with the given package files.
pub fn make_set(root: &Path, packages: &[(&str, &str)]) -> PathBuf {
    write(
        &root.join("set.toml"),
        "[set]\nname = \"t\"\ntargets = [\"amd64\"]\nsource_date_epoch = 1700000000\n",
    );
    for (name, text) in packages {
        write(&root.join(format!("{name}.toml")), text);
    }
    root.to_owned()
}

/// A package file whose build script is `script` (no sources).
pub fn script_package(name: &str, script: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1\"\nlicense = \"MIT\"\n\n[build]\nscript = '''\n{script}\n'''\n"
    )
}
