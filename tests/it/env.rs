//! Pinned Debian environments: `hb lock`, lock validation, rootfs assembly, and a C fixture
//! built for amd64 and arm64 (emulated) in them. Tests that need the assembled environment
//! share one store (content-addressed and locked, so concurrent tests are safe), so the
//! ~90 MB of packages per arch are fetched and unpacked once per CI run.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A store shared by the tests of this file that use `fixtures/pinned`'s environment.
fn shared_store() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hb-shared-store")
}

fn pinned_fixture(hb: &Hb) -> PathBuf {
    hb.fixture("pinned")
}

#[test]
fn lock_names_an_unknown_debian_package() {
    let hb = Hb::new();
    let dir = hb.work().join("unknown");
    write(
        &dir.join("set.toml"),
        "[set]\nname = \"u\"\ntargets = [\"amd64\"]\nsource_date_epoch = 1\n\n[environment]\nkind = \"debian\"\nsuite = \"bookworm\"\npackages = [\"make\", \"hb-no-such-package\"]\n",
    );
    hb.run(&["lock", dir.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("unknown Debian package \"hb-no-such-package\" for amd64");
    assert!(!dir.join("set.lock").exists(), "no lock is written on failure");
}

#[test]
fn a_lock_edited_by_hand_is_a_located_error() {
    let hb = Hb::new();
    let set = pinned_fixture(&hb);
    let lock = set.join("set.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    // A field with a bad value.
    let line = text.lines().position(|l| l.contains("name = \"dash\"")).unwrap() + 1;
    let bad = text.replacen(
        "name = \"dash\", version = \"",
        "name = \"dash\", version = 7, x = \"",
        1,
    );
    std::fs::write(&lock, &bad).unwrap();
    let run = hb.run(&["build", "--arch", "amd64", set.to_str().unwrap()]);
    run.expect_code(2).expect_stderr(&format!("set.lock:{line}:"));
    // Broken syntax.
    std::fs::write(&lock, text.replacen("[[targets]]", "[[targets]", 1)).unwrap();
    hb.run(&["build", "--arch", "amd64", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("set.lock:");
    // A lock that no longer matches set.toml is out of date.
    std::fs::write(&lock, &text).unwrap();
    let toml = std::fs::read_to_string(set.join("set.toml")).unwrap();
    std::fs::write(set.join("set.toml"), toml.replace("\"mawk\"]", "\"mawk\", \"patch\"]")).unwrap();
    hb.run(&["build", "--arch", "amd64", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("is out of date")
        .expect_stderr("hb lock");
    assert!(!hb.store().join("envs").exists() || std::fs::read_dir(hb.store().join("envs")).unwrap().count() == 0);
}

#[test]
fn a_deb_that_does_not_match_the_lock_is_refused() {
    let hb = Hb::new();
    let set = pinned_fixture(&hb);
    let lock = set.join("set.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    // Pin `hostname` (a small deb) to a digest its bytes do not have.
    let line = text.lines().find(|l| l.contains("name = \"hostname\"")).unwrap();
    let real = line.split("sha256 = \"").nth(1).unwrap()[..64].to_string();
    let fake = format!("{}{}", &real[..63], if real.ends_with('0') { "1" } else { "0" });
    std::fs::write(&lock, text.replace(&real, &fake)).unwrap();
    let run = hb.run(&["build", "--arch", "amd64", set.to_str().unwrap()]);
    run.expect_code(2)
        .expect_stderr(&format!("sha256 mismatch: expected {fake}, got {real}"));
    assert!(!hb.store().join("sources").join(&real).exists());
    assert!(!hb.store().join("sources").join(&fake).exists());
    let envs: Vec<_> = std::fs::read_dir(hb.store().join("envs"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(
        envs.iter().all(|e| !e.as_ref().unwrap().path().join("rootfs").exists()),
        "no rootfs was stored"
    );
}

#[test]
fn the_fixture_builds_for_amd64_and_arm64_in_the_pinned_environment() {
    let hb = Hb::new();
    let set = pinned_fixture(&hb);
    let run = hb
        .command()
        .env("HB_STORE", shared_store())
        .args(["--json", "build", set.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for node in report["nodes"].as_array().unwrap() {
        let expected = if node["arch"] == "amd64" { "native" } else { "emulated" };
        assert_eq!(node["method"], expected, "{node}");
        assert_eq!(node["environment"]["kind"], "debian");
        assert_eq!(node["environment"]["impure"], false);
    }
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183u16)] {
        let archive = hb.work().join(format!("dist/pinned-linux-{arch}.tar.gz"));
        let unpack = hb.dir.path().join(arch);
        untar(&archive, &unpack);
        let bytes = std::fs::read(unpack.join(format!("pinned-linux-{arch}/bin/greet"))).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(
            u16::from_le_bytes([bytes[18], bytes[19]]),
            machine,
            "{arch} greet has the wrong e_machine"
        );
    }
    // The same lock, the same environment digest, the same bytes: a second build reuses all.
    let again = hb
        .command()
        .env("HB_STORE", shared_store())
        .args(["--json", "build", set.to_str().unwrap()])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(report["nodes"].as_array().unwrap().iter().all(|n| n["cached"] == true));
}

#[test]
fn the_rootfs_of_a_lock_is_verified_by_store_verify() {
    let hb = Hb::new();
    let set = pinned_fixture(&hb);
    let run = hb
        .command()
        .env("HB_STORE", shared_store())
        .args(["build", "--arch", "amd64", set.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let verify = hb
        .command()
        .env("HB_STORE", shared_store())
        .args(["--json", "store", "verify"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert!(report["environments_checked"].as_u64().unwrap() >= 1, "{report}");

    // The build's gc root names its environment (rootfs; no emulator for native amd64), so
    // gc keeps it.
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shared_store().join("roots/pinned-amd64.json")).unwrap()).unwrap();
    let environments: Vec<&str> = root["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(environments.len(), 1, "{root}");
    let env_dir = shared_store().join("envs").join(environments[0]);
    assert!(env_dir.join("meta.json").is_file(), "{}", env_dir.display());
    let gc = hb
        .command()
        .env("HB_STORE", shared_store())
        .args(["--json", "store", "gc", "--dry-run"])
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert!(gc["kept_environments"].as_u64().unwrap() >= 1, "{gc}");
    let removed = gc["removed"].to_string();
    assert!(!removed.contains(environments[0]), "{gc}");
}

#[test]
fn cross_builds_are_their_own_digest_domain() {
    let hb = Hb::new();
    let set = pinned_fixture(&hb);
    let build = |extra: &[&str]| -> serde_json::Value {
        let out = hb
            .command()
            .env("HB_STORE", shared_store())
            .args(["--json", "build", "--arch", "arm64"])
            .args(extra)
            .arg(&set)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let cross = build(&["--cross", "--out", "cross"]);
    let emulated = build(&["--out", "emulated"]);
    let greet = |r: &serde_json::Value| {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["package"] == "greet")
            .unwrap()
            .clone()
    };
    assert_eq!(greet(&cross)["method"], "cross");
    assert_eq!(greet(&emulated)["method"], "emulated");
    assert_ne!(
        greet(&cross)["input_hash"],
        greet(&emulated)["input_hash"],
        "methods never share outputs"
    );
    let unpack = hb.dir.path().join("cross-unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(hb.work().join("cross/pinned-linux-arm64.tar.gz"))
        .arg("-C")
        .arg(&unpack)
        .status()
        .unwrap()
        .success());
    let bytes = std::fs::read(unpack.join("pinned-linux-arm64/bin/greet")).unwrap();
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "a cross-built greet is aarch64"
    );
    // --cross without cross_packages is a clear error.
    let toml = std::fs::read_to_string(set.join("set.toml")).unwrap();
    let without: String = toml
        .lines()
        .filter(|l| !l.starts_with("cross_packages"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(set.join("set.toml"), without).unwrap();
    hb.run(&["build", "--cross", "--arch", "arm64", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("--cross needs environment.cross_packages");
}
