//! `hb verify <FILE|DIR>`: checksums, both signature kinds and provenance against a trust
//! store; one line per check, exit 1 when any failed.

use super::Context;
use crate::cli::VerifyArgs;
use crate::error::{Error, EXIT_CHECK_FAILED};
use crate::sign::{self, keys, verify};
use crate::ui::Verbosity;
use serde_json::json;

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<i32, Error> {
    let trust_dir = args.trust.clone().unwrap_or_else(|| sign::config_dir("trust"));
    let trust = keys::load_trust(&trust_dir)?;
    let checks = verify::verify(&args.target, &trust)?;
    let failed = checks.iter().filter(|c| !c.ok).count();
    if ctx.ui.json {
        ctx.ui.print_json(&json!({
            "target": args.target,
            "trust": trust_dir,
            "ok": failed == 0,
            "checks": checks,
        }));
    } else {
        for check in &checks {
            if !check.ok || ctx.ui.verbosity != Verbosity::Quiet {
                println!("{}", check.line());
            }
        }
    }
    if failed == 0 {
        ctx.ui.status(&format!(
            "{}: all {} check(s) passed",
            args.target.display(),
            checks.len()
        ));
        Ok(0)
    } else {
        eprintln!(
            "error: {failed} of {} check(s) failed for {}",
            checks.len(),
            args.target.display()
        );
        Ok(EXIT_CHECK_FAILED)
    }
}
