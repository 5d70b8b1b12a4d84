//! Signing, provenance, SBOMs and consumer verification: what turns verified artifacts into
//! something a consumer can check (`hb key`, `hb sign`, `hb attest`, `hb verify`).
//!
//! Owns: the key directory and the trust store ([`keys`]), OpenPGP detached signatures
//! ([`openpgp`]), cosign-format ECDSA P-256 blob signatures ([`cosign`]), `SHA256SUMS` and file
//! hashing ([`sums`]), the reproducibility gate ([`gate`]), `hb sign` ([`detached`]), DSSE
//! envelopes ([`dsse`]), SLSA v1 provenance ([`provenance`]), SBOMs ([`sbom`], [`spdx`],
//! [`cyclonedx`]), `hb attest` ([`attest`]) and consumer verification ([`verify`]). Does not:
//! build, check reproducibility (it only reads the report `hb verify-repro` writes), release,
//! or decide exit codes (errors say which kind they are; `main` maps them).
//!
//! Secrets: the passphrase comes from `HB_KEY_PASSPHRASE` or a file, never from argv; it is
//! held in a [`Passphrase`] whose `Debug` is redacted, and no message or log line contains it.

pub mod attest;
pub mod cosign;
pub mod cyclonedx;
pub mod detached;
pub mod dsse;
pub mod gate;
pub mod keys;
pub mod openpgp;
pub mod provenance;
pub mod sbom;
pub mod spdx;
pub mod sums;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};

/// Key directory (overrides `$XDG_CONFIG_HOME/hb/keys`); same as `--keys`.
pub const HB_KEYS: &str = "HB_KEYS";
/// The passphrase of the private keys (or `--passphrase-file`). Never give it in argv.
pub const HB_KEY_PASSPHRASE: &str = "HB_KEY_PASSPHRASE";
/// Trust store directory of `hb verify` (overrides `$XDG_CONFIG_HOME/hb/trust`); same as `--trust`.
pub const HB_TRUST: &str = "HB_TRUST";
/// Parent of the default key directory and trust store.
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";

/// Checksums file written by `hb sign`, in `sha256sum -c` format.
pub const SUMS_NAME: &str = "SHA256SUMS";
/// The record `hb sign` leaves next to its signatures (what was signed, how the gate decided),
/// which `hb attest` copies into the provenance.
pub const SIGN_RECORD_NAME: &str = "hb-sign.json";
/// Default location of `hb verify-repro`'s report for `hb sign`.
pub const DEFAULT_REPRO_REPORT: &str = "dist/repro/report.json";

/// Everything that can go wrong while keying, signing, attesting or verifying (but not a
/// failed verification check: those are results, see [`verify::Check`]).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// File errors; `fs_err` names the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no passphrase for the private keys")]
    NoPassphrase,
    #[error("the passphrase from {origin} is empty")]
    EmptyPassphrase { origin: String },
    #[error("wrong passphrase for the {kind} key {path}")]
    WrongPassphrase { kind: &'static str, path: PathBuf },
    #[error("no keys in the key directory {dir}")]
    NoKeys { dir: PathBuf },
    #[error("no key in {dir} matches {selector:?}")]
    KeyNotFound { dir: PathBuf, selector: String },
    #[error("{dir} holds {} keys; choose one with --key ({})", candidates.len(), candidates.join(", "))]
    AmbiguousKey { dir: PathBuf, candidates: Vec<String> },
    #[error("{path}: {message}")]
    BadKeyFile { path: PathBuf, message: String },
    #[error("trust store {dir}: {message}")]
    TrustStore { dir: PathBuf, message: String },
    #[error("{path} does not exist (expected {what})")]
    NotFound { path: PathBuf, what: &'static str },
    #[error("{path} does not exist (expected the JSON report of `hb verify-repro`)")]
    ReproReportMissing { path: PathBuf },
    /// A file hb reads (a report, a name) is malformed: bad input.
    #[error("{path}: {message}")]
    BadInput { path: PathBuf, message: String },
    #[error("usage: {message}")]
    Usage { message: String, hint: Option<String> },
    /// The reproducibility gate said no (a check that failed, exit 1).
    #[error("{file} is not covered by a passing reproducibility report: {reason}")]
    NotCovered {
        file: PathBuf,
        report: PathBuf,
        reason: String,
    },
    /// An artifact differs from what the build report recorded (exit 1).
    #[error("{file} differs from {report}: it records sha256 {expected}, the file has {actual}")]
    ArtifactMismatch {
        file: PathBuf,
        report: PathBuf,
        expected: String,
        actual: String,
    },
    /// The crypto library failed where it should not (random numbers, encoding).
    #[error("{context}: {message}")]
    Crypto { context: String, message: String },
}

/// Which kind of failure an error is (for `main`'s exit code mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A check said no: exit 1.
    CheckFailed,
    /// Bad input or usage: exit 2.
    BadInput,
    /// The environment failed: exit 3.
    Environment,
}

