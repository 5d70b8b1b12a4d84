//! `hb sign`: detached signatures and checksums for a set of files.
//!
//! Owns: the order of work (hash every file once, pass the reproducibility gate, unlock the
//! keys, sign) and what lands in the output directory: `SHA256SUMS`, `SHA256SUMS.asc`, and per
//! file `<name>.asc` (armored OpenPGP) and `<name>.sig` (cosign format), plus `hb-sign.json`,
//! the record of what was signed and how the gate decided (read by `hb attest`). Does not:
//! choose the key or read the passphrase (the command does), or talk to people.
//!
//! Names in `SHA256SUMS` are relative to the output directory when the file is inside it (the
//! usual case: signatures next to the files), else the bare file name. `SHA256SUMS` lists
//! exactly the files of one invocation: signing again replaces it.

use super::gate::{self, GateRecord};
use super::keys::KeyEntry;
use super::sums::{self, SumLine};
use super::{cosign, openpgp, Passphrase, SignError, SIGN_RECORD_NAME, SUMS_NAME};
use crate::types::Sha256;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const SIGN_RECORD_SCHEMA: &str = "hb-sign/1";
/// Signatures and checksums are public: world-readable.
const PUBLIC_FILE_MODE: u32 = 0o644;

pub struct SignOptions<'a> {
    pub files: &'a [PathBuf],
    /// `None`: the directory of the files (they must share one).
    pub out: Option<PathBuf>,
    pub key: &'a KeyEntry,
    pub passphrase: &'a Passphrase,
    pub repro_report: PathBuf,
    pub no_repro_gate: bool,
}

/// `hb-sign.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignRecord {
    pub schema: String,
    pub files: Vec<RecordFile>,
    pub repro_gate: GateRecord,
    pub openpgp_fingerprint: String,
    pub ecdsa_key_id: String,
    pub signed_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordFile {
    pub name: String,
    pub sha256: Sha256,
    pub size: u64,
}

#[derive(Debug)]
pub struct SignedFile {
    pub path: PathBuf,
    pub name: String,
    pub sha256: Sha256,
    pub size: u64,
    pub openpgp_signature: PathBuf,
    pub cosign_signature: PathBuf,
}

#[derive(Debug)]
pub struct SignOutcome {
    pub out_dir: PathBuf,
    pub files: Vec<SignedFile>,
    pub sums: PathBuf,
    pub sums_signature: PathBuf,
    pub record: SignRecord,
    pub record_path: PathBuf,
}

