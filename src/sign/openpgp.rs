//! OpenPGP with sequoia-openpgp: v4 Ed25519 keys, armored detached signatures that `gpg
//! --verify` and `sqv` accept, and their verification against a set of trusted certificates.
//!
//! Owns: making the certificate (one signing- and certification-capable Ed25519 primary key,
//! secret encrypted with the passphrase), reading and writing it armored, unlocking it, signing
//! a prepared hash context (see [`super::sums::hash_file`]: the file is read once for every
//! digest hb makes), and verifying with the same checks sequoia's streaming verifier makes
//! (policy, key alive and not revoked, signing-capable, signature alive). Does not: know where
//! keys live ([`super::keys`]) or which files are signed.

use super::{crypto_error, Passphrase, SignError};
use openpgp::cert::prelude::*;
use openpgp::crypto::hash::Context;
use openpgp::crypto::{KeyPair, Password};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::Signature;
use openpgp::parse::Parse;
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{HashAlgorithm, KeyFlags, RevocationStatus, SignatureType};
use openpgp::{armor, Packet, PacketPile, Profile};
use sequoia_openpgp as openpgp;
use std::path::Path;

/// A key that made a good signature.
#[derive(Debug, Clone)]
pub struct Signer {
    /// Upper-case hex fingerprint of the certificate.
    pub fingerprint: String,
    /// Its first user ID, e.g. `Release Team <release@example.org>`.
    pub user_id: Option<String>,
}

/// A new certificate for `user_id` whose secret key material is encrypted with `passphrase`,
/// and its revocation certificate (armored).
pub fn generate(user_id: &str, passphrase: &Passphrase) -> Result<(Cert, Vec<u8>), SignError> {
    let (cert, revocation) = CertBuilder::new()
        // v4 keys: what gpg 2.2 (Debian 12) and sqv 1.1 understand.
        .set_profile(Profile::RFC4880)
        .map_err(|e| crypto_error("choosing OpenPGP v4", e))?
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_signing().set_certification())
        .add_userid(user_id)
        .set_password(Some(Password::from(passphrase.expose())))
        .generate()
        .map_err(|e| crypto_error("generating the OpenPGP key", e))?;
    let mut armored = armor::Writer::new(Vec::new(), armor::Kind::Signature)
        .map_err(|e| crypto_error("armoring the revocation certificate", e))?;
    Packet::from(revocation)
        .serialize(&mut armored)
        .map_err(|e| crypto_error("writing the revocation certificate", e))?;
    let revocation = armored
        .finalize()
        .map_err(|e| crypto_error("armoring the revocation certificate", e))?;
    Ok((cert, revocation))
}

/// The certificate with its (encrypted) secret key material, armored.
pub fn armored_secret(cert: &Cert) -> Result<Vec<u8>, SignError> {
    cert.as_tsk()
        .armored()
        .to_vec()
        .map_err(|e| crypto_error("writing the OpenPGP key", e))
}

/// The public certificate, armored: what `gpg --import` and `sqv --keyring` take.
pub fn armored_public(cert: &Cert) -> Result<Vec<u8>, SignError> {
    cert.armored()
        .to_vec()
        .map_err(|e| crypto_error("writing the OpenPGP certificate", e))
}

/// Upper-case hex fingerprint.
pub fn fingerprint(cert: &Cert) -> String {
    cert.fingerprint().to_hex()
}

/// The first user ID of `cert`, as text.
pub fn user_id(cert: &Cert) -> Option<String> {
    cert.userids()
        .next()
        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
}

/// Every certificate in an armored or binary keyring file.
pub fn read_certs(path: &Path) -> Result<Vec<Cert>, SignError> {
    let bytes = fs_err::read(path)?;
    let bad = |e: openpgp::anyhow::Error| SignError::BadKeyFile {
        path: path.to_owned(),
        message: format!("not an OpenPGP certificate: {e}"),
    };
    let mut certs = Vec::new();
    for cert in CertParser::from_bytes(&bytes).map_err(bad)? {
        certs.push(cert.map_err(bad)?);
    }
    if certs.is_empty() {
        return Err(SignError::BadKeyFile {
            path: path.to_owned(),
            message: "holds no OpenPGP certificate".into(),
        });
    }
    Ok(certs)
}

/// Decrypt the signing key of `cert` (read from `path`) with `passphrase`.
pub fn unlock(cert: &Cert, passphrase: &Passphrase, path: &Path) -> Result<KeyPair, SignError> {
    let policy = StandardPolicy::new();
    let key = cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .next()
        .ok_or_else(|| SignError::BadKeyFile {
            path: path.to_owned(),
            message: "holds no usable signing key with secret key material".into(),
        })?
        .key()
        .clone();
    let key = if key.has_unencrypted_secret() {
        key
    } else {
        key.decrypt_secret(&Password::from(passphrase.expose()))
            .map_err(|_| SignError::WrongPassphrase {
                kind: "OpenPGP",
                path: path.to_owned(),
            })?
    };
    key.into_keypair().map_err(|e| crypto_error("using the OpenPGP key", e))
}

/// An armored detached binary signature over the data hashed into `context` (which MUST be a
/// SHA-256 context made by [`super::sums::openpgp_context`]).
pub fn sign(keypair: &mut KeyPair, context: Context) -> Result<Vec<u8>, SignError> {
    let signature = SignatureBuilder::new(SignatureType::Binary)
        .sign_hash(keypair, context)
        .map_err(|e| crypto_error("making an OpenPGP signature", e))?;
    let mut armored =
        armor::Writer::new(Vec::new(), armor::Kind::Signature).map_err(|e| crypto_error("armoring a signature", e))?;
    Packet::from(signature)
        .serialize(&mut armored)
        .map_err(|e| crypto_error("writing a signature", e))?;
    armored.finalize().map_err(|e| crypto_error("armoring a signature", e))
}

