//! Bad input: each case exits 2 with a message naming the file, line and field (or the
//! URLs and digests), and leaves the store without outputs or half-written objects.

use crate::common::*;
use std::path::{Path, PathBuf};

const HEADER: &str = "[package]\nname = \"p\"\nversion = \"1\"\nlicense = \"MIT\"\n";

/// Run `hb build` on a set made of `packages`, expect exit 2, and return stderr.
fn bad_build(hb: &Hb, packages: &[(&str, &str)]) -> String {
    let set = make_set(&hb.work().join("bad"), packages);
    let run = hb.run(&["build", set.to_str().unwrap()]);
    run.expect_code(2);
    assert_store_has_no_objects(hb);
    run.stderr.clone()
}

fn assert_store_has_no_objects(hb: &Hb) {
    for line in hb.store_snapshot() {
        assert!(
            !line.starts_with("outputs/") && !line.starts_with("tmp/"),
            "bad input left {line} in the store"
        );
    }
}

#[track_caller]
fn contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    let hb = Hb::new();
    let err = bad_build(&hb, &[("p", "[package]\nname = \"p\"\nversion = 1.0.0\n")]);
    contains_all(&err, &["p.toml:3:", "error:"]);
}

#[test]
fn unknown_field_is_rejected() {
    let hb = Hb::new();
    let text = format!("{HEADER}colour = \"blue\"\n\n[build]\nscript = 'true'\n");
    let err = bad_build(&hb, &[("p", &text)]);
    contains_all(&err, &["p.toml:5:1", "unknown field `colour`", "expected one of"]);
}

#[test]
fn missing_sha256_is_rejected() {
    let hb = Hb::new();
    let text = format!("{HEADER}\n[[source]]\nurls = [\"https://example.org/p.tar.gz\"]\n\n[build]\nscript = 'true'\n");
    let err = bad_build(&hb, &[("p", &text)]);
    contains_all(&err, &["p.toml:", "source #1: missing field `sha256`", "sha256sum"]);
}

#[test]
fn malformed_sha256_is_rejected() {
    let hb = Hb::new();
    let text = format!("{HEADER}\n[[source]]\nurls = [\"https://example.org/p.tar.gz\"]\nsha256 = \"abc\"\n\n[build]\nscript = 'true'\n");
    let err = bad_build(&hb, &[("p", &text)]);
    contains_all(&err, &["p.toml:8:", "sha256: expected 64 hex digits"]);
}

#[test]
fn unknown_dependency_names_the_entry() {
    let hb = Hb::new();
    let text = format!("{HEADER}\n[build]\ndepends = [\"nope\"]\nscript = 'true'\n");
    let err = bad_build(&hb, &[("p", &text)]);
    contains_all(&err, &["p.toml:7:", "unknown dependency \"nope\""]);
}

#[test]
fn dependency_cycle_is_named() {
    let hb = Hb::new();
    let pkg = |name: &str, dep: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"1\"\nlicense = \"MIT\"\n\n[build]\ndepends = [\"{dep}\"]\nscript = 'true'\n")
    };
    let err = bad_build(
        &hb,
        &[("a", &pkg("a", "b")), ("b", &pkg("b", "c")), ("c", &pkg("c", "a"))],
    );
    contains_all(&err, &["dependency cycle: a -> b -> c -> a", "a.toml:7", "c.toml:7"]);
}

#[test]
fn duplicate_package_name_names_both_files() {
    let hb = Hb::new();
    let text = format!("{HEADER}\n[build]\nscript = 'true'\n");
    let err = bad_build(&hb, &[("one", &text), ("two", &text)]);
    contains_all(
        &err,
        &[
            "two.toml:2:",
            "duplicate package name \"p\"",
            "one.toml already defines it",
        ],
    );
}

