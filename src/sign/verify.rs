//! `hb verify <FILE|DIR>`: what a consumer runs on a downloaded release.
//!
//! Owns: finding what there is to check next to the target and checking it against a trust
//! store — `SHA256SUMS` (signed by `SHA256SUMS.asc`) and every file it lists, each file's
//! OpenPGP (`.asc`) and cosign-format (`.sig`) signature, every provenance envelope
//! (`*.intoto.jsonl`: its DSSE signature, that every subject is present with its digest, and
//! the digests of the byproducts present, i.e. the SBOMs) — as a list of [`Check`]s, one per
//! line of output. A failed check is a result, not an error: errors are for bad input (a
//! missing target). Does not: print, or pick exit codes.
//!
//! For a directory, every `*.tar.gz` in it must be listed in `SHA256SUMS` or named by a
//! provenance. For a single
//! file, whatever covers it is checked (the `SHA256SUMS` line, its signatures, provenance
//! naming it) and at least one signature must exist.

use super::dsse::{self, Envelope};
use super::keys::TrustStore;
use super::provenance::{PREDICATE_TYPE, STATEMENT_TYPE};
use super::sums::{self, Hashed};
use super::{cosign, openpgp, SignError, SUMS_NAME};
use crate::types::Sha256;
use sequoia_openpgp::types::HashAlgorithm;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One verification step and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `sha256`, `openpgp`, `cosign`, `provenance`, `subject`, `sbom` or `signed`.
    pub kind: &'static str,
    /// The file checked, relative to the directory verified.
    pub subject: String,
    pub ok: bool,
    /// For `ok`: who signed, for example; otherwise why it failed.
    pub detail: String,
}

impl Check {
    /// `ok   sha256 tools-linux-amd64.tar.gz` / `FAIL sha256 tools-linux-amd64.tar.gz: reason`.
    pub fn line(&self) -> String {
        match (self.ok, self.detail.is_empty()) {
            (true, true) => format!("ok   {} {}", self.kind, self.subject),
            (true, false) => format!("ok   {} {} ({})", self.kind, self.subject, self.detail),
            (false, _) => format!("FAIL {} {}: {}", self.kind, self.subject, self.detail),
        }
    }
}

/// Verify a file or a directory against `trust`.
pub fn verify(target: &Path, trust: &TrustStore) -> Result<Vec<Check>, SignError> {
    if target.is_dir() {
        let mut run = Run::new(target, trust);
        run.directory()?;
        Ok(run.checks)
    } else if target.is_file() {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = super::file_name(target)?;
        let mut run = Run::new(dir, trust);
        run.single(&name)?;
        Ok(run.checks)
    } else {
        Err(SignError::NotFound {
            path: target.to_owned(),
            what: "a file or a directory of signed artifacts",
        })
    }
}

struct Run<'a> {
    dir: PathBuf,
    trust: &'a TrustStore,
    checks: Vec<Check>,
    /// Files hashed so far, by name.
    hashed: BTreeMap<String, Hashed>,
    /// Files something vouches for: listed in `SHA256SUMS` or named by a provenance.
    covered: BTreeSet<String>,
}

