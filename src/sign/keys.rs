//! The key directory (`hb key generate|list|export`) and the trust store (`hb verify --trust`).
//!
//! Owns: where keys live and in which files, choosing a key (`--key`), unlocking it with the
//! passphrase, exporting public keys, and reading a trust store. Does not: do cryptography
//! itself ([`super::openpgp`], [`super::cosign`]).
//!
//! A key directory (`--keys`, `HB_KEYS`, default `$XDG_CONFIG_HOME/hb/keys`, mode 0700) holds
//! one directory per key, named by the lowercase OpenPGP fingerprint:
//!
//! ```text
//! <fingerprint>/key.json         name, creation time, OpenPGP fingerprint, ECDSA key id
//! <fingerprint>/openpgp.key.asc  v4 Ed25519 key, secret encrypted with the passphrase (0600)
//! <fingerprint>/openpgp.rev.asc  its revocation certificate (0600)
//! <fingerprint>/openpgp.pub.asc  the public certificate
//! <fingerprint>/ecdsa.key.pem    P-256 key, encrypted PKCS#8 PEM (0600)
//! <fingerprint>/ecdsa.pub.pem    its public key (cosign's `cosign.pub`)
//! ```
//!
//! A trust store is a plain directory of public keys: `*.asc` (OpenPGP certificates) and
//! `*.pem` (P-256 public keys), e.g. what `hb key export --out DIR` writes.

use super::{cosign, openpgp, Passphrase, SignError};
use p256::ecdsa::{SigningKey, VerifyingKey};
use sequoia_openpgp::crypto::KeyPair;
use sequoia_openpgp::Cert;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const INFO: &str = "key.json";
const OPENPGP_SECRET: &str = "openpgp.key.asc";
const OPENPGP_REVOCATION: &str = "openpgp.rev.asc";
const OPENPGP_PUBLIC: &str = "openpgp.pub.asc";
const ECDSA_SECRET: &str = "ecdsa.key.pem";
const ECDSA_PUBLIC: &str = "ecdsa.pub.pem";
const KEY_SCHEMA: &str = "hb-key/1";
/// Mode of files holding secrets, and of the key directory.
const SECRET_FILE_MODE: u32 = 0o600;
const PUBLIC_FILE_MODE: u32 = 0o644;
const KEY_DIR_MODE: u32 = 0o700;

/// What `key.json` records about one key pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    pub schema: String,
    /// The OpenPGP user ID, e.g. `Release Team <release@example.org>`.
    pub name: String,
    pub created_unix: u64,
    /// Upper-case hex, as gpg prints it.
    pub openpgp_fingerprint: String,
    /// See [`cosign::key_id`].
    pub ecdsa_key_id: String,
}

/// One key of a key directory.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub info: KeyInfo,
    pub dir: PathBuf,
}

impl KeyEntry {
    /// A short label for file names and messages: 16 hex digits of the fingerprint.
    pub fn label(&self) -> String {
        self.info.openpgp_fingerprint[..16].to_ascii_lowercase()
    }

    pub fn openpgp_public_path(&self) -> PathBuf {
        self.dir.join(OPENPGP_PUBLIC)
    }

    pub fn ecdsa_public_path(&self) -> PathBuf {
        self.dir.join(ECDSA_PUBLIC)
    }

    /// Decrypt the OpenPGP signing key.
    pub fn unlock_openpgp(&self, passphrase: &Passphrase) -> Result<KeyPair, SignError> {
        let path = self.dir.join(OPENPGP_SECRET);
        let cert = openpgp::read_certs(&path)?.remove(0);
        openpgp::unlock(&cert, passphrase, &path)
    }

    /// Decrypt the ECDSA P-256 key.
    pub fn unlock_ecdsa(&self, passphrase: &Passphrase) -> Result<SigningKey, SignError> {
        let path = self.dir.join(ECDSA_SECRET);
        let pem = fs_err::read_to_string(&path)?;
        cosign::decrypt_private_pem(&pem, passphrase, &path)
    }

    /// The public keys: (armored OpenPGP certificate, PEM).
    pub fn export(&self) -> Result<(Vec<u8>, String), SignError> {
        Ok((
            fs_err::read(self.openpgp_public_path())?,
            fs_err::read_to_string(self.ecdsa_public_path())?,
        ))
    }
}

