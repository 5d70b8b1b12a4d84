//! `hb attest <SET>`: SLSA provenance (DSSE-signed) and SPDX + CycloneDX SBOMs for the
//! artifacts of the set's last build.

use super::key::keys_dir;
use super::Context;
use crate::cli::AttestArgs;
use crate::env::EnvError;
use crate::error::Error;
use crate::recipe::{self, Environment};
use crate::sign::attest::{self, AttestOptions};
use crate::sign::{keys, Passphrase};
use serde_json::json;

pub fn run(ctx: &Context, args: AttestArgs) -> Result<i32, Error> {
    let set = recipe::load_set(&args.set)?;
    let read_lock = |name: &str| -> Result<Option<crate::lock::Lock>, Error> {
        let path = set.dir.join(name);
        match set.environment {
            Environment::Debian(_) if path.is_file() => Ok(Some(
                crate::lock::read(&path).map_err(|e| Error::Env(EnvError::Lock(e)))?,
            )),
            _ => Ok(None),
        }
    };
    let lock = read_lock(crate::env::LOCK_FILE)?;
    let cross_lock = read_lock(crate::env::CROSS_LOCK_FILE)?;
    let key = keys::select(&keys_dir(&args.signing.keys), args.signing.key.as_deref())?;
    let passphrase = Passphrase::obtain(args.signing.passphrase_file.as_deref())?;
    let repro_report = args
        .repro_report
        .clone()
        .unwrap_or_else(|| args.dist.join("repro/report.json"));
    let spinner = ctx.ui.spinner("attest");
    let outcome = attest::attest(
        &AttestOptions {
            set: &set,
            set_path: &args.set,
            lock: lock.as_ref(),
            cross_lock: cross_lock.as_ref(),
            dist: &args.dist,
            out: args.out.as_deref(),
            key: &key,
            passphrase: &passphrase,
            repro_report,
            no_repro_gate: args.no_repro_gate,
            builder_id: &args.builder_id,
        },
        &|message| {
            spinner.set_message(message.to_string());
            ctx.ui.debug(message);
        },
    );
    spinner.finish_and_clear();
    let outcome = outcome?;
    if !outcome.gate.enforced {
        ctx.ui
            .warn("--no-repro-gate: attested without a passing reproducibility report (recorded in the provenance)");
    }
    if ctx.ui.json {
        ctx.ui.print_json(&json!({
            "provenance": outcome.provenance,
            "sboms": outcome.sboms,
            "subjects": outcome.subjects.iter().map(|(name, sha256)| json!({"name": name, "sha256": sha256})).collect::<Vec<_>>(),
            "repro_gate": outcome.gate,
            "key_id": outcome.key_id,
        }));
    } else {
        for (name, sha256) in &outcome.subjects {
            ctx.ui.status(&format!("attested {name} (sha256 {sha256})"));
        }
        for sbom in &outcome.sboms {
            ctx.ui.status(&format!("wrote {}", sbom.display()));
        }
        ctx.ui.status(&format!(
            "wrote {} (SLSA provenance v1, DSSE, key {})",
            outcome.provenance.display(),
            &outcome.key_id[..16]
        ));
    }
    Ok(0)
}
