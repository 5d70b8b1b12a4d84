//! Fetching pinned files: URL lists tried in order, mirrors, retries, streaming sha256
//! verification, progress.
//!
//! Nothing enters the store unless its sha256 matches: bytes are streamed into a temporary
//! file under the store's `tmp/` while hashed, and renamed to `sources/<sha256>` only after
//! the digest matched. It does not unpack anything (see [`crate::archive`]).

use crate::store::{Store, StoreError};
use crate::types::Sha256;
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env_vars::HB_MIRROR_DEBIAN as ENV_MIRROR_DEBIAN;

/// How many times a transient failure (timeout, connection reset, HTTP 5xx/429) is retried
/// per URL before moving to the next one.
const RETRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not fetch {name} (sha256 {sha256}): every URL failed\n{}", format_attempts(.attempts))]
    AllFailed {
        name: String,
        sha256: Sha256,
        attempts: Vec<Attempt>,
    },
    #[error("{name} (sha256 {sha256}) is not in the store and --offline forbids downloading it")]
    Offline { name: String, sha256: Sha256 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FetchError {
    /// The single hint that fits the failure best.
    pub fn hint(&self) -> Option<String> {
        match self {
            FetchError::AllFailed { attempts, .. } => {
                if attempts.iter().any(|a| a.reason.contains("sha256 mismatch")) {
                    Some("the file changed upstream or the recipe's sha256 is wrong; check the source before updating the pin".into())
                } else {
                    Some(format!(
                        "check the URLs, or set {ENV_MIRROR_DEBIAN} / the apt configuration for mirror://debian/"
                    ))
                }
            }
            FetchError::Offline { .. } => Some("run `hb fetch <SET>` while online first".into()),
            FetchError::Store(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub url: String,
    pub reason: String,
}

fn format_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("  - {}: {}", a.url, a.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `mirror://NAME/` points.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    pub debian: Option<String>,
}

impl Mirrors {
    /// `HB_MIRROR_DEBIAN`, else the first Debian (non-security) URI of the machine's apt
    /// configuration.
    pub fn from_environment() -> Mirrors {
        if let Ok(url) = std::env::var(ENV_MIRROR_DEBIAN) {
            if !url.is_empty() {
                return Mirrors { debian: Some(url) };
            }
        }
        Mirrors {
            debian: apt_debian_uri(Path::new("/etc/apt")),
        }
    }

    /// Expand `mirror://NAME/path`; other URLs are returned unchanged.
    pub fn resolve(&self, url: &str) -> Result<String, String> {
        let Some(rest) = url.strip_prefix("mirror://") else {
            return Ok(url.to_string());
        };
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        match name {
            "debian" => match &self.debian {
                Some(base) => Ok(format!("{}/{}", base.trim_end_matches('/'), path)),
                None => Err(format!(
                    "no Debian mirror configured (set {ENV_MIRROR_DEBIAN} or configure apt)"
                )),
            },
            other => Err(format!("unknown mirror {other:?} (known: debian)")),
        }
    }
}

/// The first `URIs:` (deb822 `.sources`) or `deb URI` (one-line format) entry that serves
/// the main Debian archive, not the security archive.
fn apt_debian_uri(apt_dir: &Path) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.insert(0, apt_dir.join("sources.list"));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let is_deb822 = file.extension().is_some_and(|e| e == "sources");
        let candidates: Vec<String> = if is_deb822 {
            text.split("\n\n")
                .filter(|stanza| {
                    !stanza
                        .lines()
                        .any(|l| l.trim().starts_with("Suites:") && l.contains("-security"))
                })
                .flat_map(|stanza| {
                    stanza
                        .lines()
                        .filter_map(|l| l.trim().strip_prefix("URIs:"))
                        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with("deb ") || l.starts_with("deb-src "))
                .filter(|l| !l.contains("-security"))
                .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")).map(str::to_string))
                .collect()
        };
        if let Some(uri) = candidates
            .into_iter()
            .find(|u| u.trim_end_matches('/').ends_with("/debian"))
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// Reports download progress; implemented by the UI layer.
pub trait Progress: Sync {
    fn start(&self, name: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

pub struct Fetcher<'a> {
    store: &'a Store,
    mirrors: Mirrors,
    offline: bool,
    agent: ureq::Agent,
}

enum Failure {
    /// Worth retrying the same URL (timeouts, resets, 5xx).
    Transient(String),
    /// Move on to the next URL.
    Permanent(String),
}

impl<'a> Fetcher<'a> {
    pub fn new(store: &'a Store, mirrors: Mirrors, offline: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_resolve(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .user_agent(format!("hb/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher {
            store,
            mirrors,
            offline,
            agent: config.into(),
        }
    }

    /// Make sure the file with `sha256` is in the store, downloading it from the first URL
    /// that serves the right bytes. Returns its path in the store.
    pub fn fetch(
        &self,
        name: &str,
        urls: &[String],
        sha256: &Sha256,
        progress: &dyn Progress,
    ) -> Result<PathBuf, FetchError> {
        let dest = self.store.source_path(sha256);
        if dest.is_file() {
            return Ok(dest);
        }
        let _lock = self.store.lock_object("source", sha256.as_str())?;
        if dest.is_file() {
            return Ok(dest);
        }
        if self.offline {
            return Err(FetchError::Offline {
                name: name.to_string(),
                sha256: sha256.clone(),
            });
        }
        let mut attempts = Vec::new();
        for url in urls {
            let resolved = match self.mirrors.resolve(url) {
                Ok(u) => u,
                Err(reason) => {
                    attempts.push(Attempt {
                        url: url.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let shown = if &resolved == url {
                url.clone()
            } else {
                format!("{url} ({resolved})")
            };
            let mut tries = 0;
            loop {
                tries += 1;
                match self.try_url(&resolved, sha256, &dest, progress) {
                    Ok(()) => return Ok(dest),
                    Err(Failure::Transient(reason)) if tries <= RETRIES => {
                        tracing::warn!("{shown}: {reason}; retrying ({tries}/{RETRIES})");
                        std::thread::sleep(Duration::from_millis(250 * (1 << tries)));
                    }
                    Err(Failure::Transient(reason)) => {
                        attempts.push(Attempt {
                            url: shown,
                            reason: format!("{reason} (after {RETRIES} retries)"),
                        });
                        break;
                    }
                    Err(Failure::Permanent(reason)) => {
                        attempts.push(Attempt { url: shown, reason });
                        break;
                    }
                }
            }
        }
        Err(FetchError::AllFailed {
            name: name.to_string(),
            sha256: sha256.clone(),
            attempts,
        })
    }

    fn try_url(&self, url: &str, expected: &Sha256, dest: &Path, progress: &dyn Progress) -> Result<(), Failure> {
        let tmp = self
            .store
            .temp_file("fetch-")
            .map_err(|e| Failure::Permanent(format!("store: {e}")))?;
        let (reader, total): (Box<dyn Read>, Option<u64>) = if let Some(path) = url.strip_prefix("file://") {
            let file = std::fs::File::open(path).map_err(|e| Failure::Permanent(format!("{path}: {e}")))?;
            let len = file.metadata().ok().map(|m| m.len());
            (Box::new(file), len)
        } else {
            let response = self.agent.get(url).call().map_err(classify)?;
            let total = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let reader = response.into_body().into_with_config().limit(u64::MAX).reader();
            (Box::new(reader), total)
        };
        progress.start(url.rsplit('/').next().unwrap_or(url), total);
        let result = copy_hashing(reader, tmp.as_file(), progress);
        progress.finish();
        let actual = result?;
        if actual != *expected {
            return Err(Failure::Permanent(format!(
                "sha256 mismatch: expected {expected}, got {actual}"
            )));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Failure::Permanent(format!("store: {e}")))?;
        tmp.persist(dest)
            .map_err(|e| Failure::Permanent(format!("store: {}", e.error)))?;
        Ok(())
    }
}

fn copy_hashing(mut reader: impl Read, file: &std::fs::File, progress: &dyn Progress) -> Result<Sha256, Failure> {
    let mut hasher = sha2::Sha256::new();
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Transient(format!("reading: {e}"))),
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(|e| Failure::Permanent(format!("writing to the store: {e}")))?;
        progress.advance(n as u64);
    }
    writer
        .flush()
        .map_err(|e| Failure::Permanent(format!("writing to the store: {e}")))?;
    Ok(Sha256::from_digest(&hasher.finalize()))
}

fn classify(error: ureq::Error) -> Failure {
    use ureq::Error as E;
    match error {
        E::StatusCode(code) if code == 429 || code >= 500 => Failure::Transient(format!("HTTP {code}")),
        E::StatusCode(code) => Failure::Permanent(format!("HTTP {code}")),
        E::Timeout(t) => Failure::Transient(format!("timed out ({t})")),
        E::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::TimedOut
            ) =>
        {
            Failure::Transient(format!("{e}"))
        }
        E::HostNotFound => Failure::Permanent("host not found".into()),
        other => Failure::Permanent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_urls_expand() {
        let m = Mirrors {
            debian: Some("http://mirror.invalid/debian/".into()),
        };
        assert_eq!(
            m.resolve("mirror://debian/pool/main/b/bzip2/x.tar.gz").unwrap(),
            "http://mirror.invalid/debian/pool/main/b/bzip2/x.tar.gz"
        );
        assert!(m.resolve("mirror://nope/x").is_err());
        assert!(Mirrors::default().resolve("mirror://debian/x").is_err());
        assert_eq!(m.resolve("https://a/b").unwrap(), "https://a/b");
    }

    #[test]
    fn apt_configuration_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://sec.invalid/debian-security\nSuites: bookworm-security\n\n\
             Types: deb\nURIs: http://main.invalid/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            apt_debian_uri(dir.path()).as_deref(),
            Some("http://main.invalid/debian")
        );
    }
}
