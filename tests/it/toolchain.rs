//! End to end: the real toolchain set, from its pinned sources in its pinned Debian
//! environment, for amd64 (native) and arm64 (emulated): `hb build` writes both archives
//! with ELF files of the right machine, their programs run, `hb verify-repro` rebuilds
//! everything twice and gets the same bytes, and `--cross` builds arm64 in its own digest
//! domain. Slow (tens of minutes on 2 cores: arm64 runs
//! under qemu), so it is one test that does it all in order with one store.

use crate::common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_toolchain_builds_for_both_arches_and_reproduces() {
    let hb = Hb::new();
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/toolchain");
    let run = hb.run(&["--json", "build", set.to_str().unwrap()]);
    run.expect_code(0);
    let first_report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(first_report["nodes"].as_array().unwrap().len() >= 12, "{first_report}");
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183u16)] {
        let archive = hb.work().join(format!("dist/tools-linux-{arch}.tar.gz"));
        let unpack = hb.dir.path().join(arch);
        untar(&archive, &unpack);
        let top = unpack.join(format!("tools-linux-{arch}"));
        let elves = count_elves(&top, machine);
        assert!(elves >= 6, "{arch}: only {elves} ELF files");
        if arch == "amd64" {
            let out = Command::new("sh")
                .arg("-c")
                .arg("echo round-trip | ./bzip2 | ./bzip2 -d && ./lua -e 'print(6*7)' && echo x | ./lzop | ./lzop -d")
                .current_dir(top.join("bin"))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "round-trip\n42\nx\n",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let built: Vec<Vec<u8>> = ["amd64", "arm64"]
        .iter()
        .map(|a| std::fs::read(hb.work().join(format!("dist/tools-linux-{a}.tar.gz"))).unwrap())
        .collect();

    // The gate: two fresh rounds per arch under varied conditions, same bytes as `hb build`.
    let run = hb.run(&["--json", "verify-repro", "--out", "verified", set.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["verdict"], "reproduced", "{}\n{}", run.stdout, run.stderr);
    run.expect_code(0);
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let verified = std::fs::read(hb.work().join(format!("verified/tools-linux-{arch}.tar.gz"))).unwrap();
        assert!(
            verified == built[i],
            "{arch}: verify-repro's artifact differs from hb build's"
        );
    }

    // --cross: arm64 with Debian's cross toolchain in the amd64 environment (smoke tests
    // still run, emulated). Its own digest domain: no input hash shared with the emulated
    // build, and every ELF is aarch64.
    let run = hb.run(&[
        "--json",
        "build",
        "--cross",
        "--arch",
        "arm64",
        "--out",
        "cross",
        set.to_str().unwrap(),
    ]);
    run.expect_code(0);
    let cross: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let nodes = cross["nodes"].as_array().unwrap();
    assert!(
        nodes.len() >= 6 && nodes.iter().all(|n| n["method"] == "cross"),
        "{cross}"
    );
    let emulated_hashes = emulated_arm64_hashes(&first_report);
    assert!(
        nodes
            .iter()
            .all(|n| !emulated_hashes.contains(&n["input_hash"].as_str().unwrap().to_string())),
        "{cross}"
    );
    let unpack = hb.dir.path().join("cross");
    untar(&hb.work().join("cross/tools-linux-arm64.tar.gz"), &unpack);
    assert!(count_elves(&unpack.join("tools-linux-arm64"), 183) >= 6);
}

fn emulated_arm64_hashes(report: &serde_json::Value) -> Vec<String> {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["arch"] == "arm64")
        .map(|n| {
            assert_eq!(n["method"], "emulated", "{n}");
            n["input_hash"].as_str().unwrap().to_string()
        })
        .collect()
}

/// How many ELF files are under `dir`; panics on one whose e_machine is not `machine`.
fn count_elves(dir: &Path, machine: u16) -> usize {
    let mut elves = 0;
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()) {
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if bytes.starts_with(b"\x7fELF") {
            elves += 1;
            let found = u16::from_le_bytes([bytes[18], bytes[19]]);
            assert_eq!(found, machine, "{} has e_machine {found}", entry.path().display());
        }
    }
    elves
}
