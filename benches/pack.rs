//! Benchmark: hb's deterministic `pack` (gzip -6) plus `manifest` hashing, against
//! `tar --sort=name ... | gzip -n -6` on the same synthetic tree (~60 MB, a few thousand files).
//!
//! Called from the bench binary (`benches/main.rs`) as `pack::run()`. Prints a table; asserts
//! nothing about time.

use super::{median, ms};
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hb::archive::{manifest, pack, Compression, PackOptions};

const RUNS: usize = 5;
const TARGET_BYTES: u64 = 60 << 20;

/// splitmix64: small, deterministic, good enough for synthetic content.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "static",
    "int",
    "return",
    "if",
    "else",
    "for",
    "while",
    "struct",
    "const",
    "void",
    "char",
    "buffer",
    "length",
    "error",
    "result",
    "config",
    "value",
    "index",
    "size_t",
    "unsigned",
    "#include",
    "<stdio.h>",
    "NULL",
    "sizeof",
    "malloc",
    "free",
    "printf",
    "memcpy",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/*",
    "*/",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
];

/// A pool of identifiers shared by all files (like the names of a real code base).
fn identifiers(rng: &mut Rng) -> Vec<String> {
    (0..3000)
        .map(|_| {
            let len = 3 + rng.below(12) as usize;
            (0..len)
                .map(|i| {
                    let r = rng.below(30) as u8;
                    match r {
                        0..=25 => (b'a' + r) as char,
                        _ if i > 0 => '_',
                        _ => 'x',
                    }
                })
                .collect()
        })
        .collect()
}