/// A package whose single source is `file` (by file:// URL) with the given sha256.
fn file_source_package(file: &Path, sha256: &str) -> String {
    format!(
        "{HEADER}\n[[source]]\nurls = [\"file://{}\"]\nsha256 = \"{sha256}\"\n\n[build]\nscript = 'mkdir -p $out && cp -r . $out/'\n",
        file.display()
    )
}

#[test]
fn wrong_sha256_shows_expected_and_actual() {
    let hb = Hb::new();
    let file = hb.dir.path().join("src.tar.gz");
    std::fs::write(&file, b"not what the recipe pinned").unwrap();
    let actual = sha256_hex(b"not what the recipe pinned");
    let expected = "0".repeat(64);
    let err = bad_build(&hb, &[("p", &file_source_package(&file, &expected))]);
    contains_all(
        &err,
        &[
            &format!("sha256 mismatch: expected {expected}, got {actual}"),
            "every URL failed",
        ],
    );
    assert!(
        !hb.store().join("sources").join(&actual).exists(),
        "mismatching bytes must not enter the store"
    );
}

#[test]
fn unreachable_urls_are_each_reported() {
    let hb = Hb::new();
    // A port nothing listens on, and a name that never resolves (.invalid is reserved).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "{HEADER}\n[[source]]\nurls = [\"http://127.0.0.1:{port}/p.tar.gz\", \"https://hb-test.invalid/p.tar.gz\", \"mirror://nowhere/p.tar.gz\"]\nsha256 = \"{}\"\n\n[build]\nscript = 'true'\n",
        "1".repeat(64)
    );
    let err = bad_build(&hb, &[("p", &text)]);
    contains_all(
        &err,
        &[
            &format!("http://127.0.0.1:{port}/p.tar.gz: "),
            "https://hb-test.invalid/p.tar.gz: ",
            "mirror://nowhere/p.tar.gz: unknown mirror",
            "every URL failed",
        ],
    );
}

/// Write a gzipped tar with one raw entry (name, type flag, link target) — crafted by hand
/// because well-behaved tar writers refuse these names.
fn evil_tarball(path: &Path, entries: &[(&str, u8, &str)]) -> String {
    use std::io::Write;
    let mut tar = Vec::new();
    for (name, kind, link) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        let body: &[u8] = if *kind == b'0' { b"pwned\n" } else { b"" };
        header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = *kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&header);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(path, &bytes).unwrap();
    sha256_hex(&bytes)
}

fn unsafe_archive_is_refused(entries: &[(&str, u8, &str)], needles: &[&str]) {
    let hb = Hb::new();
    let file: PathBuf = hb.dir.path().join("evil.tar.gz");
    let sha = evil_tarball(&file, entries);
    let err = bad_build(&hb, &[("p", &file_source_package(&file, &sha))]);
    contains_all(&err, needles);
    assert!(!hb.dir.path().join("pwned").exists());
}

#[test]
fn archive_with_dotdot_entry_is_refused() {
    unsafe_archive_is_refused(
        &[("src/../../pwned", b'0', "")],
        &["p: unpacking source evil.tar.gz failed", ".."],
    );
}

#[test]
fn archive_with_escaping_symlink_is_refused() {
    unsafe_archive_is_refused(
        &[("src/link", b'2', "../../../../.."), ("src/link/pwned", b'0', "")],
        &["p: unpacking source evil.tar.gz failed", "src/link"],
    );
}

#[test]
fn archive_with_absolute_path_is_refused() {
    unsafe_archive_is_refused(
        &[("/tmp/pwned", b'0', "")],
        &["p: unpacking source evil.tar.gz failed", "/tmp/pwned"],
    );
}

#[test]
fn unknown_arch_is_a_usage_error() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    hb.run(&["build", "--arch", "sparc", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("unknown architecture \"sparc\"");
}

#[test]
fn missing_set_is_reported() {
    let hb = Hb::new();
    hb.run(&["build", "no/such/set"])
        .expect_code(2)
        .expect_stderr("no/such/set");
}
