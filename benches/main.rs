//! hb's benchmarks: each prints figures and compares against the closest real alternative,
//! measured in the same run. Nothing here asserts on time.
//!
//! `cargo bench --bench hb-bench -- [sandbox|cached-build|pack|all]`
//! (needs `bwrap` from Debian's bubblewrap package for the sandbox comparison.)

mod pack;
mod sign;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    // The sandbox re-executes this binary as its init process.
    hb_sandbox::init_if_requested();
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let all = which.is_empty() || which.iter().any(|w| w == "all");
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    if wants("sandbox") {
        sandbox();
    }
    if wants("sandbox-env") {
        sandbox_env();
    }
    if wants("rootfs") {
        rootfs();
    }
    if wants("repro") {
        repro();
    }
    if wants("cached-build") {
        cached_build();
    }
    if wants("pack") {
        pack::run();
    }
    if wants("sign") {
        sign::run();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The policy of a build's sandbox (user, host name, PATH, cwd /build) with these mounts.
fn build_policy(mounts: Vec<hb_sandbox::Mount>, writable: &[&str]) -> hb_sandbox::Policy {
    hb_sandbox::Policy {
        mounts,
        writable: writable.iter().map(PathBuf::from).collect(),
        hostname: "hb-build".into(),
        uid: 1000,
        gid: 1000,
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        cwd: "/build".into(),
        umask: 0o022,
        loopback: true,
        binfmt: Vec::new(),
        env_order_reversed: false,
    }
}

/// Wall time of one sandbox start + `/bin/true` + teardown.
fn time_true(policy: &hb_sandbox::Policy, helper: &Path) -> Duration {
    let start = Instant::now();
    let command = hb_sandbox::Command {
        argv: vec!["/bin/true".into()],
        stdin: None,
        stdout: None,
        stderr: None,
    };
    let (outcome, _) = hb_sandbox::run(policy, command, helper).expect("sandbox runs");
    assert!(outcome.success());
    start.elapsed()
}

/// Sandbox start + `/bin/true` + teardown: hb-sandbox with the policy hb uses for builds
/// (host /usr, /proc, /dev, /tmp, /build, /out, Landlock) vs bwrap with the same mounts.
fn sandbox() {
    const RUNS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let mut mounts = vec![hb_sandbox::Mount::Bind {
        source: "/usr".into(),
        target: "/usr".into(),
        writable: false,
    }];
    for link in ["bin", "sbin", "lib", "lib64"] {
        mounts.push(hb_sandbox::Mount::Symlink {
            link: PathBuf::from("/").join(link),
            points_to: PathBuf::from("usr").join(link),
        });
    }
    mounts.extend([
        hb_sandbox::Mount::Proc { target: "/proc".into() },
        hb_sandbox::Mount::Dev { target: "/dev".into() },
        hb_sandbox::Mount::Tmpfs { target: "/tmp".into() },
        hb_sandbox::Mount::Bind {
            source: build.clone(),
            target: "/build".into(),
            writable: true,
        },
        hb_sandbox::Mount::Bind {
            source: out.clone(),
            target: "/out".into(),
            writable: true,
        },
    ]);
    let policy = build_policy(mounts, &["/build", "/out", "/tmp"]);
    let helper = std::env::current_exe().unwrap();
    let hb = (0..RUNS).map(|_| time_true(&policy, &helper)).collect();
    println!("sandbox start + /bin/true + teardown, median of {RUNS}:");
    let hb_median = median(hb);
    println!("  hb-sandbox (namespaces + Landlock)  {:7.2} ms", ms(hb_median));
    let bwrap = Path::new("/usr/bin/bwrap");
    if !bwrap.exists() {
        println!("  bwrap: not installed (apt-get install bubblewrap) — no comparison");
        return;
    }
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let status = Command::new(bwrap)
            .args(["--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"])
            .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"])
            .args(["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
            .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
            .arg("--bind")
            .arg(&build)
            .arg("/build")
            .arg("--bind")
            .arg(&out)
            .arg("/out")
            .args([
                "--hostname",
                "hb-build",
                "--chdir",
                "/build",
                "--clearenv",
                "--setenv",
                "PATH",
                "/usr/bin:/bin",
            ])
            .arg("/bin/true")
            .status()
            .unwrap();
        assert!(status.success());
        samples.push(start.elapsed());
    }
    let bwrap_median = median(samples);
    println!("  bwrap --unshare-all, same mounts     {:7.2} ms", ms(bwrap_median));
    println!(
        "  ratio hb / bwrap                     {:7.2}",
        ms(hb_median) / ms(bwrap_median)
    );
}

/// `hb build` of a set whose outputs are all cached (fixtures/basic and, when its sources
/// are already in the store, recipes/toolchain), end to end as a process.
fn cached_build() {
    const RUNS: usize = 30;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hb = root.join("target/release/hb");
    if !hb.exists() {
        println!("cached-build: build target/release/hb first (cargo build --release)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = std::env::var_os("HB_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("store"));
    for set in ["fixtures/basic", "recipes/toolchain"] {
        let run = || {
            Command::new(&hb)
                .args(["-q", "build", "--out"])
                .arg(dir.path().join("dist"))
                .arg(root.join(set))
                .env("HB_STORE", &store)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
        };
        let warm = Instant::now();
        if !run().success() {
            println!("cached-build {set}: the first build failed; skipped");
            continue;
        }
        let first = warm.elapsed();
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                assert!(run().success());
                start.elapsed()
            })
            .collect();
        println!(
            "hb build {set}, all outputs cached: median {:.1} ms over {RUNS} runs (first run {:.1} s)",
            ms(median(samples)),
            first.as_secs_f64()
        );
    }
}

/// Sandbox start with a pinned environment's rootfs (from `$HB_STORE/envs`) vs the host
/// environment, each with the mounts hb uses for a build.
fn sandbox_env() {
    const RUNS: usize = 1000;
    let Some(store) = std::env::var_os("HB_STORE").map(PathBuf::from) else {
        println!("sandbox-env: set HB_STORE to a store with an assembled environment (hb build fixtures/pinned)");
        return;
    };
    let rootfs = std::fs::read_dir(store.join("envs"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("rootfs")))
        .find(|p| {
            p.join("usr/bin/gcc").exists()
                && p.join("usr/lib/x86_64-linux-gnu").exists()
                && p.join("etc/passwd").exists()
        });
    let Some(rootfs) = rootfs else {
        println!(
            "sandbox-env: no amd64 environment of this hb version in {}/envs",
            store.display()
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let helper = std::env::current_exe().unwrap();
    let policy = |root_mounts: Vec<hb_sandbox::Mount>| {
        let mut mounts = root_mounts;
        // What every build adds (build.rs): on the host environment they are created on the
        // root tmpfs, on a pinned one bound over the rootfs's placeholders.
        let file = |target: &str, contents: &str| hb_sandbox::Mount::File {
            target: target.into(),
            contents: contents.into(),
            mode: 0o644,
        };
        mounts.extend([
            file(
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nhb:x:1000:1000::/build:/bin/sh\n",
            ),
            file("/etc/group", "root:x:0:\nhb:x:1000:\n"),
            file("/etc/hosts", "127.0.0.1 localhost hb-build\n"),
            hb_sandbox::Mount::Proc { target: "/proc".into() },
            hb_sandbox::Mount::Dev { target: "/dev".into() },
            hb_sandbox::Mount::Tmpfs { target: "/tmp".into() },
            hb_sandbox::Mount::Bind {
                source: dir.path().to_owned(),
                target: "/build".into(),
                writable: true,
            },
        ]);
        build_policy(mounts, &["/build", "/tmp"])
    };
    let host = hb::env::host_root_mounts(Path::new("/"));
    let pinned = hb::env::rootfs_mounts(&rootfs).unwrap();
    let counts = [host.len(), pinned.len()];
    let policies = [policy(host), policy(pinned)];
    // Interleaved, so that a change in the machine's load hits both alike.
    let mut samples: [Vec<Duration>; 2] = Default::default();
    for _ in 0..RUNS {
        for (i, p) in policies.iter().enumerate() {
            samples[i].push(time_true(p, &helper));
        }
    }
    // Paired: each pinned run against the host run just before it.
    let mut diffs: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(h, p)| (p.as_secs_f64() - h.as_secs_f64()) * 1e6)
        .collect();
    diffs.sort_by(f64::total_cmp);
    let (diff_median, diff_q1, diff_q3) = (diffs[RUNS / 2], diffs[RUNS / 4], diffs[RUNS * 3 / 4]);
    let [host, pinned] = samples.map(median);
    let figures = [("host /usr", counts[0], host), ("pinned rootfs", counts[1], pinned)];
    println!("sandbox start + /bin/true with each environment's root mounts, median of {RUNS}:");
    for (name, n, m) in &figures {
        println!("  {name:<14} ({n:3} root mounts)  {:7.2} ms", ms(*m));
    }
    println!(
        "  ratio pinned / host                 {:7.2}",
        ms(figures[1].2) / ms(figures[0].2)
    );
    println!(
        "  paired difference pinned - host     {diff_median:+7.0} us (quartiles {diff_q1:+.0} / {diff_q3:+.0} us)"
    );
}

/// verify-repro's parallelism: on the fixture sets with `--jobs 2`, the rounds' wall time
/// against the ideal (sum of the individual build times / 2).
fn repro() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hb = root.join("target/release/hb");
    if !hb.exists() {
        println!("repro: build target/release/hb first (cargo build --release)");
        return;
    }
    for set in ["fixtures/unrepro", "fixtures/basic"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&hb)
            .args([
                "--json",
                "--jobs",
                "2",
                "verify-repro",
                "--vary",
                "none",
                "--no-explain",
                "--rounds",
                "3",
            ])
            .arg("--report")
            .arg(dir.path().join("report"))
            .arg("--out")
            .arg(dir.path().join("dist"))
            .arg(root.join(set))
            .env("HB_STORE", dir.path().join("store"))
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify-repro --json");
        let rounds: u64 = report["phase_ms"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() == "rounds")
            .map(|(_, v)| v.as_u64().unwrap())
            .sum();
        let builds = report["build_ms_total"].as_u64().unwrap();
        let ideal = builds as f64 / 2.0;
        println!(
            "verify-repro {set} --jobs 2 (3 rounds, {} nodes): rounds wall {:.0} ms, sum of builds {} ms, ideal {:.0} ms, ratio {:.2}",
            report["nodes"].as_array().unwrap().len(),
            rounds as f64,
            builds,
            ideal,
            rounds as f64 / ideal
        );
    }
}