impl SignError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SignError::NotCovered { .. } | SignError::ArtifactMismatch { .. } => ErrorKind::CheckFailed,
            SignError::Crypto { .. } => ErrorKind::Environment,
            _ => ErrorKind::BadInput,
        }
    }

    /// One `hint:` line for people, if there is something to suggest.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SignError::NoPassphrase => {
                format!("set {HB_KEY_PASSPHRASE} or give --passphrase-file FILE (a passphrase is never taken from the command line)")
            }
            SignError::EmptyPassphrase { .. } => "private keys are always encrypted; use a non-empty passphrase".into(),
            SignError::WrongPassphrase { .. } => {
                format!("the passphrase comes from --passphrase-file or {HB_KEY_PASSPHRASE}; check which one is set")
            }
            SignError::NoKeys { .. } => {
                "create one with `hb key generate --name \"Release Team <release@example.org>\"`, or point --keys/HB_KEYS at your key directory".into()
            }
            SignError::KeyNotFound { .. } | SignError::AmbiguousKey { .. } => {
                "`hb key list` shows the keys; --key takes a fingerprint prefix or part of the name".into()
            }
            SignError::TrustStore { .. } => {
                "a trust store is a directory of public keys (*.asc and *.pem); `hb key export --out DIR` writes them".into()
            }
            SignError::NotCovered { report, .. } => format!(
                "run `hb verify-repro` on the set first (its report: {}), or pass --no-repro-gate to sign anyway (recorded in the provenance)",
                report.display()
            ),
            SignError::ReproReportMissing { .. } => {
                "run `hb verify-repro` on the set first, give its report with --repro-report FILE, or pass --no-repro-gate (recorded in the provenance)".into()
            }
            SignError::ArtifactMismatch { .. } => "rebuild with `hb build` so that the artifacts and the build report agree".into(),
            SignError::Usage { hint, .. } => return hint.clone(),
            _ => return None,
        })
    }
}

pub(crate) fn crypto_error(context: impl Into<String>, error: impl fmt::Display) -> SignError {
    SignError::Crypto {
        context: context.into(),
        message: error.to_string(),
    }
}

/// The passphrase of the private keys. Its `Debug` is redacted so that it cannot leak
/// through a log line or an error.
#[derive(Clone)]
pub struct Passphrase(String);

impl Passphrase {
    /// From `--passphrase-file` when given (its first line; a trailing newline is not part of
    /// it), else from `HB_KEY_PASSPHRASE`. Empty passphrases are refused.
    pub fn obtain(file: Option<&Path>) -> Result<Passphrase, SignError> {
        let (text, origin) = match file {
            Some(path) => {
                let text = fs_err::read_to_string(path)?;
                let line = text.strip_suffix('\n').unwrap_or(&text);
                let line = line.strip_suffix('\r').unwrap_or(line);
                (line.to_string(), path.display().to_string())
            }
            None => match std::env::var(HB_KEY_PASSPHRASE) {
                Ok(text) => (text, HB_KEY_PASSPHRASE.to_string()),
                Err(_) => return Err(SignError::NoPassphrase),
            },
        };
        if text.is_empty() {
            return Err(SignError::EmptyPassphrase { origin });
        }
        Ok(Passphrase(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// `$XDG_CONFIG_HOME/hb/<leaf>`, or `~/.config/hb/<leaf>`.
pub fn config_dir(leaf: &str) -> PathBuf {
    if let Some(config) = std::env::var_os(XDG_CONFIG_HOME).filter(|v| !v.is_empty()) {
        return PathBuf::from(config).join("hb").join(leaf);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".config/hb").join(leaf);
    }
    PathBuf::from(".hb").join(leaf)
}

/// RFC 3339 UTC time (`2023-11-14T22:13:20Z`) of a Unix time, without a date library.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let seconds = unix % 86_400;
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to (year, month, day).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a signature. `mode` is the new file's permission bits.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    // A bare file name is spelled `./name`: the directory is synced after the rename.
    let (dir, target) = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => (p, path.to_owned()),
        _ => (Path::new("."), Path::new(".").join(path)),
    };
    fs_err::create_dir_all(dir)?;
    crate::store::write_atomic_mode(&target, bytes, mode).map_err(|e| {
        // Name the file, as fs_err does for every other file error.
        let kind = match &e {
            crate::store::StoreError::Io(e) => e.kind(),
            _ => std::io::ErrorKind::Other,
        };
        SignError::Io(std::io::Error::new(
            kind,
            format!("failed to write file `{}`: {e}", path.display()),
        ))
    })
}

/// The file name of `path` as UTF-8, for names written into checksums and statements.
pub(crate) fn file_name(path: &Path) -> Result<String, SignError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| SignError::BadInput {
            path: path.to_owned(),
            message: "expected a file name in UTF-8".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn passphrase_debug_is_redacted() {
        let p = Passphrase("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
