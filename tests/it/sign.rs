//! `hb key`, `hb sign`, `hb attest`, `hb verify`: the real binary on small fake artifacts (two
//! `.tar.gz` built here, a build report and a verify-repro report written here, the set in
//! `fixtures/sign/set`), checked against the real programs consumers use: gpg, sqv, openssl,
//! sha256sum, pyspdxtools and the CycloneDX JSON schema validator (all installed by
//! `scripts/install-sign-tools.sh`; a missing one fails the test and says so). Each interop
//! test also shows that the program rejects a tampered file.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PASSPHRASE: &str = "correct horse battery staple";
const INSTALL_HINT: &str =
    "run scripts/install-sign-tools.sh (installs gpg, sqv, openssl, sha256sum and the SBOM validators)";
const ARCHES: [&str; 2] = ["amd64", "arm64"];

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// A program from PATH; a missing one fails the test with the install hint.
#[track_caller]
fn require(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{program} is not installed: {INSTALL_HINT}");
}

/// The virtual environment holding the Python validators (as the install script makes it).
#[track_caller]
fn python_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("HB_SIGN_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/hb-sign-tools"));
    let tool = dir.join("bin").join(name);
    assert!(tool.is_file(), "{} is not installed: {INSTALL_HINT}", tool.display());
    tool
}

struct Outcome {
    ok: bool,
    text: String,
}

