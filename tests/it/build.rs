//! `hb build`: the fixture set end to end, determinism, caching, failures, interruption.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn tar_listing(archive: &Path) -> String {
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(archive)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -tvzf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn builds_the_fixture_set_and_runs_its_program() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    let archive = hb.work().join("dist/basic-linux-amd64.tar.gz");
    let listing = tar_listing(&archive);
    for path in [
        "basic-linux-amd64/bin/greet",
        "basic-linux-amd64/bin/hello-sh",
        "basic-linux-amd64/lib/libgreet.a",
        "basic-linux-amd64/include/greet.h",
        "basic-linux-amd64/hb-manifest.json",
    ] {
        assert!(listing.contains(path), "{path} missing from:\n{listing}");
    }
    // Normalized metadata: owner 0/0, the set's SOURCE_DATE_EPOCH (2023-11-14 22:13 UTC).
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "owner not normalized: {line}");
        assert!(line.contains("2023-11-14 22:13"), "mtime not normalized: {line}");
    }
    // The program built against the library runs outside hb.
    let unpack = hb.dir.path().join("unpacked");
    untar(&archive, &unpack);
    let out = Command::new(unpack.join("basic-linux-amd64/bin/greet"))
        .arg("tests")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, tests\n");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpack.join("basic-linux-amd64/hb-manifest.json")).unwrap()).unwrap();
    let names: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greet", "hello-sh", "libgreet"]);
    assert_eq!(manifest["impure"], true, "the host environment is recorded as impure");
    // The build report lists every node and the artifact's digest.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hb.work().join("dist/build-report.json")).unwrap()).unwrap();
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["artifacts"][0]["sha256"],
        sha256_hex(&std::fs::read(&archive).unwrap())
    );
}

#[test]
fn two_builds_give_byte_identical_archives() {
    let first = Hb::new();
    let second = Hb::new();
    let a = first.fixture("basic");
    let b = second.fixture("basic");
    first.run(&["build", a.to_str().unwrap()]).expect_code(0);
    // Different mtimes on the sources of the second copy must not matter.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for e in walkdir::WalkDir::new(&b)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
    {
        std::fs::File::options()
            .write(true)
            .open(e.path())
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    second.run(&["build", b.to_str().unwrap()]).expect_code(0);
    let x = std::fs::read(first.work().join("dist/basic-linux-amd64.tar.gz")).unwrap();
    let y = std::fs::read(second.work().join("dist/basic-linux-amd64.tar.gz")).unwrap();
    assert!(x == y, "archives differ: {} vs {}", sha256_hex(&x), sha256_hex(&y));
}

#[test]
fn a_second_build_reuses_every_output() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    let run = hb.run(&["--json", "build", set.to_str().unwrap()]);
    run.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json prints one JSON document");
    for node in report["nodes"].as_array().unwrap() {
        assert_eq!(node["cached"], true, "{node}");
    }
    // A changed recipe rebuilds that package and its dependents only.
    let recipe = set.join("libgreet.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, text.replace("description = ", "description = \"changed \" # ")).unwrap();
    let run = hb.run(&["--json", "build", set.to_str().unwrap()]);
    run.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let cached: Vec<(String, bool)> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["package"].as_str().unwrap().to_string(),
                n["cached"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(cached.contains(&("hello-sh".into(), true)), "{cached:?}");
    assert!(cached.contains(&("libgreet".into(), false)), "{cached:?}");
    assert!(cached.contains(&("greet".into(), false)), "{cached:?}");
}

#[test]
fn a_single_recipe_builds_with_its_dependencies() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    let run = hb.run(&["--json", "build", set.join("greet.toml").to_str().unwrap()]);
    run.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut names: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["package"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["greet", "libgreet"]);
}

#[test]
fn a_failing_build_exits_3_with_package_arch_log_and_tail() {
    let hb = Hb::new();
    let set = make_set(
        &hb.work().join("failing"),
        &[(
            "broken",
            &script_package(
                "broken",
                "echo compiling things\necho 'error: the answer is 41' >&2\nexit 7",
            ),
        )],
    );
    let store_before = hb.store_snapshot();
    let run = hb.run(&["build", set.to_str().unwrap()]);
    run.expect_code(3)
        .expect_stderr("build of broken (amd64) failed: exit code 7")
        .expect_stderr("error: the answer is 41")
        .expect_stderr("log: ");
    let log_line = run.stderr.lines().find(|l| l.starts_with("log: ")).unwrap();
    let log = std::fs::read_to_string(log_line.trim_start_matches("log: ")).expect("the log path exists");
    assert!(log.contains("compiling things"));
    assert!(store_before.iter().all(|l| !l.starts_with("outputs/")));
    assert!(
        hb.store_snapshot().iter().all(|l| !l.starts_with("outputs/")),
        "no output from a failed build"
    );
}

