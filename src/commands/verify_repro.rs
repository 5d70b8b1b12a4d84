//! `hb verify-repro <SET>`: the reproducibility gate. Rebuilds every node from scratch in
//! each round, compares, explains, writes the reports, and — only when everything
//! reproduced — the verified artifacts, whose digests the report records for `hb sign`.

use super::{prepare, sandbox_helper, Context};
use crate::cli::VerifyReproArgs;
use crate::dist;
use crate::error::{Error, EXIT_BUILD_FAILED, EXIT_CHECK_FAILED};
use crate::repro::{self, report, ReproOptions, Verdict};
use crate::store::write_atomic;
use crate::variation;
use std::time::{SystemTime, UNIX_EPOCH};

pub const REPORT_JSON: &str = "report.json";
pub const REPORT_HTML: &str = "report.html";

pub fn run(ctx: &Context, args: VerifyReproArgs) -> Result<i32, Error> {
    let variations = variation::parse_list(&args.vary).map_err(|message| Error::Usage {
        message: format!("--vary: {message}"),
        hint: None,
    })?;
    if args.rounds < 2 {
        return Err(Error::Usage {
            message: format!(
                "--rounds {}: at least 2 rounds are needed to compare anything",
                args.rounds
            ),
            hint: Some("the default is 2".into()),
        });
    }
    let started = SystemTime::now();
    let mut prepared = prepare(ctx, &args.target, &args.arch, args.cross)?;
    let store = ctx.open_store()?;
    let _store_lock = store.lock_shared()?;
    let sources = super::fetch_and_materialize(ctx, &mut prepared, &store, args.offline)?;
    let helper = sandbox_helper()?;
    let work = store.temp_dir("verify-repro-")?;
    let hb_jobs = super::host_jobs();
    let options = ReproOptions {
        rounds: args.rounds,
        variations: variations.clone(),
        explain: !args.no_explain,
        jobs: ctx.jobs,
        hb_jobs,
        work: work.path().to_owned(),
        report_dir: args.report.clone(),
    };
    fs_err::create_dir_all(&args.report).map_err(crate::store::StoreError::Io)?;
    let cx = repro::Context {
        store: &store,
        set: &prepared.set,
        plan: &prepared.plan,
        environments: &prepared.environments,
        sources: &sources,
        ui: &ctx.ui,
        sandbox_helper: &helper,
    };
    let run = repro::verify(&cx, &options)?;
    let verdict = report::overall(&run.nodes);

    // Only a passing run produces artifacts, from round 1 (the canonical build).
    let mut artifacts = Vec::new();
    if verdict == Verdict::Reproduced {
        if let Some(results) = &run.canonical {
            for &arch in &prepared.arches {
                artifacts.push(dist::write_artifact(
                    &store,
                    &prepared.set,
                    &prepared.plan,
                    results,
                    arch,
                    &args.out,
                    work.path(),
                )?);
            }
        }
    }
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let meta = report::Meta {
        set: &prepared.set.name,
        rounds: args.rounds,
        variations: variations.iter().map(|v| v.name()).collect(),
        arches: &prepared.arches,
        environments: &prepared.environments,
        started_unix: unix(started),
        finished_unix: unix(SystemTime::now()),
        jobs: ctx.jobs,
    };
    let document = report::json(&meta, &run, &artifacts);
    let mut bytes = serde_json::to_vec_pretty(&document).expect("json values always serialize");
    bytes.push(b'\n');
    write_atomic(&args.report.join(REPORT_JSON), &bytes)?;
    write_atomic(
        &args.report.join(REPORT_HTML),
        report::html(&meta, &run, &artifacts).as_bytes(),
    )?;
    if let Some(junit) = &args.junit {
        if let Some(parent) = junit.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs_err::create_dir_all(parent).map_err(crate::store::StoreError::Io)?;
        }
        write_atomic(junit, report::junit(&meta, &run).as_bytes())?;
    }

    if ctx.ui.json {
        ctx.ui.print_json(&document);
    } else {
        print!("{}", report::table(&meta, &run, ctx.ui.color));
        ctx.ui.status(&format!(
            "{}: {} build(s) in {:.1} s (sum of build times {:.1} s, {} explanation build(s)); report: {}",
            match verdict {
                Verdict::Reproduced => "reproduced",
                Verdict::Differs => "NOT reproducible",
                Verdict::Failed => "a build FAILED",
            },
            run.nodes.len() * args.rounds,
            run.duration_ms as f64 / 1000.0,
            run.build_ms_total as f64 / 1000.0,
            run.explanation_builds,
            args.report.join(REPORT_HTML).display()
        ));
        for a in &artifacts {
            ctx.ui
                .status(&format!("verified {} (sha256 {})", a.path.display(), a.sha256));
        }
    }
    Ok(match verdict {
        Verdict::Reproduced => 0,
        Verdict::Differs => EXIT_CHECK_FAILED,
        Verdict::Failed => EXIT_BUILD_FAILED,
    })
}