/// Make a new key pair (OpenPGP + ECDSA) for `name` in `keys_dir`.
pub fn generate(keys_dir: &Path, name: &str, passphrase: &Passphrase) -> Result<KeyEntry, SignError> {
    if name.trim().is_empty() || name.contains(['\n', '\r']) {
        return Err(SignError::Usage {
            message: format!("--name {name:?} is not a usable OpenPGP user ID"),
            hint: Some("use the form \"Release Team <release@example.org>\"".into()),
        });
    }
    create_private_dir(keys_dir)?;
    let (cert, revocation) = openpgp::generate(name, passphrase)?;
    let ecdsa = cosign::generate();
    let info = KeyInfo {
        schema: KEY_SCHEMA.into(),
        name: name.to_string(),
        created_unix: super::now_unix(),
        openpgp_fingerprint: openpgp::fingerprint(&cert),
        ecdsa_key_id: cosign::key_id(ecdsa.verifying_key()),
    };
    let final_dir = keys_dir.join(info.openpgp_fingerprint.to_ascii_lowercase());
    // Written under a temporary name and renamed, so a key directory never holds half a key.
    let temp = keys_dir.join(format!(".new-{}", std::process::id()));
    if temp.exists() {
        fs_err::remove_dir_all(&temp)?;
    }
    create_private_dir(&temp)?;
    let mut info_json = serde_json::to_vec_pretty(&info).expect("plain data");
    info_json.push(b'\n');
    super::write_file(
        &temp.join(OPENPGP_SECRET),
        &openpgp::armored_secret(&cert)?,
        SECRET_FILE_MODE,
    )?;
    super::write_file(&temp.join(OPENPGP_REVOCATION), &revocation, SECRET_FILE_MODE)?;
    super::write_file(
        &temp.join(ECDSA_SECRET),
        cosign::encrypted_private_pem(&ecdsa, passphrase)?.as_bytes(),
        SECRET_FILE_MODE,
    )?;
    super::write_file(
        &temp.join(OPENPGP_PUBLIC),
        &openpgp::armored_public(&cert)?,
        PUBLIC_FILE_MODE,
    )?;
    super::write_file(
        &temp.join(ECDSA_PUBLIC),
        cosign::public_pem(ecdsa.verifying_key())?.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    super::write_file(&temp.join(INFO), &info_json, PUBLIC_FILE_MODE)?;
    fs_err::rename(&temp, &final_dir)?;
    Ok(KeyEntry { info, dir: final_dir })
}

fn create_private_dir(dir: &Path) -> Result<(), SignError> {
    fs_err::create_dir_all(dir)?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(KEY_DIR_MODE))?;
    Ok(())
}

/// Every key of `keys_dir`, oldest first. A missing directory has no keys.
pub fn list(keys_dir: &Path) -> Result<Vec<KeyEntry>, SignError> {
    let mut keys = Vec::new();
    if !keys_dir.is_dir() {
        return Ok(keys);
    }
    for entry in fs_err::read_dir(keys_dir)? {
        let dir = entry?.path();
        let info_path = dir.join(INFO);
        if dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) || !info_path.is_file() {
            continue;
        }
        let info: KeyInfo = serde_json::from_slice(&fs_err::read(&info_path)?).map_err(|e| SignError::BadKeyFile {
            path: info_path.clone(),
            message: format!("not a key description: {e}"),
        })?;
        keys.push(KeyEntry { info, dir });
    }
    keys.sort_by(|a, b| {
        (a.info.created_unix, &a.info.openpgp_fingerprint).cmp(&(b.info.created_unix, &b.info.openpgp_fingerprint))
    });
    Ok(keys)
}

