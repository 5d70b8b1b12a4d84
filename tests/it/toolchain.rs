//! End to end: the real toolchain set, fetched from its pinned sources and built (slow:
//! about 30 s on 2 cores, plus the download of ~5 MB of sources from the Debian mirror).

use crate::common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_toolchain_set_builds_and_its_programs_run() {
    let hb = Hb::new();
    let set = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/toolchain");
    let run = hb.run(&["--json", "build", set.to_str().unwrap()]);
    run.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["nodes"].as_array().unwrap().len() >= 6, "{report}");
    let archive = hb.work().join("dist/tools-linux-amd64.tar.gz");
    let unpack = hb.dir.path().join("unpacked");
    std::fs::create_dir_all(&unpack).unwrap();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpack)
        .status()
        .unwrap()
        .success());
    let bin = unpack.join("tools-linux-amd64/bin");
    // Every ELF file is an x86-64 one.
    let mut elves = 0;
    for entry in walkdir::WalkDir::new(unpack.join("tools-linux-amd64"))
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if bytes.starts_with(b"\x7fELF") {
            elves += 1;
            let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
            assert_eq!(
                machine,
                62,
                "{} is not x86-64 (e_machine {machine})",
                entry.path().display()
            );
        }
    }
    assert!(elves >= 6, "only {elves} ELF files");
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "echo round-trip | ./bzip2 | ./bzip2 -d && ./lua -e 'print(6*7)' && ./hello && echo x | ./lzop | ./lzop -d",
        )
        .current_dir(&bin)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "round-trip\n42\nHello, world!\nx\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