impl<'a> Run<'a> {
    fn new(dir: &Path, trust: &'a TrustStore) -> Run<'a> {
        Run {
            dir: dir.to_owned(),
            trust,
            checks: Vec::new(),
            hashed: BTreeMap::new(),
            covered: BTreeSet::new(),
        }
    }

    fn record(&mut self, kind: &'static str, subject: &str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        self.checks.push(Check {
            kind,
            subject: subject.to_string(),
            ok,
            detail: result.unwrap_or_else(|reason| reason),
        });
        ok
    }

    fn hash(&mut self, name: &str) -> Result<Option<&Hashed>, SignError> {
        if !self.hashed.contains_key(name) {
            let path = self.dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            self.hashed.insert(name.to_string(), sums::hash_file(&path)?);
        }
        Ok(self.hashed.get(name))
    }

    fn directory(&mut self) -> Result<(), SignError> {
        let listed = self.sums(None)?;
        let provenance = self.provenance_files()?;
        for name in &provenance {
            self.provenance(name, None)?;
        }
        if listed.is_none() && provenance.is_empty() {
            self.record(
                "signed",
                &self.dir.display().to_string(),
                Err(format!("no {SUMS_NAME} and no provenance (*.intoto.jsonl) to verify")),
            );
            return Ok(());
        }
        for name in self.names_with_suffix(".tar.gz")? {
            if !self.covered.contains(&name) {
                self.record(
                    "signed",
                    &name,
                    Err(format!(
                        "not listed in {SUMS_NAME} nor named by a provenance: nothing vouches for it"
                    )),
                );
            }
        }
        Ok(())
    }

    fn single(&mut self, name: &str) -> Result<(), SignError> {
        if name == SUMS_NAME {
            self.sums(None)?;
            return Ok(());
        }
        if name.ends_with(".intoto.jsonl") {
            self.provenance(name, None)?;
            return Ok(());
        }
        let before = self.checks.len();
        let listed = self.sums(Some(name))?.unwrap_or_default();
        if !listed.iter().any(|n| n == name) {
            // Not in SHA256SUMS: check the signatures it has, if any.
            for (suffix, kind) in [(".asc", "openpgp"), (".sig", "cosign")] {
                if self.dir.join(format!("{name}{suffix}")).is_file() {
                    self.signature(kind, name)?;
                }
            }
        }
        for provenance in self.provenance_files()? {
            self.provenance(&provenance, Some(name))?;
        }
        if self.checks.len() == before {
            self.record(
                "signed",
                name,
                Err(format!("no {SUMS_NAME} entry, signature or provenance covers it")),
            );
        }
        Ok(())
    }

    /// Check `SHA256SUMS` and its signature, and the files it lists (only `only` when given,
    /// in which case nothing is checked unless it is listed). Returns the listed names, or
    /// `None` when there is no `SHA256SUMS`.
    fn sums(&mut self, only: Option<&str>) -> Result<Option<Vec<String>>, SignError> {
        let path = self.dir.join(SUMS_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs_err::read_to_string(&path)?;
        let lines = match sums::parse(&text, &path) {
            Ok(lines) => lines,
            Err(e) => {
                self.record("sha256", SUMS_NAME, Err(format!("malformed: {e}")));
                return Ok(Some(Vec::new()));
            }
        };
        let names: Vec<String> = lines.iter().map(|l| l.name.clone()).collect();
        self.covered.extend(names.iter().cloned());
        if only.is_some_and(|o| !names.iter().any(|n| n == o)) {
            return Ok(Some(names));
        }
        self.signature("openpgp", SUMS_NAME)?;
        for line in lines {
            if only.is_some_and(|o| o != line.name) {
                continue;
            }
            let result = match self.hash(&line.name)? {
                None => Err("listed in SHA256SUMS but missing".to_string()),
                Some(h) if h.sha256 == line.sha256 => Ok(String::new()),
                Some(h) => Err(format!("SHA256SUMS says {}, the file has {}", line.sha256, h.sha256)),
            };
            if self.record("sha256", &line.name, result) || self.dir.join(&line.name).is_file() {
                self.signature("openpgp", &line.name)?;
                self.signature("cosign", &line.name)?;
            }
        }
        Ok(Some(names))
    }

    /// Check the `.asc` (kind `openpgp`) or `.sig` (kind `cosign`) of `name`.
    fn signature(&mut self, kind: &'static str, name: &str) -> Result<(), SignError> {
        let suffix = if kind == "openpgp" { "asc" } else { "sig" };
        let signature_path = self.dir.join(format!("{name}.{suffix}"));
        if !signature_path.is_file() {
            self.record(kind, name, Err(format!("{name}.{suffix} is missing")));
            return Ok(());
        }
        let signature = fs_err::read(&signature_path)?;
        let Some((context, sha256)) = self.hash(name)?.map(|h| (h.openpgp.clone(), h.sha256.clone())) else {
            self.record(kind, name, Err("the file is missing".into()));
            return Ok(());
        };
        let result = if kind == "openpgp" {
            self.verify_openpgp(&signature, name, context)
        } else {
            self.verify_cosign(&signature, &sha256)
        };
        self.record(kind, name, result);
        Ok(())
    }

    fn verify_openpgp(
        &self,
        signature: &[u8],
        name: &str,
        sha256_context: sequoia_openpgp::crypto::hash::Context,
    ) -> Result<String, String> {
        if self.trust.certs.is_empty() {
            return Err(format!(
                "the trust store {} holds no OpenPGP certificate",
                self.trust.dir.display()
            ));
        }
        let path = self.dir.join(name);
        let mut hash = |algorithm: HashAlgorithm| {
            if algorithm == HashAlgorithm::SHA256 {
                return Ok(sha256_context.clone());
            }
            let mut context = sums::openpgp_context(algorithm).map_err(|e| e.to_string())?;
            sums::feed(&path, &mut context).map_err(|e| e.to_string())?;
            Ok(context)
        };
        let signer = openpgp::verify(signature, &mut hash, &self.trust.certs)?;
        Ok(match signer.user_id {
            Some(user_id) => format!("{user_id}, {}", signer.fingerprint),
            None => signer.fingerprint,
        })
    }

    fn verify_cosign(&self, signature: &[u8], sha256: &Sha256) -> Result<String, String> {
        if self.trust.ecdsa.is_empty() {
            return Err(format!(
                "the trust store {} holds no ECDSA public key (*.pem)",
                self.trust.dir.display()
            ));
        }
        let text = String::from_utf8_lossy(signature);
        cosign::decode_signature(&text)?;
        let digest = hex::decode(sha256.as_str()).expect("sha256 hex");
        for key in &self.trust.ecdsa {
            if cosign::verify_digest(&key.key, &digest, &text).is_ok() {
                return Ok(format!("key {}", &key.key_id[..16]));
            }
        }
        Err(format!(
            "BAD signature: no key of the trust store ({} ECDSA key(s)) verifies it; the file was changed or signed by an untrusted key",
            self.trust.ecdsa.len()
        ))
    }

    fn provenance_files(&self) -> Result<Vec<String>, SignError> {
        self.names_with_suffix(".intoto.jsonl")
    }

    fn names_with_suffix(&self, suffix: &str) -> Result<Vec<String>, SignError> {
        let mut names = Vec::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(suffix) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Check every envelope of the provenance file `name`; with `only`, only envelopes that
    /// name `only` as a subject, and only that subject.
    fn provenance(&mut self, name: &str, only: Option<&str>) -> Result<(), SignError> {
        let text = fs_err::read_to_string(self.dir.join(name))?;
        for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let label = if index == 0 {
                name.to_string()
            } else {
                format!("{name}:{}", index + 1)
            };
            let envelope: Envelope = match serde_json::from_str(line) {
                Ok(envelope) => envelope,
                Err(e) => {
                    if only.is_none() {
                        self.record("provenance", &label, Err(format!("not a DSSE envelope: {e}")));
                    }
                    continue;
                }
            };
            let statement = decode_statement(&envelope);
            let subjects = match &statement {
                Ok(statement) => subjects_of(statement),
                Err(_) => Vec::new(),
            };
            if only.is_some_and(|o| !subjects.iter().any(|(n, _)| n == o)) {
                continue;
            }
            let verified = dsse::verify(&envelope, self.trust)
                .map(|(_, key_id)| format!("DSSE, key {}", &key_id[..16.min(key_id.len())]));
            if !self.record("provenance", &label, verified) {
                continue;
            }
            let statement = match statement {
                Ok(statement) => statement,
                Err(reason) => {
                    self.record("provenance", &label, Err(reason));
                    continue;
                }
            };
            for (subject, expected) in subjects {
                if only.is_some_and(|o| o != subject) {
                    continue;
                }
                let result = match self.hash(&subject)? {
                    None => Err(format!("named by {name} but missing")),
                    Some(h) if Some(&h.sha256) == expected.as_ref() => Ok(String::new()),
                    Some(h) => Err(format!(
                        "the provenance says sha256 {}, the file has {}",
                        expected.map(|e| e.to_string()).unwrap_or_else(|| "(none)".into()),
                        h.sha256
                    )),
                };
                self.record("subject", &subject, result);
                self.covered.insert(subject);
            }
            if only.is_none() {
                self.byproducts(&statement)?;
            }
        }
        Ok(())
    }

    /// SBOMs named as byproducts: checked when present.
    fn byproducts(&mut self, statement: &serde_json::Value) -> Result<(), SignError> {
        let Some(byproducts) = statement["predicate"]["runDetails"]["byproducts"].as_array() else {
            return Ok(());
        };
        for byproduct in byproducts {
            let (Some(name), Some(expected)) = (byproduct["name"].as_str(), byproduct["digest"]["sha256"].as_str())
            else {
                continue;
            };
            if name.contains('/') {
                continue;
            }
            let Some(actual) = self.hash(name)?.map(|h| h.sha256.clone()) else {
                continue;
            };
            let result = if actual.as_str() == expected {
                Ok(String::new())
            } else {
                Err(format!("the provenance says sha256 {expected}, the file has {actual}"))
            };
            self.record("sbom", name, result);
        }
        Ok(())
    }
}

fn decode_statement(envelope: &Envelope) -> Result<serde_json::Value, String> {
    use base64::Engine;
    if envelope.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "payload type is {:?}, expected {:?}",
            envelope.payload_type,
            dsse::IN_TOTO_PAYLOAD_TYPE
        ));
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&envelope.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let statement: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    if statement["_type"] != STATEMENT_TYPE {
        return Err(format!("not an in-toto Statement v1 (_type {})", statement["_type"]));
    }
    if statement["predicateType"] != PREDICATE_TYPE {
        return Err(format!(
            "not SLSA provenance v1 (predicateType {})",
            statement["predicateType"]
        ));
    }
    Ok(statement)
}

fn subjects_of(statement: &serde_json::Value) -> Vec<(String, Option<Sha256>)> {
    statement["subject"]
        .as_array()
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| {
                    let name = s["name"].as_str()?;
                    let sha256 = s["digest"]["sha256"].as_str().and_then(|d| Sha256::parse(d).ok());
                    // Names that leave the directory are never looked up.
                    (!name.contains("..") && !name.starts_with('/')).then(|| (name.to_string(), sha256))
                })
                .collect()
        })
        .unwrap_or_default()
}