/// The key `selector` names (a fingerprint or ECDSA key id prefix of at least 8 hex digits,
/// or part of the name), or the only key when there is no selector.
pub fn select(keys_dir: &Path, selector: Option<&str>) -> Result<KeyEntry, SignError> {
    let keys = list(keys_dir)?;
    if keys.is_empty() {
        return Err(SignError::NoKeys {
            dir: keys_dir.to_owned(),
        });
    }
    let mut matching: Vec<KeyEntry> = match selector {
        None => keys,
        Some(selector) => {
            let lower = selector.to_ascii_lowercase();
            let hex_prefix = |id: &str| lower.len() >= 8 && id.to_ascii_lowercase().starts_with(&lower);
            keys.into_iter()
                .filter(|k| {
                    hex_prefix(&k.info.openpgp_fingerprint)
                        || hex_prefix(&k.info.ecdsa_key_id)
                        || k.info.name.to_ascii_lowercase().contains(&lower)
                })
                .collect()
        }
    };
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(SignError::KeyNotFound {
            dir: keys_dir.to_owned(),
            selector: selector.unwrap_or_default().to_string(),
        }),
        _ => Err(SignError::AmbiguousKey {
            dir: keys_dir.to_owned(),
            candidates: matching
                .iter()
                .map(|k| format!("{} {}", k.label(), k.info.name))
                .collect(),
        }),
    }
}

/// A trusted ECDSA public key.
#[derive(Debug, Clone)]
pub struct TrustedEcdsa {
    pub key_id: String,
    pub key: VerifyingKey,
}

/// The public keys `hb verify` trusts.
#[derive(Debug, Clone)]
pub struct TrustStore {
    pub dir: PathBuf,
    /// Without secret key material.
    pub certs: Vec<Cert>,
    pub ecdsa: Vec<TrustedEcdsa>,
}

impl TrustStore {
    pub fn ecdsa_by_id(&self, key_id: &str) -> Option<&TrustedEcdsa> {
        self.ecdsa.iter().find(|k| k.key_id.eq_ignore_ascii_case(key_id))
    }
}

/// Read every `*.asc` and `*.pem` of `dir`.
pub fn load_trust(dir: &Path) -> Result<TrustStore, SignError> {
    let trust_error = |message: String| SignError::TrustStore {
        dir: dir.to_owned(),
        message,
    };
    if !dir.is_dir() {
        return Err(trust_error("is not a directory".into()));
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in fs_err::read_dir(dir)? {
        paths.push(entry?.path());
    }
    paths.sort();
    let mut store = TrustStore {
        dir: dir.to_owned(),
        certs: Vec::new(),
        ecdsa: Vec::new(),
    };
    for path in paths {
        match path.extension().and_then(|e| e.to_str()) {
            Some("asc") => {
                for cert in openpgp::read_certs(&path)? {
                    store.certs.push(cert.strip_secret_key_material());
                }
            }
            Some("pem") => {
                let key = cosign::parse_public_pem(&fs_err::read_to_string(&path)?, &path)?;
                store.ecdsa.push(TrustedEcdsa {
                    key_id: cosign::key_id(&key),
                    key,
                });
            }
            _ => {}
        }
    }
    if store.certs.is_empty() && store.ecdsa.is_empty() {
        return Err(trust_error("holds no public keys (*.asc or *.pem)".into()));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_list_select_export_trust() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let pass = Passphrase("pw".into());
        let key = generate(&keys, "Release Team <release@example.org>", &pass).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key.dir.join(OPENPGP_SECRET)), 0o600);
        assert_eq!(mode(&key.dir.join(ECDSA_SECRET)), 0o600);
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(list(&keys).unwrap().len(), 1);
        assert!(select(&keys, None).is_ok());
        assert!(select(&keys, Some("release@")).is_ok());
        assert!(matches!(
            select(&keys, Some("nobody")),
            Err(SignError::KeyNotFound { .. })
        ));
        key.unlock_ecdsa(&pass).unwrap();
        key.unlock_openpgp(&pass).unwrap();
        let (asc, pem) = key.export().unwrap();
        let trust = dir.path().join("trust");
        std::fs::create_dir(&trust).unwrap();
        std::fs::write(trust.join("k.asc"), asc).unwrap();
        std::fs::write(trust.join("k.pem"), pem).unwrap();
        let store = load_trust(&trust).unwrap();
        assert_eq!(store.certs.len(), 1);
        assert!(store.ecdsa_by_id(&key.info.ecdsa_key_id).is_some());
    }
}
