//! End to end: the real toolchain set, from its pinned sources in its pinned Debian
//! environment, for amd64 (native) and arm64 (emulated): `hb build` writes both archives
//! with ELF files of the right machine, their programs run, and `hb verify-repro` rebuilds
//! everything twice and gets the same bytes. Slow (tens of minutes on 2 cores: arm64 runs
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
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["nodes"].as_array().unwrap().len() >= 12, "{report}");
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183u16)] {
        let archive = hb.work().join(format!("dist/tools-linux-{arch}.tar.gz"));
        let unpack = hb.dir.path().join(arch);
        untar(&archive, &unpack);
        let top = unpack.join(format!("tools-linux-{arch}"));
        let mut elves = 0;
        for entry in walkdir::WalkDir::new(&top).into_iter().filter_map(|e| e.ok()) {
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
}