/// Source-like text: keywords and punctuation mixed with identifiers from the pool.
fn text(rng: &mut Rng, ids: &[String], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut col = 0;
    while out.len() < len {
        let w = if rng.below(10) < 4 {
            WORDS[rng.below(WORDS.len() as u64) as usize]
        } else {
            // Zipf-ish: most files use a few common names.
            let n = ids.len() as u64;
            let spread = 1 + rng.below(n);
            let i = rng.below(spread) as usize;
            ids[i].as_str()
        };
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 60 + rng.below(30) as usize {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

fn random(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes the synthetic tree; returns (files, symlinks, dirs, content bytes).
fn build_tree(root: &Path) -> (u64, u64, u64, u64) {
    let mut rng = Rng(0x5eed_1234);
    let ids = identifiers(&mut rng);
    let mut dirs = vec![root.to_path_buf()];
    for i in 0..120 {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let d = parent.join(format!("dir{i:03}"));
        fs::create_dir_all(&d).unwrap();
        dirs.push(d);
    }
    let (mut files, mut links, mut bytes) = (0u64, 0u64, 0u64);
    let mut file_names: Vec<PathBuf> = Vec::new();
    while bytes < TARGET_BYTES {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        // Sizes: 85% small (64 B..8 KiB), 14% medium (8..96 KiB), 1% large (0.25..2 MiB).
        let r = rng.below(100);
        let size = if r < 85 {
            64 + rng.below(8 << 10)
        } else if r < 99 {
            (8 << 10) + rng.below(88 << 10)
        } else {
            (256 << 10) + rng.below(1792 << 10)
        } as usize;
        // 70% compressible source-like text, 30% incompressible bytes.
        let (data, ext) = if rng.below(10) < 7 {
            (text(&mut rng, &ids, size), "c")
        } else {
            (random(&mut rng, size), "bin")
        };
        let path = dir.join(format!("file{files:05}.{ext}"));
        fs::write(&path, &data).unwrap();
        files += 1;
        bytes += size as u64;
        file_names.push(path);
        if files % 25 == 0 {
            let target = &file_names[rng.below(file_names.len() as u64) as usize];
            let link = dir.join(format!("link{links:04}"));
            let rel = pathdiff(target, dir);
            std::os::unix::fs::symlink(rel, link).unwrap();
            links += 1;
        }
    }
    (files, links, dirs.len() as u64 - 1, bytes)
}

/// Relative path from directory `base` to `target` (both under the same root).
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

struct Row {
    tool: &'static str,
    times: Vec<Duration>,
    out_bytes: u64,
}

pub fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("tree");
    fs::create_dir(&root).unwrap();
    let t0 = Instant::now();
    let (files, links, dirs, bytes) = build_tree(&root);
    println!(
        "pack bench: synthetic tree of {files} files, {links} symlinks, {dirs} dirs, {:.1} MB (built in {:.1} s); median of {RUNS} runs",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );

    let have_tar =
        Command::new("tar").arg("--version").output().is_ok() && Command::new("gzip").arg("--version").output().is_ok();

    let gz = PackOptions {
        top_dir: None,
        mtime: 0,
        compression: Compression::Gzip,
        level: Some(6),
    };
    let zst = PackOptions {
        compression: Compression::Zstd,
        level: None,
        ..gz.clone()
    };
    let hb_out = tmp.path().join("hb.tar.gz");
    let zst_out = tmp.path().join("hb.tar.zst");
    let tar_out = tmp.path().join("gnu.tar.gz");

    let hb_pack = |opts: &PackOptions, out: &Path| -> u64 {
        let f = BufWriter::new(fs::File::create(out).unwrap());
        pack(&[&root], f, opts).unwrap().bytes_out
    };
    let tar_cmd = format!(
        "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C '{}' -cf - . | gzip -n -6 > '{}'",
        root.display(),
        tar_out.display()
    );
    let gnu = || {
        let st = Command::new("sh").arg("-c").arg(&tar_cmd).status().unwrap();
        assert!(st.success(), "tar | gzip failed");
        fs::metadata(&tar_out).unwrap().len()
    };

    let mut rows = vec![
        Row {
            tool: "hb pack gzip-6 + manifest",
            times: vec![],
            out_bytes: 0,
        },
        Row {
            tool: "  hb pack gzip-6 only",
            times: vec![],
            out_bytes: 0,
        },
        Row {
            tool: "  hb manifest only",
            times: vec![],
            out_bytes: 0,
        },
        Row {
            tool: "hb pack zstd-3 + manifest",
            times: vec![],
            out_bytes: 0,
        },
        Row {
            tool: "tar --sort=name | gzip -n -6",
            times: vec![],
            out_bytes: 0,
        },
    ];
    // Warm-up (page cache, allocator), not measured.
    hb_pack(&gz, &hb_out);
    manifest(&root).unwrap();
    if have_tar {
        gnu();
    }
    for _ in 0..RUNS {
        let t = Instant::now();
        let n = hb_pack(&gz, &hb_out);
        let t_pack = t.elapsed();
        let m = manifest(&root).unwrap();
        rows[0].times.push(t.elapsed());
        rows[0].out_bytes = n;
        rows[1].times.push(t_pack);
        rows[1].out_bytes = n;
        std::hint::black_box(m);

        let t = Instant::now();
        std::hint::black_box(manifest(&root).unwrap());
        rows[2].times.push(t.elapsed());

        let t = Instant::now();
        let n = hb_pack(&zst, &zst_out);
        std::hint::black_box(manifest(&root).unwrap());
        rows[3].times.push(t.elapsed());
        rows[3].out_bytes = n;

        if have_tar {
            let t = Instant::now();
            let n = gnu();
            rows[4].times.push(t.elapsed());
            rows[4].out_bytes = n;
        }
    }
    if !have_tar {
        rows.pop();
        println!("(GNU tar or gzip not found: reference row skipped)");
    }

    println!("{:<32} {:>10} {:>10} {:>8}", "tool", "median ms", "MB/s", "ratio");
    for r in &rows {
        let med = median(r.times.clone());
        let mbps = bytes as f64 / 1e6 / med.as_secs_f64();
        let ratio = if r.out_bytes > 0 {
            format!("{:.3}", r.out_bytes as f64 / bytes as f64)
        } else {
            "-".to_string()
        };
        println!("{:<32} {:>10.1} {:>10.1} {:>8}", r.tool, ms(med), mbps, ratio);
    }
    if have_tar {
        let hb = median(rows[0].times.clone()).as_secs_f64();
        let gnu = median(rows.last().unwrap().times.clone()).as_secs_f64();
        println!(
            "hb pack+manifest (gzip-6) vs tar|gzip: {:.2}x the speed ({})",
            gnu / hb,
            if hb <= gnu {
                "gate met"
            } else {
                "GATE NOT MET: slower than tar|gzip"
            }
        );
    }
    println!("(MB/s = tree content bytes / median time; ratio = output bytes / content bytes)");
}
