//! `hb-sandbox-exec POLICY.json -- CMD ARGS...`: run one command in an hb sandbox, for
//! debugging policies and for the crate's tests. Exits with the command's exit code, or
//! 128 + the signal that killed it; 125 when the sandbox itself failed.
//!
//! `hb-sandbox-exec --probe` prints what this kernel supports (exit 0) or why it cannot run
//! sandboxes (exit 125).

use std::process::exit;

const USAGE: &str = "usage: hb-sandbox-exec POLICY.json -- CMD [ARGS...]\n       hb-sandbox-exec --probe";

fn main() {
    // Must come first: this executable is also the sandbox's init.
    hb_sandbox::init_if_requested();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--probe") {
        match hb_sandbox::probe() {
            Ok(e) => {
                println!("ok: user namespaces, Landlock ABI {}", e.landlock_abi);
                exit(0)
            }
            Err(e) => {
                eprintln!("hb-sandbox-exec: {e}");
                exit(125)
            }
        }
    }
    let (policy_path, argv) = match args.as_slice() {
        [policy, sep, cmd @ ..] if sep == "--" && !cmd.is_empty() => (policy, cmd.to_vec()),
        _ => {
            eprintln!("{USAGE}");
            exit(2)
        }
    };
    let policy: hb_sandbox::Policy = match std::fs::read_to_string(policy_path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hb-sandbox-exec: {policy_path}: {e}");
            exit(2)
        }
    };
    let helper = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hb-sandbox-exec: cannot find my own executable: {e}");
            exit(125)
        }
    };
    let command = hb_sandbox::Command {
        argv,
        stdin: None,
        stdout: None,
        stderr: None,
    };
    match hb_sandbox::run(&policy, command, &helper) {
        Ok((hb_sandbox::Outcome::Exited(code), _)) => exit(code),
        Ok((hb_sandbox::Outcome::Signaled(sig), _)) => exit(128 + sig),
        Err(e) => {
            eprintln!("hb-sandbox-exec: {e}");
            exit(125)
        }
    }
}
