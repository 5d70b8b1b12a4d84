//! `hb store verify` and `hb store gc` on a store filled by a real build.

use crate::common::*;

#[test]
fn verify_is_clean_after_a_build_and_catches_corruption() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    hb.run(&["store", "verify"]).expect_code(0).expect_stderr("0 corrupt");
    // Flip one byte of an output file.
    let victim = walkdir::WalkDir::new(hb.store().join("outputs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .find(|e| e.file_type().is_file() && e.path().to_string_lossy().contains("/tree/") && e.file_name() == "greet")
        .expect("greet's output in the store")
        .into_path();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let run = hb.run(&["--json", "store", "verify"]);
    run.expect_code(1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["corrupt"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        report["corrupt"][0]["message"].as_str().unwrap().contains("bin/greet"),
        "{report}"
    );
}

#[test]
fn gc_keeps_what_the_last_build_used() {
    let hb = Hb::new();
    let set = hb.fixture("basic");
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    let outputs = || std::fs::read_dir(hb.store().join("outputs")).unwrap().count();
    assert_eq!(outputs(), 3);
    // A changed recipe makes a new output for hello-sh; the old one is garbage.
    let recipe = set.join("hello-sh.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, text.replace("version = \"0.1\"", "version = \"0.2\"")).unwrap();
    hb.run(&["build", set.to_str().unwrap()]).expect_code(0);
    assert_eq!(outputs(), 4);
    hb.run(&["store", "gc", "--dry-run"]).expect_code(0);
    assert_eq!(outputs(), 4);
    hb.run(&["store", "gc"]).expect_code(0);
    assert_eq!(outputs(), 3);
    // Everything still cached.
    let run = hb.run(&["--json", "build", set.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["nodes"].as_array().unwrap().iter().all(|n| n["cached"] == true));
}
