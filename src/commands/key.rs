//! `hb key generate|list|export`: the signing keys of a key directory.

use super::Context;
use crate::cli::{ExportFormat, KeyArgs, KeyCommand, KeyDirArgs};
use crate::error::Error;
use crate::sign::keys::{self, KeyEntry};
use crate::sign::{self, Passphrase};
use serde_json::json;
use std::path::PathBuf;

pub fn run(ctx: &Context, args: KeyArgs) -> Result<i32, Error> {
    match args.command {
        KeyCommand::Generate {
            name,
            keys: dir,
            passphrase_file,
        } => {
            let dir = keys_dir(&dir);
            let passphrase = Passphrase::obtain(passphrase_file.as_deref())?;
            let spinner = ctx.ui.spinner("key");
            spinner.set_message("generating");
            let entry = keys::generate(&dir, &name, &passphrase);
            spinner.finish_and_clear();
            let entry = entry?;
            if ctx.ui.json {
                ctx.ui.print_json(&describe(&entry));
            } else {
                ctx.ui
                    .status(&format!("generated key {} in {}", entry.label(), entry.dir.display()));
                ctx.ui.status(&format!("  name     {}", entry.info.name));
                ctx.ui.status(&format!("  openpgp  {}", entry.info.openpgp_fingerprint));
                ctx.ui.status(&format!("  ecdsa    {}", entry.info.ecdsa_key_id));
                ctx.ui.status("share the public keys with `hb key export --out DIR`");
            }
            Ok(0)
        }
        KeyCommand::List { keys: dir } => {
            let dir = keys_dir(&dir);
            let entries = keys::list(&dir)?;
            if ctx.ui.json {
                ctx.ui.print_json(&json!({
                    "keys_dir": dir,
                    "keys": entries.iter().map(describe).collect::<Vec<_>>(),
                }));
            } else if entries.is_empty() {
                ctx.ui.status(&format!("no keys in {}", dir.display()));
            } else {
                for entry in &entries {
                    println!(
                        "{}  {}  {}  created {}",
                        entry.label(),
                        entry.info.name,
                        entry.info.openpgp_fingerprint,
                        sign::rfc3339(entry.info.created_unix)
                    );
                }
            }
            Ok(0)
        }
        KeyCommand::Export {
            keys: dir,
            key,
            out,
            format,
        } => {
            let entry = keys::select(&keys_dir(&dir), key.as_deref())?;
            let (openpgp, pem) = entry.export()?;
            match out {
                Some(out) => {
                    fs_err::create_dir_all(&out).map_err(sign::SignError::Io)?;
                    let asc_path = out.join(format!("{}.asc", entry.label()));
                    let pem_path = out.join(format!("{}.pem", entry.label()));
                    fs_err::write(&asc_path, &openpgp).map_err(sign::SignError::Io)?;
                    fs_err::write(&pem_path, &pem).map_err(sign::SignError::Io)?;
                    if ctx.ui.json {
                        ctx.ui
                            .print_json(&json!({"openpgp": asc_path, "pem": pem_path, "key": describe(&entry)}));
                    } else {
                        ctx.ui
                            .status(&format!("wrote {} and {}", asc_path.display(), pem_path.display()));
                    }
                }
                None if ctx.ui.json => ctx.ui.print_json(&json!({
                    "openpgp": String::from_utf8_lossy(&openpgp),
                    "pem": pem,
                    "key": describe(&entry),
                })),
                None => {
                    if format != ExportFormat::Pem {
                        print!("{}", String::from_utf8_lossy(&openpgp));
                    }
                    if format != ExportFormat::Openpgp {
                        print!("{pem}");
                    }
                }
            }
            Ok(0)
        }
    }
}

/// `--keys`, `HB_KEYS` (through clap), or the default under the configuration directory.
pub fn keys_dir(args: &KeyDirArgs) -> PathBuf {
    args.keys.clone().unwrap_or_else(|| sign::config_dir("keys"))
}

fn describe(entry: &KeyEntry) -> serde_json::Value {
    json!({
        "label": entry.label(),
        "name": entry.info.name,
        "created": sign::rfc3339(entry.info.created_unix),
        "openpgp_fingerprint": entry.info.openpgp_fingerprint,
        "ecdsa_key_id": entry.info.ecdsa_key_id,
        "dir": entry.dir,
    })
}
