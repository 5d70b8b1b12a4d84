//! `hb lock <SET>`: resolve the set's Debian environment, for every target, into the exact
//! `.deb` files of `set.lock` (with the host's apt, privately configured). Building then
//! needs only hb and the lock.

use super::Context;
use crate::cli::LockArgs;
use crate::env::LOCK_FILE;
use crate::error::Error;
use crate::fetch::Mirrors;
use crate::lock;
use crate::recipe::{self, Environment};
use serde_json::json;

pub fn run(ctx: &Context, args: LockArgs) -> Result<i32, Error> {
    let set = recipe::load_set(&args.set)?;
    let Environment::Debian(spec) = &set.environment else {
        return Err(Error::Usage {
            message: format!(
                "{}: the set's environment is not kind = \"debian\"; there is nothing to lock",
                args.set.display()
            ),
            hint: Some("see the recipe reference in README.md for [environment]".into()),
        });
    };
    let store = ctx.open_store()?;
    // apt's package lists are kept between runs, so a re-lock only checks they are current.
    let work = store.root().join("apt").join(&spec.suite);
    fs_err::create_dir_all(&work).map_err(crate::store::StoreError::Io)?;
    ctx.ui.status(&format!(
        "resolving {} package(s) of suite {} for {}",
        spec.packages.len(),
        spec.suite,
        set.targets.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let resolved =
        lock::resolve(spec, &set.targets, &Mirrors::from_environment(), &work).map_err(crate::env::EnvError::Lock)?;
    let path = set.dir.join(LOCK_FILE);
    let previous = lock::read(&path).ok();
    lock::write(&resolved, &path).map_err(crate::env::EnvError::Lock)?;
    // `--cross` builds run in the host architecture's environment plus cross toolchains.
    let cross_path = set.dir.join(crate::env::CROSS_LOCK_FILE);
    if spec.cross_packages.is_empty() {
        if cross_path.exists() {
            fs_err::remove_file(&cross_path).map_err(crate::store::StoreError::Io)?;
        }
    } else {
        let host = crate::env::host_arch()?;
        ctx.ui.status(&format!(
            "resolving the {host} cross environment (+ {})",
            spec.cross_packages.join(", ")
        ));
        let cross = lock::resolve(&spec.cross(), &[host], &Mirrors::from_environment(), &work)
            .map_err(crate::env::EnvError::Lock)?;
        lock::write(&cross, &cross_path).map_err(crate::env::EnvError::Lock)?;
        ctx.ui.status(&format!("wrote {}", cross_path.display()));
    }
    let summary: Vec<_> = resolved
        .targets
        .iter()
        .map(|t| {
            json!({
                "arch": t.arch,
                "debs": t.debs.len(),
                "bytes": t.debs.iter().map(|d| d.size).sum::<u64>(),
                "environment_digest": resolved.environment_digest(t.arch, &spec.links),
            })
        })
        .collect();
    if ctx.ui.json {
        ctx.ui.print_json(&json!({
            "lock": path,
            "changed": previous.as_ref() != Some(&resolved),
            "targets": summary,
            "emulators": resolved.emulators.iter().map(|e| json!({"host": e.host, "target": e.target, "deb": e.deb.label()})).collect::<Vec<_>>(),
        }));
    } else {
        for t in &resolved.targets {
            ctx.ui.status(&format!(
                "{}: {} packages, {:.1} MB, environment {}",
                t.arch,
                t.debs.len(),
                t.debs.iter().map(|d| d.size).sum::<u64>() as f64 / 1e6,
                resolved.environment_digest(t.arch, &spec.links).short()
            ));
        }
        ctx.ui.status(&format!(
            "wrote {}{}",
            path.display(),
            if previous.as_ref() == Some(&resolved) {
                " (unchanged)"
            } else {
                ""
            }
        ));
    }
    Ok(0)
}
