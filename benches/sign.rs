//! Benchmark: `hb sign` + `hb attest` on two synthetic artifacts of realistic size (2 × 20 MB
//! `.tar.gz`, 40 files each), and hb's file hashing against `sha256sum` (and `openssl dgst
//! -sha256`, for reference) on the same files in the same run.
//!
//! Called from the bench binary (`benches/main.rs`) as `sign::run()`. Prints figures; asserts
//! nothing about time. The commands run in-process through `hb::run`, as the binary would.

use super::{median, ms};
use clap::Parser;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ARTIFACT_BYTES: usize = 20 << 20;
const FILES_PER_ARTIFACT: usize = 40;
const RUNS: usize = 5;
const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// xorshift64: cheap incompressible bytes (like compiled code, for gzip's purposes).
fn fill(state: &mut u64, out: &mut Vec<u8>, len: usize) {
    while out.len() < len {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
}

fn write_artifact(path: &Path, arch: &str, seed: u64) {
    let top = format!("tools-linux-{arch}");
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut state = seed | 1;
    let manifest =
        br#"{"set":"tools","packages":[{"name":"hello","version":"2.10"},{"name":"libgreet","version":"1.0"}]}"#;
    let mut append = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    append(format!("{top}/hb-manifest.json"), manifest);
    for index in 0..FILES_PER_ARTIFACT {
        let mut bytes = Vec::new();
        fill(&mut state, &mut bytes, ARTIFACT_BYTES / FILES_PER_ARTIFACT);
        append(format!("{top}/bin/tool{index:02}"), &bytes);
    }
    let mut gz = tar.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap().flush().unwrap();
}

fn run_hb(args: &[&str]) {
    let mut argv = vec!["hb", "-q"];
    argv.extend_from_slice(args);
    let cli = hb::cli::Cli::parse_from(argv);
    match hb::run(cli) {
        Ok(0) => {}
        Ok(code) => panic!("hb {args:?} exited {code}"),
        Err(error) => panic!("hb {args:?} failed: {error}"),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

pub fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let dist = root.join("dist");
    std::fs::create_dir_all(dist.join("repro")).unwrap();
    let set = root.join("set");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sign/set"), &set);
    let built = Instant::now();
    let mut artifacts: Vec<PathBuf> = Vec::new();
    for (index, arch) in ARCHES.iter().enumerate() {
        let path = dist.join(format!("tools-linux-{arch}.tar.gz"));
        write_artifact(&path, arch, 0x5eed + index as u64);
        artifacts.push(path);
    }
    let total_bytes: u64 = artifacts.iter().map(|a| std::fs::metadata(a).unwrap().len()).sum();
    let digests: Vec<String> = artifacts
        .iter()
        .map(|a| hb::sign::sums::sha256_file(a).unwrap().to_string())
        .collect();
    let listed: Vec<serde_json::Value> = ARCHES
        .iter()
        .zip(&digests)
        .map(|(arch, sha)| serde_json::json!({"file": format!("tools-linux-{arch}.tar.gz"), "arch": arch, "sha256": sha, "size": 1}))
        .collect();
    let build_report = serde_json::json!({
        "set": "tools", "hb_version": "0.1.0", "source_date_epoch": 1_700_000_000u64, "arches": ARCHES,
        "started_unix": 1_700_000_100u64, "finished_unix": 1_700_000_200u64, "nodes": [], "artifacts": listed,
    });
    std::fs::write(dist.join("build-report.json"), build_report.to_string()).unwrap();
    let repro = serde_json::json!({
        "schema": "hb-repro-report/1", "verdict": "reproduced", "artifacts": listed, "rounds": 2, "variations": ["tz"],
    });
    std::fs::write(dist.join("repro/report.json"), repro.to_string()).unwrap();
    let passphrase = root.join("passphrase");
    std::fs::write(&passphrase, "benchmark passphrase\n").unwrap();
    let keys = root.join("keys");
    let (keys_arg, pass_arg) = (keys.to_str().unwrap(), passphrase.to_str().unwrap());
    let generated = Instant::now();
    run_hb(&[
        "key",
        "generate",
        "--name",
        "Bench <bench@example.org>",
        "--keys",
        keys_arg,
        "--passphrase-file",
        pass_arg,
    ]);
    let generate_time = generated.elapsed();
    println!(
        "sign bench: 2 artifacts, {:.1} MB in all, {FILES_PER_ARTIFACT} files each (made in {:.1} s); median of {RUNS} runs",
        total_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64() - generate_time.as_secs_f64()
    );
    println!(
        "  hb key generate (OpenPGP Ed25519 + ECDSA P-256, both encrypted)   {:8.1} ms",
        ms(generate_time)
    );

    let key = hb::sign::keys::select(&keys, None).unwrap();
    let secret = hb::sign::Passphrase::obtain(Some(&passphrase)).unwrap();
    let unlock = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(key.unlock_openpgp(&secret).unwrap());
                std::hint::black_box(key.unlock_ecdsa(&secret).unwrap());
                start.elapsed()
            })
            .collect(),
    );
    println!(
        "  unlocking both keys (S2K + PBKDF2 600k; part of each sign/attest)  {:8.1} ms",
        ms(unlock)
    );

    let artifact_args: Vec<&str> = artifacts.iter().map(|a| a.to_str().unwrap()).collect();
    let mut sign_args = vec!["sign"];
    sign_args.extend(&artifact_args);
    sign_args.extend(["--keys", keys_arg, "--passphrase-file", pass_arg, "--repro-report"]);
    let report_path = dist.join("repro/report.json");
    sign_args.push(report_path.to_str().unwrap());
    let dist_arg = dist.to_str().unwrap();
    let attest_args = [
        "attest",
        set.to_str().unwrap(),
        "--dist",
        dist_arg,
        "--keys",
        keys_arg,
        "--passphrase-file",
        pass_arg,
    ];
    let (mut sign_times, mut attest_times) = (Vec::new(), Vec::new());
    run_hb(&sign_args); // warm-up: page cache
    for _ in 0..RUNS {
        let start = Instant::now();
        run_hb(&sign_args);
        sign_times.push(start.elapsed());
        let start = Instant::now();
        run_hb(&attest_args);
        attest_times.push(start.elapsed());
    }
    let (sign, attest) = (median(sign_times), median(attest_times));
    let mbps = |d: Duration| total_bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "  hb sign (SHA256SUMS + .asc + .sig, unlocking included)            {:8.1} ms  {:7.1} MB/s",
        ms(sign),
        mbps(sign)
    );
    println!(
        "  hb attest (2 SPDX + 2 CycloneDX + DSSE provenance)                {:8.1} ms  {:7.1} MB/s",
        ms(attest),
        mbps(attest)
    );
    println!(
        "  sign + attest                                                      {:8.1} ms",
        ms(sign + attest)
    );

    // Hashing alone: hb's one-pass SHA-256 (+ OpenPGP context) vs sha256sum and openssl.
    let hb_hash = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                for artifact in &artifacts {
                    std::hint::black_box(hb::sign::sums::hash_file(artifact).unwrap());
                }
                start.elapsed()
            })
            .collect(),
    );
    println!("hashing the same {:.1} MB (warm page cache):", total_bytes as f64 / 1e6);
    println!(
        "  hb (sha2, SHA-NI when the CPU has it)   {:8.1} ms  {:7.1} MB/s",
        ms(hb_hash),
        mbps(hb_hash)
    );
    let external = |program: &str, args: &[&str]| -> Option<Duration> {
        Command::new(program).arg("--version").output().ok()?;
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let status = Command::new(program)
                    .args(args)
                    .args(&artifact_args)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{program} failed");
                start.elapsed()
            })
            .collect();
        Some(median(samples))
    };
    match external("sha256sum", &[]) {
        Some(time) => {
            println!(
                "  sha256sum                               {:8.1} ms  {:7.1} MB/s",
                ms(time),
                mbps(time)
            );
            println!(
                "  hb hashing vs sha256sum: {:.2}x the speed ({})",
                time.as_secs_f64() / hb_hash.as_secs_f64(),
                if hb_hash <= time {
                    "gate met"
                } else {
                    "GATE NOT MET: slower than sha256sum"
                }
            );
        }
        None => println!("  sha256sum: not installed — no comparison"),
    }
    if let Some(time) = external("openssl", &["dgst", "-sha256"]) {
        println!(
            "  openssl dgst -sha256 (reference)        {:8.1} ms  {:7.1} MB/s",
            ms(time),
            mbps(time)
        );
    }
}
