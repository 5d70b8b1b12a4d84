//! cosign-format blob signatures: ECDSA P-256 over the SHA-256 of a file, DER-encoded, in
//! base64 — what `cosign sign-blob --key` writes and `cosign verify-blob --key` (or `openssl
//! dgst -sha256 -verify key.pem`) accepts — and the P-256 key pair behind them.
//!
//! Owns: generating the key, the encrypted PKCS#8 PEM it is kept in (PBES2: PBKDF2-HMAC-SHA256
//! with 600,000 iterations and AES-256-CBC, readable by `openssl pkey`), the public key PEM (SubjectPublicKeyInfo, as cosign's `cosign.pub`), the key id
//! (see [`key_id`]), and signing or verifying a prepared SHA-256 digest. Does not: hash files
//! ([`super::sums`]) or choose keys ([`super::keys`]).

use super::{crypto_error, Passphrase, SignError};
use base64::Engine;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::{OsRng, RngCore};
use std::path::Path;

/// PBKDF2-HMAC-SHA256 iterations: OWASP's 2023 recommendation (~0.1 s here). scrypt with
/// cosign's N=2^15, r=8 would be stronger, but OpenSSL 3.0 refuses to open it (its 32 MiB
/// limit for scrypt in PKCS#8), and a key file people cannot inspect with standard tools is
/// worse than one slightly cheaper to brute-force.
const PBKDF2_ITERATIONS: u32 = 600_000;

pub fn generate() -> SigningKey {
    SigningKey::random(&mut OsRng)
}

/// The private key as an `ENCRYPTED PRIVATE KEY` PEM (PKCS#8, PBES2).
pub fn encrypted_private_pem(key: &SigningKey, passphrase: &Passphrase) -> Result<String, SignError> {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
        .map_err(|e| crypto_error("choosing key encryption parameters", e))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| crypto_error("encoding the ECDSA key", e))?;
    let info =
        pkcs8::PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| crypto_error("encoding the ECDSA key", e))?;
    let encrypted = info
        .encrypt_with_params(params, passphrase.expose().as_bytes())
        .map_err(|e| crypto_error("encrypting the ECDSA key", e))?;
    let pem = encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|e| crypto_error("encoding the ECDSA key", e))?;
    Ok(pem.to_string())
}

/// Read an encrypted PKCS#8 PEM private key (from `path`, for messages).
pub fn decrypt_private_pem(pem: &str, passphrase: &Passphrase, path: &Path) -> Result<SigningKey, SignError> {
    if !pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(SignError::BadKeyFile {
            path: path.to_owned(),
            message: "expected an ENCRYPTED PRIVATE KEY PEM (PKCS#8)".into(),
        });
    }
    SigningKey::from_pkcs8_encrypted_pem(pem, passphrase.expose().as_bytes()).map_err(|_| SignError::WrongPassphrase {
        kind: "ECDSA",
        path: path.to_owned(),
    })
}

/// The public key as a `PUBLIC KEY` PEM.
pub fn public_pem(key: &VerifyingKey) -> Result<String, SignError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| crypto_error("encoding the ECDSA public key", e))
}

/// Read a `PUBLIC KEY` PEM holding a P-256 key.
pub fn parse_public_pem(text: &str, path: &Path) -> Result<VerifyingKey, SignError> {
    VerifyingKey::from_public_key_pem(text).map_err(|e| SignError::BadKeyFile {
        path: path.to_owned(),
        message: format!("not an ECDSA P-256 public key PEM: {e}"),
    })
}

/// The key id written into DSSE signatures: lowercase hex SHA-256 of the DER
/// SubjectPublicKeyInfo (what `openssl pkey -pubin -outform DER | sha256sum` prints).
pub fn key_id(key: &VerifyingKey) -> String {
    let der = key.to_public_key_der().expect("a P-256 public key always encodes");
    crate::types::Sha256::of_bytes(der.as_bytes()).to_string()
}

/// The base64 text of a `.sig` file: DER ECDSA signature over the given SHA-256 digest.
pub fn sign_digest(key: &SigningKey, sha256: &[u8]) -> Result<String, SignError> {
    let signature: Signature = key
        .sign_prehash(sha256)
        .map_err(|e| crypto_error("making an ECDSA signature", e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes()))
}

/// Check the text of a `.sig` file (base64 of DER; surrounding whitespace allowed) over the
/// SHA-256 digest with `key`. `Err` is the reason, for a `FAIL` line.
pub fn verify_digest(key: &VerifyingKey, sha256: &[u8], text: &str) -> Result<(), String> {
    let signature = decode_signature(text)?;
    key.verify_prehash(sha256, &signature)
        .map_err(|_| "BAD signature: it does not match the data and key".to_string())
}

/// Parse the base64 DER signature of a `.sig` file.
pub fn decode_signature(text: &str) -> Result<Signature, String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64 (truncated or damaged?): {e}"))?;
    Signature::from_der(&der).map_err(|_| "not a DER-encoded ECDSA signature (truncated or damaged?)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn pem_round_trip_and_signatures() {
        let pass = Passphrase("pw".into());
        let key = generate();
        let pem = encrypted_private_pem(&key, &pass).unwrap();
        let back = decrypt_private_pem(&pem, &pass, Path::new("k.pem")).unwrap();
        assert_eq!(back.verifying_key(), key.verifying_key());
        assert!(matches!(
            decrypt_private_pem(&pem, &Passphrase("nope".into()), Path::new("k.pem")),
            Err(SignError::WrongPassphrase { .. })
        ));
        let digest = sha2::Sha256::digest(b"blob");
        let sig = sign_digest(&key, &digest).unwrap();
        let public = parse_public_pem(&public_pem(key.verifying_key()).unwrap(), Path::new("k.pub")).unwrap();
        verify_digest(&public, &digest, &sig).unwrap();
        assert!(verify_digest(&public, &sha2::Sha256::digest(b"blob!"), &sig).is_err());
        assert!(verify_digest(&public, &digest, &sig[..sig.len() / 2]).is_err());
        assert_eq!(key_id(&public).len(), 64);
    }
}