/// Rootfs assembly from cached debs: hb (the toolchain's amd64 environment from set.lock)
/// vs `mmdebstrap --variant=extract` of the same debs (a local `copy://` repository), in the
/// same run. Needs `HB_STORE` holding the debs (`hb fetch recipes/toolchain`), and
/// mmdebstrap + apt-ftparchive (Debian's mmdebstrap and apt-utils).
fn rootfs() {
    const ROUNDS: usize = 3;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(store_dir) = std::env::var_os("HB_STORE").map(PathBuf::from) else {
        println!("rootfs: set HB_STORE to a store with the toolchain's debs (hb fetch recipes/toolchain)");
        return;
    };
    let lock = hb::lock::read(&root.join("recipes/toolchain/set.lock")).expect("recipes/toolchain/set.lock");
    let target = lock.target(hb::types::Arch::Amd64).expect("an amd64 target").clone();
    let sources = store_dir.join("sources");
    if let Some(missing) = target.debs.iter().find(|d| !sources.join(d.sha256.as_str()).exists()) {
        println!(
            "rootfs: {} is not in {} (run hb fetch recipes/toolchain)",
            missing.label(),
            store_dir.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A local repository of the same debs for mmdebstrap.
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for deb in &target.debs {
        let name = deb.path.rsplit('/').next().unwrap();
        std::fs::hard_link(sources.join(deb.sha256.as_str()), repo.join(name)).unwrap();
    }
    let packages = Command::new("apt-ftparchive")
        .arg("packages")
        .arg(".")
        .current_dir(&repo)
        .output();
    let mmdebstrap = Path::new("/usr/bin/mmdebstrap").exists();
    match packages {
        Ok(out) if out.status.success() => std::fs::write(repo.join("Packages"), out.stdout).unwrap(),
        _ => println!("rootfs: apt-ftparchive (apt-utils) missing: no mmdebstrap comparison"),
    }
    let names: Vec<&str> = target.debs.iter().map(|d| d.name.as_str()).collect();
    let links: std::collections::BTreeMap<String, String> = [("/usr/bin/cc", "gcc"), ("/usr/bin/awk", "mawk")]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .into();
    let digest = lock.environment_digest(hb::types::Arch::Amd64, &links);
    let (mut hb_times, mut mm_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // hb: a fresh store whose sources are the cached debs (hard links), offline.
        let store_root = dir.path().join(format!("store-{round}"));
        let store = hb::store::Store::open(&store_root).unwrap();
        for deb in &target.debs {
            std::fs::hard_link(sources.join(deb.sha256.as_str()), store.source_path(&deb.sha256)).unwrap();
        }
        let fetcher = hb::fetch::Fetcher::new(&store, hb::fetch::Mirrors::default(), true);
        let start = Instant::now();
        hb::rootfs::assemble(&store, &fetcher, &target, &links, &digest, &|_| {}).expect("assembly");
        hb_times.push(start.elapsed());
        if mmdebstrap && repo.join("Packages").exists() {
            let out = dir.path().join(format!("mm-{round}"));
            let start = Instant::now();
            let status = Command::new("mmdebstrap")
                .args(["-q", "--variant=extract", "--aptopt=Acquire::Languages \"none\""])
                .arg(format!("--include={}", names.join(",")))
                .arg("bookworm")
                .arg(&out)
                .arg(format!("deb [trusted=yes] copy://{} ./", repo.display()))
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if status.success() {
                mm_times.push(start.elapsed());
            }
        }
    }
    println!(
        "rootfs assembly of {} cached debs (amd64 toolchain environment), median of {ROUNDS}:",
        target.debs.len()
    );
    let hb_median = median(hb_times);
    println!("  hb rootfs::assemble (unpack, merge, hash)   {:8.0} ms", ms(hb_median));
    if mm_times.is_empty() {
        println!("  mmdebstrap --variant=extract: not installed or failed (apt-get install mmdebstrap apt-utils)");
    } else {
        let mm = median(mm_times);
        println!("  mmdebstrap --variant=extract, same debs    {:8.0} ms", ms(mm));
        println!(
            "  ratio hb / mmdebstrap                      {:8.2}",
            ms(hb_median) / ms(mm)
        );
    }
}
