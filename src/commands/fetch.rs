//! `hb fetch <SET>`: download every source of a set into the store, verified by sha256.

use super::{prepare, Context};
use crate::cli::FetchArgs;
use crate::error::Error;
use crate::executor;
use crate::fetch::{Fetcher, Mirrors};
use serde_json::json;

pub fn run(ctx: &Context, args: FetchArgs) -> Result<i32, Error> {
    let prepared = prepare(ctx, &args.target, &[], false)?;
    let store = ctx.open_store()?;
    let _store_lock = store.lock_shared()?;
    let fetcher = Fetcher::new(&store, Mirrors::from_environment(), false);
    let paths = executor::fetch_sources(&prepared.set, &prepared.plan, &fetcher, &ctx.ui)?;
    let mut debs = std::collections::BTreeMap::new();
    for env in prepared.environments.values() {
        for deb in env.debs() {
            debs.insert(deb.sha256.clone(), deb);
        }
    }
    for deb in debs.values() {
        let progress = crate::ui::FetchProgress(&ctx.ui, Default::default());
        fetcher.fetch(&deb.label(), &[deb.url()], &deb.sha256, &progress)?;
    }
    if ctx.ui.json {
        let sources: Vec<_> = paths
            .iter()
            .map(|((package, index), path)| json!({"package": package, "index": index, "path": path}))
            .collect();
        ctx.ui
            .print_json(&json!({ "set": prepared.set.name, "sources": sources }));
    } else {
        ctx.ui.status(&format!(
            "{} source(s) of set {:?} are in the store",
            paths.len(),
            prepared.set.name
        ));
    }
    Ok(0)
}
