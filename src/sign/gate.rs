//! The reproducibility gate: hb signs and attests only artifacts that a passing
//! `hb verify-repro` report covers, unless the user says `--no-repro-gate` (which is then
//! recorded: in `hb-sign.json` and in the provenance).
//!
//! Owns: reading the report (only the parts of its contract hb relies on), deciding whether a
//! file is covered (report verdict `reproduced` and the file's sha256 among its artifacts),
//! and the [`GateRecord`] that says how the decision was made. Does not: run verify-repro or
//! hash files (callers pass digests).
//!
//! The report contract (`hb-repro-report/1`): `{"schema": "hb-repro-report/1", "verdict":
//! "reproduced" | "differs" | "failed", "artifacts": [{"file", "arch", "sha256"}], "rounds":
//! N, "variations": [..], ...}`; other fields are ignored.

use super::SignError;
use crate::types::Sha256;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const REPORT_SCHEMA: &str = "hb-repro-report/1";
/// The only verdict that lets an artifact through.
pub const PASSING_VERDICT: &str = "reproduced";

#[derive(Debug, Clone, Deserialize)]
pub struct ReproReport {
    pub schema: String,
    pub verdict: String,
    pub artifacts: Vec<ReproArtifact>,
    #[serde(default)]
    pub rounds: Option<u64>,
    #[serde(default)]
    pub variations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReproArtifact {
    pub file: String,
    /// Unused by the gate, but part of the contract: a malformed one is refused.
    #[serde(default)]
    pub arch: Option<String>,
    pub sha256: Sha256,
}

/// What the provenance says about a report (its digest pins the exact file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportSummary {
    pub path: String,
    pub sha256: Sha256,
    pub verdict: String,
    pub rounds: Option<u64>,
    pub variations: Vec<String>,
}

/// How the gate decided, for `hb-sign.json` and the provenance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GateRecord {
    /// False when `--no-repro-gate` was given.
    pub enforced: bool,
    /// The report consulted (also recorded when the gate was bypassed but a report existed).
    pub report: Option<ReportSummary>,
}

/// Read and check a report file.
pub fn load(path: &Path) -> Result<(ReproReport, ReportSummary), SignError> {
    if !path.is_file() {
        return Err(SignError::ReproReportMissing { path: path.to_owned() });
    }
    let bytes = fs_err::read(path)?;
    let report: ReproReport = serde_json::from_slice(&bytes).map_err(|e| SignError::BadInput {
        path: path.to_owned(),
        message: format!("not a reproducibility report: {e}"),
    })?;
    if report.schema != REPORT_SCHEMA {
        return Err(SignError::BadInput {
            path: path.to_owned(),
            message: format!("schema is {:?}, expected {REPORT_SCHEMA:?}", report.schema),
        });
    }
    let summary = ReportSummary {
        path: path.display().to_string(),
        sha256: Sha256::of_bytes(&bytes),
        verdict: report.verdict.clone(),
        rounds: report.rounds,
        variations: report.variations.clone(),
    };
    Ok((report, summary))
}

/// Check that the report at `report_path` covers every `(path, sha256)` of `files`; with
/// `bypass`, only record (reading the report when it exists, to record what it said).
pub fn check(files: &[(PathBuf, Sha256)], report_path: &Path, bypass: bool) -> Result<GateRecord, SignError> {
    if bypass {
        let report = load(report_path).ok().map(|(_, summary)| summary);
        return Ok(GateRecord {
            enforced: false,
            report,
        });
    }
    let (report, summary) = load(report_path)?;
    for (file, sha256) in files {
        if report.verdict != PASSING_VERDICT {
            return Err(SignError::NotCovered {
                file: file.clone(),
                report: report_path.to_owned(),
                reason: format!("the report's verdict is {:?}, not {PASSING_VERDICT:?}", report.verdict),
            });
        }
        if !report.artifacts.iter().any(|a| &a.sha256 == sha256) {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let reason = match report.artifacts.iter().find(|a| a.file == name) {
                Some(listed) => format!(
                    "the report lists {name} with sha256 {}, the file has {sha256}",
                    listed.sha256
                ),
                None => format!("no artifact in the report has its sha256 {sha256}"),
            };
            return Err(SignError::NotCovered {
                file: file.clone(),
                report: report_path.to_owned(),
                reason,
            });
        }
    }
    Ok(GateRecord {
        enforced: true,
        report: Some(summary),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dir: &Path, verdict: &str, sha: &Sha256) -> PathBuf {
        let path = dir.join("report.json");
        let text = format!(
            r#"{{"schema":"hb-repro-report/1","verdict":"{verdict}","artifacts":[{{"file":"a.tar.gz","arch":"amd64","sha256":"{sha}"}}],"rounds":2,"variations":["tz"],"extra":1}}"#
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn covered_only_when_reproduced_and_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let good = Sha256::of_bytes(b"a");
        let other = Sha256::of_bytes(b"b");
        let files = vec![(PathBuf::from("dist/a.tar.gz"), good.clone())];
        let path = report(dir.path(), "reproduced", &good);
        assert!(check(&files, &path, false).unwrap().enforced);
        let path = report(dir.path(), "reproduced", &other);
        let err = check(&files, &path, false).unwrap_err().to_string();
        assert!(err.contains("lists a.tar.gz with sha256"), "{err}");
        let path = report(dir.path(), "differs", &good);
        let err = check(&files, &path, false).unwrap_err().to_string();
        assert!(err.contains("\"differs\""), "{err}");
        let bypassed = check(&files, &path, true).unwrap();
        assert!(!bypassed.enforced && bypassed.report.is_some());
        assert!(matches!(
            check(&files, &dir.path().join("none.json"), false),
            Err(SignError::ReproReportMissing { .. })
        ));
    }
}
