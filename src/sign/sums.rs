//! File hashing and the `SHA256SUMS` format.
//!
//! Owns: reading a file once and producing both its SHA-256 digest (for `SHA256SUMS`, cosign
//! signatures, provenance subjects) and the OpenPGP hash context of the same bytes, so that a
//! 20 MB artifact is read and hashed once for all three; and writing and strictly parsing
//! `SHA256SUMS` exactly as `sha256sum -c --strict` reads it (`<64 hex>  <name>`, one per line).
//! Does not: sign anything or decide which files to list.
//!
//! The SHA-256 underneath is RustCrypto's `sha2`, which picks the SHA-NI instructions at run
//! time where the CPU has them (see `benches/sign.rs` for the figures against `sha256sum`).

use super::SignError;
use crate::types::Sha256;
use sequoia_openpgp::crypto::hash::Context;
use sequoia_openpgp::types::HashAlgorithm;
use std::io::Read;
use std::path::Path;

/// Bytes read at a time: large enough that syscalls do not show next to hashing.
const READ_CHUNK: usize = 1 << 20;

/// A file hashed once.
pub struct Hashed {
    pub sha256: Sha256,
    pub size: u64,
    /// SHA-256 over the same bytes, ready to be finished into a (v4) OpenPGP signature.
    pub openpgp: Context,
}

/// A fresh SHA-256 context for v4 OpenPGP signatures.
pub fn openpgp_context(algorithm: HashAlgorithm) -> Result<Context, SignError> {
    Ok(algorithm
        .context()
        .map_err(|e| super::crypto_error("creating a hash context", e))?
        .for_signature(4))
}

/// Read `path` once; see [`Hashed`].
pub fn hash_file(path: &Path) -> Result<Hashed, SignError> {
    let mut context = openpgp_context(HashAlgorithm::SHA256)?;
    let size = feed(path, &mut context)?;
    // For a v4 signature nothing is hashed before the data (v6 would add a salt), so the
    // context's digest so far is the file's plain SHA-256.
    let digest = context
        .clone()
        .into_digest()
        .map_err(|e| super::crypto_error("finishing a hash", e))?;
    Ok(Hashed {
        sha256: Sha256::from_digest(&digest),
        size,
        openpgp: context,
    })
}

/// Feed the bytes of `path` into `context`; returns the number of bytes.
pub fn feed(path: &Path, context: &mut Context) -> Result<u64, SignError> {
    let mut file = fs_err::File::open(path)?;
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        context.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(size)
}

/// SHA-256 of a file, nothing else.
pub fn sha256_file(path: &Path) -> Result<Sha256, SignError> {
    Ok(hash_file(path)?.sha256)
}

/// One line of `SHA256SUMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumLine {
    pub sha256: Sha256,
    /// Relative to the directory of `SHA256SUMS`.
    pub name: String,
}

/// Whether `name` can be written into `SHA256SUMS` without sha256sum's escaping (a leading
/// backslash for names with a newline or backslash), which hb does not produce, and that
/// stays inside the directory of `SHA256SUMS`.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['\n', '\r', '\\'])
        && !name.starts_with('/')
        && !name.split('/').any(|component| component == "..")
}

/// The text of `SHA256SUMS`: lines sorted by name, text mode (two spaces), LF endings.
pub fn render(lines: &[SumLine]) -> String {
    let mut sorted: Vec<&SumLine> = lines.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    let mut out = String::new();
    for line in sorted {
        out.push_str(line.sha256.as_str());
        out.push_str("  ");
        out.push_str(&line.name);
        out.push('\n');
    }
    out
}

/// Parse `SHA256SUMS` strictly: every line `<64 lowercase hex><space><space or *><name>`.
/// `path` is for messages. Errors name the line.
pub fn parse(text: &str, path: &Path) -> Result<Vec<SumLine>, SignError> {
    let bad = |number: usize, message: String| SignError::BadInput {
        path: path.to_owned(),
        message: format!("line {number}: {message}"),
    };
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.is_empty() {
            return Err(bad(number, "empty line (expected `<sha256>  <file name>`)".into()));
        }
        let (hex, rest) = line
            .split_at_checked(64)
            .ok_or_else(|| bad(number, "too short for a sha256 line".into()))?;
        let sha256 = Sha256::parse(&hex.to_ascii_lowercase()).map_err(|e| bad(number, format!("digest: {e}")))?;
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| {
                bad(
                    number,
                    "expected two spaces between the digest and the file name".into(),
                )
            })?;
        if !plain_name(name) {
            return Err(bad(number, format!("unsupported file name {name:?}")));
        }
        lines.push(SumLine {
            sha256,
            name: name.to_string(),
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse_round_trip() {
        let a = SumLine {
            sha256: Sha256::of_bytes(b"a"),
            name: "b.tar.gz".into(),
        };
        let b = SumLine {
            sha256: Sha256::of_bytes(b"b"),
            name: "a.tar.gz".into(),
        };
        let text = render(&[a.clone(), b.clone()]);
        assert!(text.starts_with(&format!("{}  a.tar.gz\n", b.sha256)));
        assert_eq!(parse(&text, Path::new("SUMS")).unwrap(), vec![b, a]);
    }

    #[test]
    fn parse_rejects_malformed_lines() {
        let p = Path::new("SHA256SUMS");
        assert!(parse("abc  x\n", p).is_err());
        assert!(parse(&format!("{} x\n", "a".repeat(64)), p).is_err());
        assert!(parse(&format!("{}  \n", "a".repeat(64)), p).is_err());
        assert!(parse(&format!("{} *x\n", "a".repeat(64)), p).is_ok());
    }

    #[test]
    fn hash_file_matches_plain_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let hashed = hash_file(&path).unwrap();
        assert_eq!(hashed.sha256, Sha256::of_bytes(b"hello"));
        assert_eq!(hashed.size, 5);
    }
}