#[test]
fn a_failing_smoke_test_exits_3() {
    let hb = Hb::new();
    let mut text = script_package("untested", "mkdir -p $out/bin; echo hi > $out/bin/x");
    text.push_str("\n[test]\nscript = 'test -x \"$out/bin/x\"'\n");
    let set = make_set(&hb.work().join("t"), &[("untested", &text)]);
    hb.run(&["build", set.to_str().unwrap()])
        .expect_code(3)
        .expect_stderr("smoke test of untested (amd64) failed");
}

#[test]
fn killing_hb_mid_build_leaves_a_clean_store() {
    let hb = Hb::new();
    let marker = format!("hb-kill-test-{}", std::process::id());
    let set_dir = hb.work().join("slow");
    let slow = script_package(
        "slow",
        &format!("mkdir -p $out; echo started > /out/started; sleep 600 # {marker}"),
    );
    let set = make_set(&set_dir, &[("slow", &slow)]);
    let mut child = hb.command().args(["build", set.to_str().unwrap()]).spawn().unwrap();
    // Wait until the build script runs (its work directory has the marker file).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let started = walkdir::WalkDir::new(hb.store().join("tmp"))
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name() == "started");
        if started {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The sandboxed sleep dies with hb (no orphan keeps running).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while processes_with(&marker) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the build's processes outlived hb"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    hb.run(&["store", "verify"]).expect_code(0);
    // The next build succeeds.
    std::fs::write(
        set_dir.join("slow.toml"),
        script_package("slow", "mkdir -p $out; echo done > $out/done"),
    )
    .unwrap();
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    hb.run(&["store", "verify"]).expect_code(0);
}

/// Number of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn sources_are_fetched_over_http_falling_back_to_the_next_url() {
    let hb = Hb::new();
    let served = hb.dir.path().join("served");
    std::fs::create_dir_all(served.join("src-1.0")).unwrap();
    std::fs::write(served.join("src-1.0/data.txt"), "payload\n").unwrap();
    let tarball = served.join("src-1.0.tar.gz");
    assert!(Command::new("tar")
        .args([
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            served.to_str().unwrap(),
            "src-1.0"
        ])
        .status()
        .unwrap()
        .success());
    let sha = sha256_hex(&std::fs::read(&tarball).unwrap());
    let server = HttpServer::start(&served);
    let recipe = format!(
        "[package]\nname = \"fetched\"\nversion = \"1.0\"\nlicense = \"MIT\"\n\n[[source]]\nurls = [\"http://127.0.0.1:{port}/missing.tar.gz\", \"http://127.0.0.1:{port}/src-1.0.tar.gz\"]\nsha256 = \"{sha}\"\n\n[build]\nscript = 'mkdir -p $out/share && cp data.txt $out/share/'\n",
        port = server.port
    );
    let set = make_set(&hb.work().join("t"), &[("fetched", &recipe)]);
    hb.run(&["fetch", set.to_str().unwrap()]).expect_code(0);
    assert!(hb.store().join("sources").join(&sha).is_file());
    drop(server);
    // Offline from now on: the store has it.
    hb.run(&["build", "--offline", set.to_str().unwrap()]).expect_code(0);
}

/// Python's http.server on a free loopback port, killed on drop.
pub struct HttpServer {
    pub port: u16,
    child: std::process::Child,
}

impl HttpServer {
    pub fn start(dir: &Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is needed for the HTTP server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpServer { port, child }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_hb_processes_share_one_store() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    let spawn = |out: &str| {
        hb.command()
            .args(["--json", "build", "--out", out, set.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("dist-a");
    let b = spawn("dist-b");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    // Each node was built exactly once; the other process found it in the store.
    let built = |out: &[u8]| -> usize {
        let report: serde_json::Value = serde_json::from_slice(out).unwrap();
        report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["cached"] == false)
            .count()
    };
    assert_eq!(built(&a.stdout) + built(&b.stdout), 3);
    assert_eq!(
        std::fs::read(hb.work().join("dist-a/basic-linux-amd64.tar.gz")).unwrap(),
        std::fs::read(hb.work().join("dist-b/basic-linux-amd64.tar.gz")).unwrap()
    );
    hb.run(&["store", "verify"]).expect_code(0);
}

#[test]
fn several_sources_unpack_into_one_tree() {
    let hb = Hb::new();
    let dir = hb.work().join("multi");
    write(&dir.join("one/a.txt"), "a\n");
    write(&dir.join("one/sub/keep.txt"), "keep\n");
    write(&dir.join("two/b.txt"), "b\n");
    write(&dir.join("three/c.txt"), "c\n");
    let recipe = "[package]\nname = \"multi\"\nversion = \"1\"\nlicense = \"MIT\"\n\n[[source]]\npath = \"one\"\n\n[[source]]\npath = \"two\"\ndest = \"sub\"\n\n[[source]]\npath = \"three\"\n\n[build]\nscript = 'mkdir -p $out && cat a.txt sub/keep.txt sub/b.txt c.txt > $out/all'\n";
    let set = make_set(&dir, &[("multi", recipe)]);
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    let tree = std::fs::read_dir(hb.store().join("outputs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("tree");
    assert_eq!(std::fs::read_to_string(tree.join("all")).unwrap(), "a\nkeep\nb\nc\n");
}