/// Verify the detached signature `signature_bytes` over some data against `trusted`.
/// `hash(algorithm)` returns the data hashed with `algorithm` (a clone of a prepared
/// context for SHA-256). `Err` is the reason, for a `FAIL` line.
pub fn verify(
    signature_bytes: &[u8],
    hash: &mut dyn FnMut(HashAlgorithm) -> Result<Context, String>,
    trusted: &[Cert],
) -> Result<Signer, String> {
    let signatures = parse_signatures(signature_bytes)?;
    let policy = StandardPolicy::new();
    let mut reasons = Vec::new();
    for signature in &signatures {
        match verify_one(signature, hash, trusted, &policy) {
            Ok(signer) => return Ok(signer),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, String> {
    let pile = PacketPile::from_bytes(bytes)
        .map_err(|e| format!("not a valid OpenPGP signature (truncated or damaged?): {e}"))?;
    let mut signatures = Vec::new();
    for packet in pile.into_children() {
        match packet {
            Packet::Signature(signature) => signatures.push(signature),
            other => {
                return Err(format!(
                    "expected only signature packets, found a {} packet",
                    other.tag()
                ))
            }
        }
    }
    if signatures.is_empty() {
        return Err("holds no OpenPGP signature".into());
    }
    Ok(signatures)
}

fn verify_one(
    signature: &Signature,
    hash: &mut dyn FnMut(HashAlgorithm) -> Result<Context, String>,
    trusted: &[Cert],
    policy: &StandardPolicy,
) -> Result<Signer, String> {
    if signature.typ() != SignatureType::Binary {
        return Err(format!(
            "a {} signature, expected a binary document signature",
            signature.typ()
        ));
    }
    let time = signature
        .signature_creation_time()
        .ok_or("the signature has no creation time")?;
    let issuers = signature.get_issuers();
    let Some(first_issuer) = issuers.first() else {
        return Err("the signature names no issuer key".into());
    };
    let mut reason = format!("signed by key {first_issuer}, which is not in the trust store");
    for key in trusted.iter().flat_map(|c| c.keys().key_handles(issuers.clone())) {
        let cert = key.cert();
        let who = user_id(cert).unwrap_or_else(|| fingerprint(cert));
        let key = match key.with_policy(policy, time) {
            Ok(key) => key,
            Err(e) => {
                reason = format!("key of {who} is not valid at the signature's time: {e}");
                continue;
            }
        };
        if let Err(e) = key.valid_cert().alive().and_then(|_| key.alive()) {
            reason = format!("key of {who} has expired: {e}");
            continue;
        }
        if matches!(key.valid_cert().revocation_status(), RevocationStatus::Revoked(_))
            || matches!(key.revocation_status(), RevocationStatus::Revoked(_))
        {
            reason = format!("key of {who} is revoked");
            continue;
        }
        if !key.for_signing() {
            reason = format!("key of {who} is not signing-capable");
            continue;
        }
        if let Err(e) = signature.signature_alive(None, None) {
            reason = format!("the signature is not alive: {e}");
            continue;
        }
        let context = hash(signature.hash_algo())?;
        if let Err(e) = signature.verify_hash(key.key(), context) {
            reason = format!("BAD signature by {who}: the data does not match ({e})");
            continue;
        }
        if let Err(e) = policy.signature(signature, Default::default()) {
            reason = format!("signature by {who} rejected by policy: {e}");
            continue;
        }
        return Ok(Signer {
            fingerprint: fingerprint(cert),
            user_id: user_id(cert),
        });
    }
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::sums::openpgp_context;

    fn context_of(data: &[u8]) -> Context {
        let mut c = openpgp_context(HashAlgorithm::SHA256).unwrap();
        c.update(data);
        c
    }

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let pass = Passphrase("correct horse".into());
        let (cert, _) = generate("T <t@example.org>", &pass).unwrap();
        assert_eq!(cert.primary_key().key().version(), 4);
        let mut keypair = unlock(&cert, &pass, Path::new("k")).unwrap();
        let armored = sign(&mut keypair, context_of(b"data")).unwrap();
        let public = cert.clone().strip_secret_key_material();
        let ok = verify(
            &armored,
            &mut |_| Ok(context_of(b"data")),
            std::slice::from_ref(&public),
        )
        .unwrap();
        assert_eq!(ok.user_id.as_deref(), Some("T <t@example.org>"));
        let bad = verify(&armored, &mut |_| Ok(context_of(b"dat4")), &[public]).unwrap_err();
        assert!(bad.contains("BAD signature"), "{bad}");
        let untrusted = verify(&armored, &mut |_| Ok(context_of(b"data")), &[]).unwrap_err();
        assert!(untrusted.contains("not in the trust store"), "{untrusted}");
        let truncated = verify(&armored[..armored.len() / 2], &mut |_| Ok(context_of(b"data")), &[]).unwrap_err();
        assert!(truncated.contains("not a valid OpenPGP signature"), "{truncated}");
    }

    #[test]
    fn wrong_passphrase_is_named() {
        let (cert, _) = generate("T <t@example.org>", &Passphrase("right".into())).unwrap();
        let result = unlock(&cert, &Passphrase("wrong".into()), Path::new("k"));
        assert!(matches!(result, Err(SignError::WrongPassphrase { .. })));
    }
}