/// Read an existing `hb-sign.json` from `dir`, if there is one.
pub fn read_record(dir: &Path) -> Result<Option<SignRecord>, SignError> {
    let path = dir.join(SIGN_RECORD_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    let record = serde_json::from_slice(&fs_err::read(&path)?).map_err(|e| SignError::BadInput {
        path: path.clone(),
        message: format!("not a signing record: {e}"),
    })?;
    Ok(Some(record))
}

/// Sign `options.files`; `progress` hears what is being done.
pub fn sign_files(options: &SignOptions<'_>, progress: &dyn Fn(&str)) -> Result<SignOutcome, SignError> {
    if options.files.is_empty() {
        return Err(SignError::Usage {
            message: "no files to sign".into(),
            hint: Some("hb sign dist/*.tar.gz".into()),
        });
    }
    for file in options.files {
        if !file.is_file() {
            return Err(SignError::NotFound {
                path: file.clone(),
                what: "a file to sign",
            });
        }
    }
    let out_dir = match &options.out {
        Some(out) => out.clone(),
        None => common_parent(options.files)?,
    };
    fs_err::create_dir_all(&out_dir)?;
    let out_canonical = fs_err::canonicalize(&out_dir)?;

    let mut hashed = Vec::new();
    for file in options.files {
        progress(&format!("hashing {}", file.display()));
        let name = sum_name(file, &out_canonical)?;
        if hashed
            .iter()
            .any(|(n, _, _): &(String, PathBuf, sums::Hashed)| n == &name)
        {
            return Err(SignError::Usage {
                message: format!("{name} is given twice"),
                hint: None,
            });
        }
        hashed.push((name, file.clone(), sums::hash_file(file)?));
    }
    let digests: Vec<(PathBuf, Sha256)> = hashed.iter().map(|(_, p, h)| (p.clone(), h.sha256.clone())).collect();
    let gate = gate::check(&digests, &options.repro_report, options.no_repro_gate)?;

    let mut openpgp_key = options.key.unlock_openpgp(options.passphrase)?;
    let ecdsa_key = options.key.unlock_ecdsa(options.passphrase)?;

    let mut signed = Vec::new();
    let mut lines = Vec::new();
    for (name, path, hashed) in hashed {
        progress(&format!("signing {name}"));
        let digest = hex::decode(hashed.sha256.as_str()).expect("sha256 hex");
        let asc = openpgp::sign(&mut openpgp_key, hashed.openpgp)?;
        let sig = cosign::sign_digest(&ecdsa_key, &digest)?;
        let openpgp_signature = out_dir.join(format!("{name}.asc"));
        let cosign_signature = out_dir.join(format!("{name}.sig"));
        super::write_file(&openpgp_signature, &asc, PUBLIC_FILE_MODE)?;
        super::write_file(&cosign_signature, sig.as_bytes(), PUBLIC_FILE_MODE)?;
        lines.push(SumLine {
            sha256: hashed.sha256.clone(),
            name: name.clone(),
        });
        signed.push(SignedFile {
            path,
            name,
            sha256: hashed.sha256,
            size: hashed.size,
            openpgp_signature,
            cosign_signature,
        });
    }

    let sums_text = sums::render(&lines);
    let sums_path = out_dir.join(SUMS_NAME);
    super::write_file(&sums_path, sums_text.as_bytes(), PUBLIC_FILE_MODE)?;
    let mut context = sums::openpgp_context(sequoia_openpgp::types::HashAlgorithm::SHA256)?;
    context.update(sums_text.as_bytes());
    let sums_signature = out_dir.join(format!("{SUMS_NAME}.asc"));
    super::write_file(
        &sums_signature,
        &openpgp::sign(&mut openpgp_key, context)?,
        PUBLIC_FILE_MODE,
    )?;

    let record = SignRecord {
        schema: SIGN_RECORD_SCHEMA.into(),
        files: signed
            .iter()
            .map(|f| RecordFile {
                name: f.name.clone(),
                sha256: f.sha256.clone(),
                size: f.size,
            })
            .collect(),
        repro_gate: gate,
        openpgp_fingerprint: options.key.info.openpgp_fingerprint.clone(),
        ecdsa_key_id: options.key.info.ecdsa_key_id.clone(),
        signed_unix: super::now_unix(),
    };
    let record_path = out_dir.join(SIGN_RECORD_NAME);
    let mut record_json = serde_json::to_vec_pretty(&record).expect("plain data");
    record_json.push(b'\n');
    super::write_file(&record_path, &record_json, PUBLIC_FILE_MODE)?;
    Ok(SignOutcome {
        out_dir,
        files: signed,
        sums: sums_path,
        sums_signature,
        record,
        record_path,
    })
}

/// The one directory every file is in.
fn common_parent(files: &[PathBuf]) -> Result<PathBuf, SignError> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let first = parent(&files[0]);
    let first_canonical = fs_err::canonicalize(&first)?;
    for file in &files[1..] {
        if fs_err::canonicalize(parent(file))? != first_canonical {
            return Err(SignError::Usage {
                message: format!(
                    "{} and {} are in different directories",
                    files[0].display(),
                    file.display()
                ),
                hint: Some("give --out DIR for SHA256SUMS and the signatures".into()),
            });
        }
    }
    Ok(first)
}

/// The name of `file` in `SHA256SUMS` written in `out` (canonical).
fn sum_name(file: &Path, out: &Path) -> Result<String, SignError> {
    let canonical = fs_err::canonicalize(file)?;
    let name = match canonical.strip_prefix(out) {
        Ok(relative) => relative.to_str().map(str::to_string),
        Err(_) => canonical.file_name().and_then(|n| n.to_str()).map(str::to_string),
    };
    match name {
        Some(name) if sums::plain_name(&name) && name != SUMS_NAME => Ok(name),
        _ => Err(SignError::BadInput {
            path: file.to_owned(),
            message: "the file name must be UTF-8 without newlines or backslashes, and not SHA256SUMS".into(),
        }),
    }
}
