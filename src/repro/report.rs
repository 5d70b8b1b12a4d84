//! The reports of a verify-repro run: the JSON document (schema `hb-repro-report/1`,
//! documented in README.md), JUnit XML for CI systems, a static HTML page, and the terminal
//! table. Formatting only: the verdicts come from [`super`].

use super::{NodeReport, ReproRun, Verdict};
use crate::dist::Artifact;
use crate::env::BuildEnvironment;
use crate::types::Arch;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

pub const SCHEMA: &str = "hb-repro-report/1";

/// The overall verdict: failed beats differs beats reproduced.
pub fn overall(nodes: &[NodeReport]) -> Verdict {
    if nodes.iter().any(|n| n.verdict == Verdict::Failed) {
        Verdict::Failed
    } else if nodes.iter().any(|n| n.verdict == Verdict::Differs) {
        Verdict::Differs
    } else {
        Verdict::Reproduced
    }
}

pub struct Meta<'a> {
    pub set: &'a str,
    pub rounds: usize,
    pub variations: Vec<&'static str>,
    pub arches: &'a [Arch],
    pub environments: &'a BTreeMap<Arch, BuildEnvironment>,
    pub started_unix: u64,
    pub finished_unix: u64,
    pub jobs: usize,
}

pub fn json(meta: &Meta<'_>, run: &ReproRun, artifacts: &[Artifact]) -> Value {
    let count = |v: Verdict| run.nodes.iter().filter(|n| n.verdict == v).count();
    json!({
        "schema": SCHEMA,
        "set": meta.set,
        "hb_version": env!("CARGO_PKG_VERSION"),
        "verdict": overall(&run.nodes),
        "rounds": meta.rounds,
        "variations": meta.variations,
        "arches": meta.arches,
        "jobs": meta.jobs,
        "environments": meta.environments.iter().map(|(arch, e)| (arch.to_string(), json!({
            "kind": e.kind, "digest": e.digest, "method": e.method, "impure": e.impure,
        }))).collect::<BTreeMap<_, _>>(),
        "started_unix": meta.started_unix,
        "finished_unix": meta.finished_unix,
        "duration_ms": run.duration_ms,
        "phase_ms": run.phase_ms,
        "build_ms_total": run.build_ms_total,
        "explanation_builds": run.explanation_builds,
        "summary": {
            "reproduced": count(Verdict::Reproduced),
            "differs": count(Verdict::Differs),
            "failed": count(Verdict::Failed),
        },
        "nodes": run.nodes,
        "artifacts": artifacts.iter().map(Artifact::to_json).collect::<Vec<_>>(),
    })
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// One line per difference and the explanation, for JUnit messages and the terminal.
fn details(node: &NodeReport) -> String {
    let mut text = String::new();
    if let Some(error) = &node.error {
        let _ = writeln!(text, "{error}");
    }
    for d in &node.differences {
        let _ = write!(text, "{}: {}", d.path, d.change);
        if let (Some(a), Some(b)) = (d.size_a, d.size_b) {
            let _ = write!(text, ", sizes {a} / {b}");
        }
        if let Some(offset) = d.first_difference {
            let _ = write!(text, ", first difference at byte {offset}");
        }
        if !d.elf_sections.is_empty() {
            let _ = write!(text, ", ELF sections {}", d.elf_sections.join(" "));
        }
        text.push('\n');
    }
    if node.differing_files > node.differences.len() {
        let _ = writeln!(text, "... {} differing files in all", node.differing_files);
    }
    if let Some(e) = &node.explanation {
        if !e.culprits.is_empty() {
            let _ = writeln!(
                text,
                "caused by: {}",
                e.culprits.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            );
        }
        for hint in &e.hints {
            let _ = writeln!(text, "hint: {hint}");
        }
        if !e.unavailable.is_empty() {
            let _ = writeln!(
                text,
                "not tried (unavailable here): {}",
                e.unavailable.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    text
}

pub fn junit(meta: &Meta<'_>, run: &ReproRun) -> String {
    let failures = run.nodes.iter().filter(|n| n.verdict == Verdict::Differs).count();
    let errors = run.nodes.iter().filter(|n| n.verdict == Verdict::Failed).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"hb verify-repro\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        run.nodes.len(),
        run.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        xml_escape(meta.set),
        run.nodes.len(),
        run.duration_ms as f64 / 1000.0
    );
    for node in &run.nodes {
        let time: u64 = node.rounds.iter().map(|r| r.duration_ms).sum();
        let _ = write!(
            xml,
            "    <testcase classname=\"{}.{}\" name=\"{} {}\" time=\"{:.3}\"",
            xml_escape(meta.set),
            node.arch,
            xml_escape(&node.package),
            xml_escape(&node.version),
            time as f64 / 1000.0
        );
        match node.verdict {
            Verdict::Reproduced => xml.push_str("/>\n"),
            Verdict::Differs => {
                let _ = writeln!(
                    xml,
                    ">\n      <failure message=\"not reproducible: {} file(s) differ\" type=\"differs\">{}</failure>\n    </testcase>",
                    node.differing_files,
                    xml_escape(&details(node))
                );
            }
            Verdict::Failed => {
                let _ = writeln!(
                    xml,
                    ">\n      <error message=\"build failed\" type=\"failed\">{}</error>\n    </testcase>",
                    xml_escape(&details(node))
                );
            }
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// A self-contained page: a package × arch matrix in colours, details expandable.
pub fn html(meta: &Meta<'_>, run: &ReproRun, artifacts: &[Artifact]) -> String {
    let verdict = overall(&run.nodes);
    let packages: BTreeSet<&str> = run.nodes.iter().map(|n| n.package.as_str()).collect();
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hb verify-repro: {set}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.4em; }} .verdict {{ padding: .2em .6em; border-radius: .3em; color: white; }}
.reproduced {{ background: #2e7d32; }} .differs {{ background: #c62828; }} .failed {{ background: #6a1b9a; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: .4em .8em; text-align: left; }}
td.cell {{ color: white; font-weight: bold; text-align: center; }}
details {{ margin: .5em 0; }} pre {{ background: #f5f5f5; padding: .6em; overflow-x: auto; }}
.meta {{ color: #555; font-size: .9em; }}
</style></head><body>
<h1>hb verify-repro: {set} <span class="verdict {verdict}">{verdict}</span></h1>
<p class="meta">{rounds} rounds · variations: {variations} · {n} builds checked · {secs:.1} s · hb {version}</p>
<table><thead><tr><th>package</th>"#,
        set = xml_escape(meta.set),
        verdict = verdict_name(verdict),
        rounds = meta.rounds,
        variations = xml_escape(&meta.variations.join(", ")),
        n = run.nodes.len(),
        secs = run.duration_ms as f64 / 1000.0,
        version = env!("CARGO_PKG_VERSION"),
    );
    for arch in meta.arches {
        let _ = write!(page, "<th>{arch}</th>");
    }
    page.push_str("</tr></thead><tbody>\n");
    for package in &packages {
        let _ = write!(page, "<tr><td>{}</td>", xml_escape(package));
        for arch in meta.arches {
            match run.nodes.iter().find(|n| n.package == *package && n.arch == *arch) {
                Some(n) => {
                    let _ = write!(
                        page,
                        "<td class=\"cell {v}\" title=\"{method}\">{v}</td>",
                        v = verdict_name(n.verdict),
                        method = xml_escape(&n.method)
                    );
                }
                None => page.push_str("<td></td>"),
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");
    for node in run.nodes.iter().filter(|n| n.verdict != Verdict::Reproduced) {
        let _ = writeln!(
            page,
            "<details><summary>{} ({}): {}</summary><pre>{}</pre></details>",
            xml_escape(&node.package),
            node.arch,
            verdict_name(node.verdict),
            xml_escape(&details(node))
        );
    }
    if !artifacts.is_empty() {
        page.push_str("<h2>Verified artifacts</h2><table><tr><th>file</th><th>sha256</th></tr>\n");
        for a in artifacts {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                xml_escape(
                    &a.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                a.sha256
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Reproduced => "reproduced",
        Verdict::Differs => "differs",
        Verdict::Failed => "failed",
    }
}

/// The terminal table: package × arch, then the details of what did not reproduce.
pub fn table(meta: &Meta<'_>, run: &ReproRun, color: bool) -> String {
    let packages: BTreeSet<&str> = run.nodes.iter().map(|n| n.package.as_str()).collect();
    let width = packages.iter().map(|p| p.len()).max().unwrap_or(7).max(7);
    let mut out = format!("{:width$}", "package");
    for arch in meta.arches {
        let _ = write!(out, "  {:<10}", arch.as_str());
    }
    out.push('\n');
    let paint = |v: Verdict| -> String {
        let name = verdict_name(v);
        if !color {
            return format!("{name:<10}");
        }
        let code = match v {
            Verdict::Reproduced => "32",
            Verdict::Differs => "31",
            Verdict::Failed => "35",
        };
        format!("\x1b[{code}m{name:<10}\x1b[0m")
    };
    for package in &packages {
        let _ = write!(out, "{package:width$}");
        for arch in meta.arches {
            match run.nodes.iter().find(|n| n.package == *package && n.arch == *arch) {
                Some(n) => {
                    let _ = write!(out, "  {}", paint(n.verdict));
                }
                None => {
                    let _ = write!(out, "  {:<10}", "-");
                }
            }
        }
        out.push('\n');
    }
    for node in run.nodes.iter().filter(|n| n.verdict != Verdict::Reproduced) {
        let _ = writeln!(
            out,
            "\n{} ({}): {}",
            node.package,
            node.arch,
            verdict_name(node.verdict)
        );
        for line in details(node).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
