//! Small value types checked once at construction: architectures, package names, digests.
//! Everything else may assume they are valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A target architecture, with Debian's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    pub fn parse(text: &str) -> Option<Arch> {
        match text {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture of the machine hb runs on.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A package name: lowercase ASCII letters, digits, `-`, `_`, `+`, `.`, starting with a
/// letter or digit, at most 64 bytes. Safe to use as a path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

impl PackageName {
    pub fn new(text: &str) -> Result<Self, String> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_+.".contains(c);
        match text.chars().next() {
            None => return Err("must not be empty".into()),
            Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
                return Err(format!("{text:?} must start with a lowercase letter or a digit"))
            }
            _ => {}
        }
        if text.len() > 64 {
            return Err(format!("{text:?} is longer than 64 bytes"));
        }
        if let Some(bad) = text.chars().find(|c| !valid_char(*c)) {
            return Err(format!("{text:?} contains {bad:?}"));
        }
        Ok(PackageName(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PackageName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        PackageName::new(&value)
    }
}

impl From<PackageName> for String {
    fn from(value: PackageName) -> String {
        value.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sha256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() != 64 {
            return Err(format!("expected 64 hex digits, got {} characters", text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("{text:?} is not lowercase hexadecimal"));
        }
        Ok(Sha256(text.to_string()))
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// Trusted constructor for the output of a hasher.
    pub fn from_digest(bytes: &[u8]) -> Self {
        Sha256(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for names shown to people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Sha256::parse(&value)
    }
}

impl From<Sha256> for String {
    fn from(value: Sha256) -> String {
        value.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        assert!(PackageName::new("bzip2").is_ok());
        assert!(PackageName::new("lua5.4").is_ok());
        assert!(PackageName::new("").is_err());
        assert!(PackageName::new("../x").is_err());
        assert!(PackageName::new("A").is_err());
        assert!(PackageName::new("a/b").is_err());
    }

    #[test]
    fn sha256_validation() {
        assert!(Sha256::parse(&"a".repeat(64)).is_ok());
        assert!(Sha256::parse(&"A".repeat(64)).is_err());
        assert!(Sha256::parse("abc").is_err());
        assert_eq!(
            Sha256::of_bytes(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
