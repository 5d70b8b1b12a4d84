//! `hb verify-repro`: every cause of non-determinism in fixtures/unrepro is flagged and
//! explained by the right variation; deterministic fixtures pass, repeatedly; a failing
//! round is a failure; the reports (JSON, JUnit, HTML in a real browser) say so.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn verify_repro(hb: &Hb, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["--json", "verify-repro"];
    all.extend_from_slice(args);
    let run = hb.run(&all);
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{}\n{}", run.stdout, run.stderr));
    (run, report)
}

fn node<'a>(report: &'a serde_json::Value, package: &str) -> &'a serde_json::Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["package"] == package)
        .unwrap()
}

fn culprits(node: &serde_json::Value) -> Vec<String> {
    node["explanation"]["culprits"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn every_cause_of_nondeterminism_is_flagged_and_explained() {
    let hb = Hb::new();
    let set = hb.fixture("unrepro");
    let junit = hb.work().join("junit.xml");
    let (run, report) = verify_repro(&hb, &["--junit", junit.to_str().unwrap(), set.to_str().unwrap()]);
    run.expect_code(1);
    assert_eq!(report["schema"], "hb-repro-report/1");
    assert_eq!(report["verdict"], "differs");
    assert_eq!(node(&report, "stable")["verdict"], "reproduced");
    let faketime = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists();
    let expected = [
        ("embeds-build-path", "build-path"),
        ("embeds-hostname", "hostname"),
        ("embeds-umask", "umask"),
        ("embeds-user", "user"),
        ("embeds-locale", "locale"),
        ("embeds-tz", "tz"),
        ("embeds-environment", "environment"),
        ("parallel-race", "jobs"),
        ("dir-order", "dir-order"),
        ("embeds-date", "clock"),
    ];
    for (package, variation) in expected {
        let n = node(&report, package);
        assert_eq!(n["verdict"], "differs", "{package} was not flagged: {n}");
        if variation == "clock" && !faketime {
            panic!("libfaketime is not installed: run scripts/test.sh (it installs Debian's faketime) — the clock variation needs it");
        }
        assert!(
            culprits(n).contains(&variation.to_string()),
            "{package}: expected {variation} among {:?}",
            culprits(n)
        );
        assert!(
            !n["differences"].as_array().unwrap().is_empty(),
            "{package}: no file named"
        );
        assert!(n["explanation"]["hints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().starts_with(variation)));
    }
    // Exactly the one variation for the single-cause fixtures.
    for (package, variation) in &expected[..6] {
        assert_eq!(culprits(node(&report, package)), [variation.to_string()], "{package}");
    }
    let random = node(&report, "embeds-random");
    assert_eq!(random["verdict"], "differs");
    assert_eq!(random["explanation"]["nondeterministic"], true, "{random}");
    // The first differing offset is reported.
    let year = &node(&report, "embeds-date")["differences"][0];
    assert_eq!(year["path"], "year");
    assert!(year["first_difference"].as_u64().is_some());
    // No artifacts for a failing gate.
    assert!(report["artifacts"].as_array().unwrap().is_empty());
    assert!(!hb.work().join("dist/unrepro-linux-amd64.tar.gz").exists());
    // JUnit: one testcase per node, a failure per differing one, well-formed XML.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase ").count(), 12);
    assert_eq!(xml.matches("<failure ").count(), 11);
    let parsed = Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.get('tests'), r.get('failures'))"])
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "12 11",
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
}

#[test]
fn deterministic_fixtures_reproduce_every_time() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    for attempt in 0..3 {
        let (run, report) = verify_repro(&hb, &["--rounds", "3", set.to_str().unwrap()]);
        run.expect_code(0);
        assert_eq!(report["verdict"], "reproduced", "attempt {attempt}: {report}");
        assert_eq!(report["summary"]["reproduced"], 3);
    }
    // A passing report records the digests of the artifacts it wrote.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hb.work().join("dist/repro/report.json")).unwrap()).unwrap();
    let artifact = &report["artifacts"][0];
    assert_eq!(artifact["file"], "basic-linux-amd64.tar.gz");
    let bytes = std::fs::read(hb.work().join("dist/basic-linux-amd64.tar.gz")).unwrap();
    assert_eq!(artifact["sha256"], sha256_hex(&bytes));
    // ... and they are the bytes `hb build` makes.
    hb.run(&["build", "--out", "built", set.to_str().unwrap()])
        .expect_code(0);
    assert_eq!(
        std::fs::read(hb.work().join("built/basic-linux-amd64.tar.gz")).unwrap(),
        bytes
    );
}

#[test]
fn a_build_failing_in_round_two_is_a_failure_not_a_difference() {
    let hb = Hb::new();
    let script = "mkdir -p $out; test \"$(uname -n)\" = hb-build; echo ok > $out/ok";
    let set = make_set(&hb.work().join("flaky"), &[("flaky", &script_package("flaky", script))]);
    let (run, report) = verify_repro(&hb, &[set.to_str().unwrap()]);
    run.expect_code(3);
    assert_eq!(report["verdict"], "failed");
    let n = node(&report, "flaky");
    assert_eq!(n["verdict"], "failed");
    assert!(
        n["error"]
            .as_str()
            .unwrap()
            .starts_with("round 2: build of flaky (amd64) failed"),
        "{n}"
    );
}

#[test]
fn a_set_without_packages_has_nothing_to_reproduce() {
    let hb = Hb::new();
    let set = make_set(&hb.work().join("empty"), &[]);
    let (run, report) = verify_repro(&hb, &[set.to_str().unwrap()]);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run.expect_code(0);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn vary_none_leaves_only_true_nondeterminism() {
    let hb = Hb::new();
    let set = hb.fixture("unrepro");
    let (run, report) = verify_repro(&hb, &["--vary", "none", "--no-explain", set.to_str().unwrap()]);
    run.expect_code(1);
    let differing: Vec<&str> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["verdict"] == "differs")
        .map(|n| n["package"].as_str().unwrap())
        .collect();
    assert_eq!(differing, ["embeds-random"]);
    hb.run(&["verify-repro", "--vary", "tz,bogus", set.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr("unknown variation \"bogus\"");
}

#[test]
fn the_html_report_renders_in_chromium() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        panic!("chromium is not installed: run scripts/test.sh (it installs Debian's chromium)");
    };
    let hb = Hb::new();
    let set = hb.fixture("unrepro");
    let (run, _) = verify_repro(&hb, &["--no-explain", set.to_str().unwrap()]);
    run.expect_code(1);
    let html = hb.work().join("dist/repro/report.html");
    let profile = hb.dir.path().join("chromium-profile");
    let shot = hb.dir.path().join("report.png");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,900",
    ];
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<td class=\"cell reproduced\""),
        "the rendered page has no matrix:\n{dom}"
    );
    assert_eq!(dom.matches("<td class=\"cell differs\"").count(), 11);
    assert!(dom.contains("<details>"));
    let status = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 10_000,
        "the screenshot is suspiciously small ({} bytes)",
        png.len()
    );
    // Keep it for people to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("repro-report.png");
    let _ = std::fs::copy(&shot, keep);
}