fn outcome(command: &mut Command) -> Outcome {
    let output = command.stdin(Stdio::null()).output().expect("running a tool");
    Outcome {
        ok: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// A release in the making
// ---------------------------------------------------------------------------------------------

struct Release {
    hb: Hb,
    keys: PathBuf,
    trust: PathBuf,
    set: PathBuf,
    dist: PathBuf,
}

impl Release {
    /// A key, a trust store with its public keys, the set, two artifacts, the build report and a
    /// passing reproducibility report covering both artifacts.
    fn new() -> Release {
        let hb = Hb::new();
        let set = hb.fixture("sign/set");
        let dist = hb.work().join("dist");
        let release = Release {
            keys: hb.dir.path().join("keys"),
            trust: hb.dir.path().join("trust"),
            set,
            dist,
            hb,
        };
        let mut artifacts = Vec::new();
        for (index, arch) in ARCHES.iter().enumerate() {
            let path = release.dist.join(format!("tools-linux-{arch}.tar.gz"));
            write_artifact(&path, arch, index as u64);
            artifacts.push((arch.to_string(), path));
        }
        release.write_build_report(&artifacts);
        release.write_repro_report(
            "reproduced",
            &artifacts.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        );
        release
            .run(&["key", "generate", "--name", "Release Team <release@example.org>"])
            .expect_code(0);
        release
            .run(&["key", "export", "--out", release.trust.to_str().unwrap()])
            .expect_code(0);
        release
    }

    /// [`Release::new`], signed and attested.
    fn signed() -> Release {
        let release = Release::new();
        release.sign(&[]).expect_code(0);
        release.run(&["attest", release.set.to_str().unwrap()]).expect_code(0);
        release
    }

    fn artifact(&self, arch: &str) -> PathBuf {
        self.dist.join(format!("tools-linux-{arch}.tar.gz"))
    }

    fn artifact_args(&self) -> Vec<String> {
        ARCHES.iter().map(|a| self.artifact(a).display().to_string()).collect()
    }

    fn command(&self) -> Command {
        let mut command = self.hb.command();
        command.env("HB_KEYS", &self.keys).env("HB_KEY_PASSPHRASE", PASSPHRASE);
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        run_command(self.command(), args)
    }

    fn sign(&self, extra: &[&str]) -> Run {
        let mut args: Vec<String> = vec!["sign".into()];
        args.extend(self.artifact_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }

    fn verify(&self, target: &Path) -> Run {
        self.verify_with(&[], target, &self.trust)
    }

    /// `hb <flags> verify <target> --trust <trust>`.
    fn verify_with(&self, flags: &[&str], target: &Path, trust: &Path) -> Run {
        let mut args = flags.to_vec();
        args.extend(["verify", target.to_str().unwrap(), "--trust", trust.to_str().unwrap()]);
        self.run(&args)
    }

    fn trust_file(&self, extension: &str) -> PathBuf {
        std::fs::read_dir(&self.trust)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == extension))
            .expect("an exported key")
    }

    fn write_build_report(&self, artifacts: &[(String, PathBuf)]) {
        let nodes: Vec<serde_json::Value> = ARCHES
            .iter()
            .flat_map(|arch| {
                ["libgreet", "hello"].map(|package| {
                    serde_json::json!({
                        "package": package, "version": "1", "arch": arch,
                        "method": if *arch == "amd64" { "native" } else { "emulated" },
                        "environment": {"kind": "debian", "digest": format!("env-{arch}"), "impure": false},
                    })
                })
            })
            .collect();
        let report = serde_json::json!({
            "set": "tools",
            "hb_version": "0.1.0",
            "source_date_epoch": 1700000000u64,
            "arches": ARCHES,
            "started_unix": 1700000100u64,
            "finished_unix": 1700000160u64,
            "nodes": nodes,
            "artifacts": artifacts.iter().map(|(arch, path)| serde_json::json!({
                "file": path.file_name().unwrap().to_str().unwrap(),
                "arch": arch,
                "sha256": sha256_hex(&std::fs::read(path).unwrap()),
                "size": std::fs::metadata(path).unwrap().len(),
            })).collect::<Vec<_>>(),
        });
        write(
            &self.dist.join("build-report.json"),
            &serde_json::to_string_pretty(&report).unwrap(),
        );
    }

    /// A report as `hb verify-repro` writes it (the `hb-repro-report/1` contract).
    fn write_repro_report(&self, verdict: &str, covered: &[PathBuf]) {
        let report = serde_json::json!({
            "schema": "hb-repro-report/1",
            "verdict": verdict,
            "artifacts": covered.iter().map(|path| serde_json::json!({
                "file": path.file_name().unwrap().to_str().unwrap(),
                "arch": "amd64",
                "sha256": sha256_hex(&std::fs::read(path).unwrap()),
            })).collect::<Vec<_>>(),
            "rounds": 2,
            "variations": ["build-path", "tz", "umask"],
            "started_unix": 1700000300u64,
        });
        write(
            &self.dist.join("repro/report.json"),
            &serde_json::to_string_pretty(&report).unwrap(),
        );
    }

    /// The decoded in-toto statement of `tools.intoto.jsonl`, and the envelope.
    fn provenance(&self) -> (serde_json::Value, serde_json::Value) {
        use base64::Engine;
        let text = std::fs::read_to_string(self.dist.join("tools.intoto.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1, "one envelope per line");
        let envelope: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        (serde_json::from_slice(&payload).unwrap(), envelope)
    }
}

fn run_command(mut command: Command, args: &[&str]) -> Run {
    let output = command.args(args).stdin(Stdio::null()).output().expect("running hb");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        args: args.join(" "),
    }
}

/// A small deterministic artifact shaped like `hb build`'s: one top directory with `bin/`,
/// `lib/` and `hb-manifest.json`.
fn write_artifact(path: &Path, arch: &str, seed: u64) {
    let top = format!("tools-linux-{arch}");
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut binary = format!("\x7fELF fake hello for {arch}\n").into_bytes();
    while binary.len() < 48 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        binary.extend_from_slice(&state.to_le_bytes());
    }
    let manifest = serde_json::json!({
        "set": "tools", "arch": arch, "source_date_epoch": 1700000000u64,
        "packages": [
            {"name": "hello", "version": "2.10", "license": "GPL-3.0-or-later"},
            {"name": "libgreet", "version": "1.0", "license": "MIT"},
        ],
    });
    let files: Vec<(String, Vec<u8>, u32)> = vec![
        (format!("{top}/bin/hello"), binary, 0o755),
        (
            format!("{top}/hb-manifest.json"),
            serde_json::to_vec_pretty(&manifest).unwrap(),
            0o644,
        ),
        (format!("{top}/lib/libgreet.a"), b"!<arch>\n".to_vec(), 0o644),
        (
            format!("{top}/share/doc/hello/README"),
            b"GNU hello, built by hb\n".to_vec(),
            0o644,
        ),
    ];
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1700000000);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &name, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A copy of `file` with one byte flipped, next to it (`<name>.tampered`).
fn tampered_copy(file: &Path) -> PathBuf {
    let copy = file.with_extension("tampered");
    std::fs::copy(file, &copy).unwrap();
    let middle = std::fs::metadata(&copy).unwrap().len() as usize / 2;
    flip_byte(&copy, middle);
    copy
}

#[track_caller]
fn lines_with(run: &Run, prefix: &str) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// One of the `failed` lines of `run` starts with `prefix`.
#[track_caller]
fn assert_failed(failed: &[String], prefix: &str, run: &Run) {
    assert!(failed.iter().any(|l| l.starts_with(prefix)), "{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[test]
fn key_generate_writes_encrypted_private_keys_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let release = Release::new();
    let list = release.run(&["--json", "key", "list"]);
    list.expect_code(0);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let key = &listed["keys"][0];
    assert_eq!(key["name"], "Release Team <release@example.org>");
    assert_eq!(key["openpgp_fingerprint"].as_str().unwrap().len(), 40);
    let dir = PathBuf::from(key["dir"].as_str().unwrap());
    for (name, mode) in [
        ("openpgp.key.asc", 0o600),
        ("ecdsa.key.pem", 0o600),
        ("openpgp.rev.asc", 0o600),
        ("openpgp.pub.asc", 0o644),
        ("ecdsa.pub.pem", 0o644),
    ] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(!text.contains(PASSPHRASE), "{name} holds the passphrase");
    }
    let pem = std::fs::read_to_string(dir.join("ecdsa.key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{pem}");
    // The OpenPGP secret key is protected: gpg cannot use it without the passphrase.
    assert_eq!(
        std::fs::metadata(&release.keys).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // openssl reads the encrypted PKCS#8 key with the passphrase, and refuses a wrong one.
    let openssl = require("openssl");
    let read = |pass: &str| {
        outcome(
            Command::new(&openssl)
                .args(["pkey", "-noout", "-in"])
                .arg(dir.join("ecdsa.key.pem"))
                .args(["-passin", &format!("pass:{pass}")]),
        )
    };
    assert!(read(PASSPHRASE).ok, "{}", read(PASSPHRASE).text);
    assert!(!read("wrong").ok);

    let export = release.run(&["key", "export"]);
    export.expect_code(0);
    assert!(export.stdout.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(export.stdout.contains("-----BEGIN PUBLIC KEY-----"));
    assert!(!export.stdout.contains("PRIVATE"));
}

#[test]
fn key_generate_needs_a_passphrase_and_never_takes_it_from_argv() {
    let release = Release::new();
    let mut command = release.hb.command();
    command.env("HB_KEYS", release.hb.dir.path().join("other-keys"));
    let run = run_command(command, &["key", "generate", "--name", "X <x@example.org>"]);
    run.expect_code(2)
        .expect_stderr("no passphrase")
        .expect_stderr("HB_KEY_PASSPHRASE");
    let run = release.run(&["key", "generate", "--name", "X <x@example.org>", "--passphrase", "p"]);
    run.expect_code(2);
    // From a file: its first line.
    let file = release.hb.dir.path().join("pass.txt");
    write(&file, "from a file\n");
    let mut command = release.hb.command();
    command.env("HB_KEYS", release.hb.dir.path().join("file-keys"));
    run_command(
        command,
        &[
            "-q",
            "key",
            "generate",
            "--name",
            "F <f@example.org>",
            "--passphrase-file",
            file.to_str().unwrap(),
        ],
    )
    .expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// The whole flow, and what consumers' programs say about it
// ---------------------------------------------------------------------------------------------

#[test]
fn sign_attest_verify_passes_every_check() {
    let release = Release::signed();
    for name in [
        "SHA256SUMS",
        "SHA256SUMS.asc",
        "hb-sign.json",
        "tools.intoto.jsonl",
        "tools-linux-amd64.tar.gz.asc",
        "tools-linux-amd64.tar.gz.sig",
        "tools-linux-amd64.tar.gz.spdx.json",
        "tools-linux-amd64.tar.gz.cdx.json",
        "tools-linux-arm64.tar.gz.spdx.json",
    ] {
        assert!(release.dist.join(name).is_file(), "{name} was not written");
    }
    let run = release.verify(&release.dist);
    run.expect_code(0);
    for expected in [
        "ok   openpgp SHA256SUMS",
        "ok   sha256 tools-linux-amd64.tar.gz",
        "ok   openpgp tools-linux-amd64.tar.gz (Release Team <release@example.org>",
        "ok   cosign tools-linux-arm64.tar.gz",
        "ok   provenance tools.intoto.jsonl",
        "ok   subject tools-linux-arm64.tar.gz",
        "ok   sbom tools-linux-amd64.tar.gz.cdx.json",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stdout
        );
    }
    assert!(lines_with(&run, "FAIL").is_empty(), "{}", run.stdout);

    // One file alone, and --json.
    release.verify(&release.artifact("amd64")).expect_code(0);
    let json = release.verify_with(&["--json"], &release.dist, &release.trust);
    json.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert!(doc["checks"].as_array().unwrap().len() >= 14, "{}", json.stdout);
    // -q: only failures (none).
    let quiet = release.verify_with(&["-q"], &release.dist, &release.trust);
    quiet.expect_code(0);
    assert!(quiet.stdout.is_empty(), "{}", quiet.stdout);
}

#[test]
fn openpgp_signatures_verify_with_gpg() {
    let gpg = require("gpg");
    let release = Release::signed();
    let home = release.hb.dir.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&std::ffi::OsStr]| outcome(Command::new(&gpg).env("GNUPGHOME", &home).arg("--batch").args(args));
    let import = gpg(&["--import".as_ref(), release.trust_file("asc").as_os_str()]);
    assert!(import.ok, "{}", import.text);
    for name in ["tools-linux-amd64.tar.gz", "tools-linux-arm64.tar.gz", "SHA256SUMS"] {
        let file = release.dist.join(name);
        let signature = release.dist.join(format!("{name}.asc"));
        let good = gpg(&["--verify".as_ref(), signature.as_os_str(), file.as_os_str()]);
        assert!(good.ok && good.text.contains("Good signature"), "{name}: {}", good.text);
        let bad = gpg(&[
            "--verify".as_ref(),
            signature.as_os_str(),
            tampered_copy(&file).as_os_str(),
        ]);
        assert!(
            !bad.ok && bad.text.contains("BAD signature"),
            "{name} tampered: {}",
            bad.text
        );
    }
}

#[test]
fn openpgp_signatures_verify_with_sqv() {
    let sqv = require("sqv");
    let release = Release::signed();
    let keyring = release.trust_file("asc");
    for name in ["tools-linux-amd64.tar.gz", "SHA256SUMS"] {
        let file = release.dist.join(name);
        let signature = release.dist.join(format!("{name}.asc"));
        let good = outcome(
            Command::new(&sqv)
                .arg("--keyring")
                .arg(&keyring)
                .arg(&signature)
                .arg(&file),
        );
        assert!(good.ok, "{name}: {}", good.text);
        let bad = outcome(
            Command::new(&sqv)
                .arg("--keyring")
                .arg(&keyring)
                .arg(&signature)
                .arg(tampered_copy(&file)),
        );
        assert!(!bad.ok, "sqv accepted a tampered {name}: {}", bad.text);
    }
}

#[test]
fn cosign_signatures_verify_with_openssl() {
    require("openssl");
    require("base64");
    let bash = require("bash");
    let release = Release::signed();
    let pem = release.trust_file("pem");
    let check = |file: &Path, signature: &Path| {
        outcome(Command::new(&bash).arg("-c").arg(format!(
            "openssl dgst -sha256 -verify '{}' -signature <(base64 -d '{}') '{}'",
            pem.display(),
            signature.display(),
            file.display()
        )))
    };
    for arch in ARCHES {
        let file = release.artifact(arch);
        let signature = release.dist.join(format!("tools-linux-{arch}.tar.gz.sig"));
        let good = check(&file, &signature);
        assert!(good.ok && good.text.contains("Verified OK"), "{arch}: {}", good.text);
        let bad = check(&tampered_copy(&file), &signature);
        assert!(
            !bad.ok && bad.text.contains("Verification failure"),
            "{arch} tampered: {}",
            bad.text
        );
    }
}

#[test]
fn sha256sums_pass_sha256sum_strict() {
    let sha256sum = require("sha256sum");
    let release = Release::signed();
    let sums = std::fs::read_to_string(release.dist.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    let check = || {
        outcome(
            Command::new(&sha256sum)
                .args(["-c", "--strict", "SHA256SUMS"])
                .current_dir(&release.dist),
        )
    };
    let good = check();
    assert!(good.ok, "{}", good.text);
    flip_byte(&release.artifact("arm64"), 300);
    let bad = check();
    assert!(
        !bad.ok && bad.text.contains("tools-linux-arm64.tar.gz: FAILED"),
        "{}",
        bad.text
    );
}

#[test]
fn spdx_documents_pass_pyspdxtools() {
    let pyspdxtools = python_tool("pyspdxtools");
    let release = Release::signed();
    let validate = |path: &Path| {
        let result = outcome(Command::new(&pyspdxtools).arg("-i").arg(path));
        // pyspdxtools exits 0 on unparsable JSON but logs ERROR: both count.
        let ok = result.ok && !result.text.contains("ERROR");
        (ok, result.text)
    };
    for arch in ARCHES {
        let path = release.dist.join(format!("tools-linux-{arch}.tar.gz.spdx.json"));
        let (ok, text) = validate(&path);
        assert!(ok, "{arch}: {text}");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(doc["files"].as_array().unwrap().len(), 4);
        let packages = doc["packages"].as_array().unwrap();
        let hello = packages.iter().find(|p| p["name"] == "hello").unwrap();
        assert_eq!(hello["versionInfo"], "2.10");
        assert_eq!(hello["licenseDeclared"], "GPL-3.0-or-later");
        assert_eq!(
            hello["downloadLocation"],
            "https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz"
        );
        assert!(hello["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .starts_with("pkg:generic/hello@2.10?"));
        let gcc = packages.iter().find(|p| p["name"] == "gcc-12").unwrap();
        assert_eq!(
            gcc["externalRefs"][0]["referenceLocator"],
            format!("pkg:deb/debian/gcc-12@12.2.0-14%2Bdeb12u1?arch={arch}")
        );
        let kinds: Vec<&str> = doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["relationshipType"].as_str().unwrap())
            .collect();
        for kind in [
            "DESCRIBES",
            "CONTAINS",
            "GENERATED_FROM",
            "BUILD_TOOL_OF",
            "BUILD_DEPENDENCY_OF",
        ] {
            assert!(kinds.contains(&kind), "{arch}: no {kind} relationship");
        }
        // The emulated arm64 build also names its emulator.
        assert_eq!(
            packages.iter().any(|p| p["name"] == "qemu-user-static"),
            arch == "arm64"
        );
    }
    // A tampered document: a file without its SHA-1 (SPDX 2.3 requires one).
    let path = release.dist.join("tools-linux-amd64.tar.gz.spdx.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["files"][0]["checksums"].as_array_mut().unwrap().remove(0);
    let tampered = release.hb.dir.path().join("tampered.spdx.json");
    write(&tampered, &doc.to_string());
    let (ok, text) = validate(&tampered);
    assert!(!ok, "pyspdxtools accepted a tampered document: {text}");
    let truncated = release.hb.dir.path().join("truncated.spdx.json");
    write(&truncated, &std::fs::read_to_string(&path).unwrap()[..500]);
    assert!(!validate(&truncated).0);
}

#[test]
fn cyclonedx_documents_pass_the_schema() {
    let python = python_tool("python");
    let release = Release::signed();
    // One interpreter for several files: loading the schema takes most of the time.
    const VALIDATE: &str = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        validator = JsonStrictValidator(SchemaVersion.V1_6)\n\
        failed = 0\n\
        for path in sys.argv[1:]:\n\
        \x20   error = validator.validate_str(open(path).read())\n\
        \x20   print(path, error or 'valid')\n\
        \x20   failed += bool(error)\n\
        sys.exit(1 if failed else 0)\n";
    let validate = |paths: &[PathBuf]| outcome(Command::new(&python).args(["-c", VALIDATE]).args(paths));
    // The two documents hb wrote, and a tampered copy of one: checked in one run.
    let path = release.dist.join("tools-linux-amd64.tar.gz.cdx.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["components"][0]["hashes"] = serde_json::json!([{"alg": "SHA-256", "content": "not hex"}]);
    let tampered = release.hb.dir.path().join("tampered.cdx.json");
    write(&tampered, &doc.to_string());
    let mut documents: Vec<PathBuf> = ARCHES
        .iter()
        .map(|arch| release.dist.join(format!("tools-linux-{arch}.tar.gz.cdx.json")))
        .collect();
    documents.push(tampered.clone());
    let result = validate(&documents);
    for document in &documents[..2] {
        assert!(
            result.text.contains(&format!("{} valid", document.display())),
            "{}",
            result.text
        );
    }
    assert!(
        !result.ok && !result.text.contains(&format!("{} valid", tampered.display())),
        "the schema accepted a tampered document: {}",
        result.text
    );
    for arch in ARCHES {
        let path = release.dist.join(format!("tools-linux-{arch}.tar.gz.cdx.json"));
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["specVersion"], "1.6");
        assert!(doc["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        assert_eq!(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(doc["metadata"]["component"]["components"].as_array().unwrap().len(), 4);
        let libgreet = doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "libgreet")
            .unwrap();
        assert_eq!(libgreet["licenses"][0]["expression"], "MIT");
        let tools = doc["formulation"][0]["components"].as_array().unwrap();
        assert!(tools
            .iter()
            .any(|t| t["purl"] == format!("pkg:deb/debian/make@4.3-4.1?arch={arch}")));
    }
}

#[test]
fn provenance_is_slsa_v1_in_a_dsse_envelope() {
    let release = Release::signed();
    let (statement, envelope) = release.provenance();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let listed: serde_json::Value = serde_json::from_str(&release.run(&["--json", "key", "list"]).stdout).unwrap();
    assert_eq!(envelope["signatures"][0]["keyid"], listed["keys"][0]["ecdsa_key_id"]);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = statement["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 2);
    for arch in ARCHES {
        let sha = sha256_hex(&std::fs::read(release.artifact(arch)).unwrap());
        assert!(
            subjects
                .iter()
                .any(|s| s["name"] == format!("tools-linux-{arch}.tar.gz") && s["digest"]["sha256"] == sha),
            "{statement}"
        );
    }
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(definition["externalParameters"]["set"]["name"], "tools");
    assert_eq!(
        definition["externalParameters"]["targets"],
        serde_json::json!(["amd64", "arm64"])
    );
    assert_eq!(definition["externalParameters"]["method"]["arm64"], "emulated");
    assert_eq!(definition["externalParameters"]["sourceDateEpoch"], 1700000000);
    assert_eq!(definition["internalParameters"]["reproGate"]["enforced"], true);
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    let uris: Vec<&str> = dependencies.iter().filter_map(|d| d["uri"].as_str()).collect();
    assert!(
        uris.contains(&"https://ftp.gnu.org/gnu/hello/hello-2.10.tar.gz"),
        "{uris:?}"
    );
    assert!(uris.contains(&"file:libgreet"), "{uris:?}");
    assert!(uris
        .iter()
        .any(|u| u.starts_with("mirror://debian/pool/main/g/gcc-12/") && u.ends_with("_arm64.deb")));
    assert!(
        uris.iter().any(|u| u.contains("qemu-user-static")),
        "the emulator is an input of arm64"
    );
    let source = dependencies.iter().find(|d| d["name"] == "hello-2.10").unwrap();
    assert_eq!(
        source["digest"]["sha256"],
        "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"
    );
    let recipes = dependencies.iter().find(|d| d["name"] == "recipe-set:tools").unwrap();
    assert_eq!(recipes["digest"]["sha256"].as_str().unwrap().len(), 64);
    let run = &statement["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "https://hb.invalid/builder/local/v1");
    assert_eq!(run["builder"]["version"]["hb"], "0.1.0");
    assert_eq!(run["metadata"]["startedOn"], "2023-11-14T22:15:00Z");
    assert_eq!(run["metadata"]["finishedOn"], "2023-11-14T22:16:00Z");
    let byproducts = run["byproducts"].as_array().unwrap();
    let repro = byproducts.iter().find(|b| b["name"] == "verify-repro-report").unwrap();
    assert_eq!(repro["annotations"]["verdict"], "reproduced");
    assert_eq!(repro["annotations"]["rounds"], 2);
    assert_eq!(repro["annotations"]["variations"][1], "tz");
    let sbom = byproducts
        .iter()
        .find(|b| b["name"] == "tools-linux-amd64.tar.gz.spdx.json")
        .unwrap();
    let bytes = std::fs::read(release.dist.join("tools-linux-amd64.tar.gz.spdx.json")).unwrap();
    assert_eq!(sbom["digest"]["sha256"], sha256_hex(&bytes));
}

#[test]
fn provenance_records_the_git_commit_of_the_recipe_set() {
    let git = require("git");
    let release = Release::new();
    let work = release.hb.work();
    let git_run = |args: &[&str]| {
        let result = outcome(
            Command::new(&git)
                .args(["-c", "user.name=hb test", "-c", "user.email=test@example.org", "-C"])
                .arg(&work)
                .args(args),
        );
        assert!(result.ok, "git {args:?}: {}", result.text);
        result.text
    };
    git_run(&["init", "-q"]);
    git_run(&["add", "sign"]);
    git_run(&["commit", "-q", "-m", "the set"]);
    let head = git_run(&["rev-parse", "HEAD"]).trim().to_string();
    let recipe_set = |release: &Release| {
        let (statement, _) = release.provenance();
        statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "recipe-set:tools")
            .unwrap()
            .clone()
    };
    release.run(&["attest", release.set.to_str().unwrap()]).expect_code(0);
    let clean = recipe_set(&release);
    assert_eq!(clean["digest"]["gitCommit"], head);
    assert_eq!(clean["annotations"]["git"], "clean");
    // The path inside the repository, the same in every clone.
    assert_eq!(clean["annotations"]["path"], "sign/set");
    write(&release.set.join("notes.txt"), "uncommitted\n");
    release.run(&["attest", release.set.to_str().unwrap()]).expect_code(0);
    let dirty = recipe_set(&release);
    assert_eq!(dirty["annotations"]["git"], "dirty");
    assert_ne!(
        dirty["digest"]["sha256"], clean["digest"]["sha256"],
        "the set digest covers every file"
    );
}

#[test]
fn attest_output_is_deterministic() {
    let release = Release::signed();
    let again = release.hb.dir.path().join("again");
    release
        .run(&[
            "attest",
            release.set.to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ])
        .expect_code(0);
    for name in [
        "tools-linux-amd64.tar.gz.spdx.json",
        "tools-linux-arm64.tar.gz.cdx.json",
        "tools.intoto.jsonl",
    ] {
        assert_eq!(
            std::fs::read(release.dist.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs between two runs"
        );
    }
}

#[test]
fn no_repro_gate_is_recorded_in_the_signing_record_and_the_provenance() {
    let release = Release::new();
    std::fs::remove_file(release.dist.join("repro/report.json")).unwrap();
    release.sign(&[]).expect_code(2).expect_stderr("hb verify-repro");
    release
        .sign(&["--no-repro-gate"])
        .expect_code(0)
        .expect_stderr("--no-repro-gate");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(release.dist.join("hb-sign.json")).unwrap()).unwrap();
    assert_eq!(record["repro_gate"]["enforced"], false);
    release.run(&["attest", release.set.to_str().unwrap()]).expect_code(2);
    release
        .run(&["attest", release.set.to_str().unwrap(), "--no-repro-gate"])
        .expect_code(0);
    let (statement, _) = release.provenance();
    let gate = &statement["predicate"]["buildDefinition"]["internalParameters"]["reproGate"];
    assert_eq!(gate["enforced"], false);
    assert_eq!(
        gate["bypassedBy"],
        serde_json::json!(["hb attest --no-repro-gate", "hb sign --no-repro-gate"])
    );
    release.verify(&release.dist).expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// Bad input and failed checks
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_passphrase_is_refused_without_showing_it() {
    let release = Release::new();
    let mut command = release.command();
    command.env("HB_KEY_PASSPHRASE", "not the passphrase");
    let mut args = vec!["sign".to_string()];
    args.extend(release.artifact_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_command(command, &args);
    run.expect_code(2)
        .expect_stderr("wrong passphrase for the OpenPGP key")
        .expect_stderr("HB_KEY_PASSPHRASE");
    assert!(!run.stderr.contains("not the passphrase") && !run.stderr.contains(PASSPHRASE));
    assert!(
        !release.dist.join("SHA256SUMS").exists(),
        "nothing is written on failure"
    );
}

#[test]
fn missing_key_is_bad_input() {
    let release = Release::new();
    let mut command = release.command();
    command.env("HB_KEYS", release.hb.dir.path().join("no-keys"));
    let mut args = vec!["sign".to_string()];
    args.extend(release.artifact_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_command(command, &args)
        .expect_code(2)
        .expect_stderr("no keys in the key directory")
        .expect_stderr("hb key generate");
    release
        .run(&["key", "export", "--key", "nobody@example.org"])
        .expect_code(2)
        .expect_stderr("matches \"nobody@example.org\"");
}

#[test]
fn a_flipped_byte_in_an_artifact_fails_verification() {
    let release = Release::signed();
    flip_byte(&release.artifact("amd64"), 1000);
    let run = release.verify(&release.dist);
    run.expect_code(1).expect_stderr("check(s) failed");
    let failed = lines_with(&run, "FAIL");
    for expected in [
        "FAIL sha256 tools-linux-amd64.tar.gz: SHA256SUMS says",
        "FAIL openpgp tools-linux-amd64.tar.gz: BAD signature",
        "FAIL cosign tools-linux-amd64.tar.gz: BAD signature",
        "FAIL subject tools-linux-amd64.tar.gz: the provenance says sha256",
    ] {
        assert!(
            failed.iter().any(|l| l.starts_with(expected)),
            "no {expected:?} in:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("ok   sha256 tools-linux-arm64.tar.gz"),
        "{}",
        run.stdout
    );
    release.verify(&release.artifact("amd64")).expect_code(1);
    release.verify(&release.artifact("arm64")).expect_code(0);
}

#[test]
fn an_edited_sha256sums_fails_verification() {
    let release = Release::signed();
    let path = release.dist.join("SHA256SUMS");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(&text[..1], if &text[..1] == "0" { "1" } else { "0" }, 1);
    std::fs::write(&path, edited).unwrap();
    let run = release.verify(&release.dist);
    run.expect_code(1);
    let failed = lines_with(&run, "FAIL");
    assert_failed(&failed, "FAIL openpgp SHA256SUMS: BAD signature", &run);
    assert_failed(&failed, "FAIL sha256 tools-linux-amd64.tar.gz", &run);
    // A SHA256SUMS that is not even in the format.
    std::fs::write(&path, "garbage\n").unwrap();
    let run = release.verify(&release.dist);
    run.expect_code(1);
    assert!(
        run.stdout.contains("FAIL sha256 SHA256SUMS: malformed"),
        "{}",
        run.stdout
    );
}

#[test]
fn signatures_by_a_key_outside_the_trust_store_fail() {
    let release = Release::signed();
    // Another key, trusted alone.
    let other_keys = release.hb.dir.path().join("other-keys");
    let other_trust = release.hb.dir.path().join("other-trust");
    let mut command = release.command();
    command.env("HB_KEYS", &other_keys);
    run_command(
        command,
        &["-q", "key", "generate", "--name", "Mallory <mallory@example.org>"],
    )
    .expect_code(0);
    let mut command = release.command();
    command.env("HB_KEYS", &other_keys);
    run_command(
        command,
        &["-q", "key", "export", "--out", other_trust.to_str().unwrap()],
    )
    .expect_code(0);
    let run = release.verify_with(&[], &release.dist, &other_trust);
    run.expect_code(1);
    let failed = lines_with(&run, "FAIL");
    assert!(
        failed.iter().any(
            |l| l.starts_with("FAIL openpgp tools-linux-amd64.tar.gz: signed by key")
                && l.ends_with("which is not in the trust store")
        ),
        "{}",
        run.stdout
    );
    assert_failed(&failed, "FAIL cosign tools-linux-amd64.tar.gz", &run);
    assert_failed(&failed, "FAIL provenance tools.intoto.jsonl: signed by key", &run);
    // An empty trust store is bad input.
    let empty = release.hb.dir.path().join("empty-trust");
    std::fs::create_dir_all(&empty).unwrap();
    release
        .verify_with(&[], &release.dist, &empty)
        .expect_code(2)
        .expect_stderr("holds no public keys");
}

#[test]
fn truncated_signature_files_fail() {
    let release = Release::signed();
    for suffix in ["asc", "sig"] {
        let path = release.dist.join(format!("tools-linux-arm64.tar.gz.{suffix}"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    }
    let run = release.verify(&release.artifact("arm64"));
    run.expect_code(1);
    let failed = lines_with(&run, "FAIL");
    assert_failed(
        &failed,
        "FAIL openpgp tools-linux-arm64.tar.gz: not a valid OpenPGP signature",
        &run,
    );
    assert_failed(&failed, "FAIL cosign tools-linux-arm64.tar.gz: not", &run);
}

#[test]
fn provenance_whose_subject_does_not_match_fails() {
    let release = Release::signed();
    // A different artifact, properly signed (no report covers it), but the provenance still
    // names the old one.
    write_artifact(&release.artifact("amd64"), "amd64", 99);
    release.sign(&["--no-repro-gate"]).expect_code(0);
    let run = release.verify(&release.dist);
    run.expect_code(1);
    let failed = lines_with(&run, "FAIL");
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    assert!(
        failed[0].starts_with("FAIL subject tools-linux-amd64.tar.gz: the provenance says sha256"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ok   provenance tools.intoto.jsonl"),
        "{}",
        run.stdout
    );
}

#[test]
fn artifacts_not_covered_by_a_passing_repro_report_are_refused() {
    let release = Release::new();
    // The report covers only the arm64 artifact.
    release.write_repro_report("reproduced", &[release.artifact("arm64")]);
    release
        .sign(&[])
        .expect_code(1)
        .expect_stderr("tools-linux-amd64.tar.gz is not covered by a passing reproducibility report")
        .expect_stderr("--no-repro-gate");
    assert!(!release.dist.join("SHA256SUMS").exists());
    // A report whose verdict is not "reproduced" covers nothing.
    release.write_repro_report("differs", &[release.artifact("amd64"), release.artifact("arm64")]);
    release.sign(&[]).expect_code(1).expect_stderr("verdict is \"differs\"");
    release
        .run(&["attest", release.set.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr("verdict is \"differs\"");
    // A report elsewhere, named with --repro-report.
    let elsewhere = release.hb.dir.path().join("report.json");
    release.write_repro_report("reproduced", &[release.artifact("amd64"), release.artifact("arm64")]);
    std::fs::rename(release.dist.join("repro/report.json"), &elsewhere).unwrap();
    release
        .sign(&["--repro-report", elsewhere.to_str().unwrap()])
        .expect_code(0);
}

#[test]
fn attest_refuses_artifacts_that_differ_from_the_build_report() {
    let release = Release::new();
    flip_byte(&release.artifact("arm64"), 100);
    release
        .run(&["attest", release.set.to_str().unwrap(), "--no-repro-gate"])
        .expect_code(1)
        .expect_stderr("tools-linux-arm64.tar.gz differs from")
        .expect_stderr("hb build");
    std::fs::remove_file(release.dist.join("build-report.json")).unwrap();
    release
        .run(&["attest", release.set.to_str().unwrap(), "--no-repro-gate"])
        .expect_code(2)
        .expect_stderr("build-report.json does not exist");
}

#[test]
fn verify_of_a_missing_path_is_bad_input() {
    let release = Release::signed();
    release
        .verify(&release.dist.join("nope.tar.gz"))
        .expect_code(2)
        .expect_stderr("nope.tar.gz does not exist");
    // An unsigned artifact in a signed directory is reported.
    write_artifact(&release.dist.join("extra-linux-amd64.tar.gz"), "amd64", 5);
    let run = release.verify(&release.dist);
    run.expect_code(1);
    assert!(
        run.stdout
            .contains("FAIL signed extra-linux-amd64.tar.gz: not listed in SHA256SUMS nor named by a provenance"),
        "{}",
        run.stdout
    );
}
