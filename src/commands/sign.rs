//! `hb sign <FILES..>`: OpenPGP and cosign-format signatures plus a signed SHA256SUMS, for
//! files a passing reproducibility report covers.

use super::key::keys_dir;
use super::Context;
use crate::cli::SignArgs;
use crate::error::Error;
use crate::sign::detached::{self, SignOptions};
use crate::sign::{keys, Passphrase};
use serde_json::json;

pub fn run(ctx: &Context, args: SignArgs) -> Result<i32, Error> {
    let key = keys::select(&keys_dir(&args.signing.keys), args.signing.key.as_deref())?;
    let passphrase = Passphrase::obtain(args.signing.passphrase_file.as_deref())?;
    let spinner = ctx.ui.spinner("sign");
    let outcome = detached::sign_files(
        &SignOptions {
            files: &args.files,
            out: args.out.clone(),
            key: &key,
            passphrase: &passphrase,
            repro_report: args.repro_report.clone(),
            no_repro_gate: args.no_repro_gate,
        },
        &|message| {
            spinner.set_message(message.to_string());
            ctx.ui.debug(message);
        },
    );
    spinner.finish_and_clear();
    let outcome = outcome?;
    if !outcome.record.repro_gate.enforced {
        ctx.ui.warn("--no-repro-gate: signed without a passing reproducibility report (recorded in hb-sign.json and the provenance)");
    }
    if ctx.ui.json {
        ctx.ui.print_json(&json!({
            "out": outcome.out_dir,
            "sha256sums": outcome.sums,
            "sha256sums_signature": outcome.sums_signature,
            "record": outcome.record_path,
            "repro_gate": outcome.record.repro_gate,
            "key": {"openpgp": outcome.record.openpgp_fingerprint, "ecdsa": outcome.record.ecdsa_key_id},
            "files": outcome.files.iter().map(|f| json!({
                "name": f.name,
                "sha256": f.sha256,
                "size": f.size,
                "openpgp_signature": f.openpgp_signature,
                "cosign_signature": f.cosign_signature,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for file in &outcome.files {
            ctx.ui.status(&format!("signed {} (sha256 {})", file.name, file.sha256));
        }
        ctx.ui.status(&format!(
            "wrote {}, {} and {} signature file(s) in {} with key {} ({})",
            outcome.sums.display(),
            outcome.sums_signature.display(),
            outcome.files.len() * 2,
            outcome.out_dir.display(),
            key.label(),
            key.info.name
        ));
    }
    Ok(0)
}
