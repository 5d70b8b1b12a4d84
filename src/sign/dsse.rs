//! DSSE (Dead Simple Signing Envelope, v1): the envelope around in-toto statements.
//!
//! Owns: the pre-authentication encoding (PAE), the envelope JSON (`payload` and `sig` in
//! standard base64, `keyid` on every signature), signing with the ECDSA P-256 key (ECDSA over
//! SHA-256 of the PAE, DER, as cosign and sigstore do) and verifying against trusted keys.
//! Does not: build statements ([`super::provenance`]) or pick keys.

use super::cosign;
use super::keys::TrustStore;
use super::SignError;
use base64::Engine;
use p256::ecdsa::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// base64 of the payload bytes.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvelopeSignature {
    pub keyid: String,
    /// base64 of the DER ECDSA signature over SHA-256 of the PAE.
    pub sig: String,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
/// decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Sign `payload` into a one-signature envelope.
pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Envelope, SignError> {
    let digest = sha2::Sha256::digest(pae(payload_type, payload));
    let sig = cosign::sign_digest(key, &digest)?;
    Ok(Envelope {
        payload: base64::engine::general_purpose::STANDARD.encode(payload),
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: cosign::key_id(key.verifying_key()),
            sig,
        }],
    })
}

/// The payload, once at least one signature verifies with a trusted key; returns the payload
/// and the key id that verified. `Err` is the reason, for a `FAIL` line.
pub fn verify(envelope: &Envelope, trust: &TrustStore) -> Result<(Vec<u8>, String), String> {
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&envelope.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    if envelope.signatures.is_empty() {
        return Err("the envelope has no signatures".into());
    }
    let digest = sha2::Sha256::digest(pae(&envelope.payload_type, &payload));
    let mut reasons = Vec::new();
    for signature in &envelope.signatures {
        let candidates: Vec<_> = if signature.keyid.is_empty() {
            trust.ecdsa.iter().collect()
        } else {
            trust.ecdsa_by_id(&signature.keyid).into_iter().collect()
        };
        if candidates.is_empty() {
            reasons.push(format!(
                "signed by key {}, which is not in the trust store",
                if signature.keyid.is_empty() {
                    "(no keyid)"
                } else {
                    &signature.keyid
                }
            ));
            continue;
        }
        for key in candidates {
            match cosign::verify_digest(&key.key, &digest, &signature.sig) {
                Ok(()) => return Ok((payload, key.key_id.clone())),
                Err(reason) => reasons.push(format!("key {}: {reason}", short(&key.key_id))),
            }
        }
    }
    Err(reasons.join("; "))
}

fn short(key_id: &str) -> &str {
    &key_id[..key_id.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::keys::TrustedEcdsa;

    #[test]
    fn pae_matches_the_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = cosign::generate();
        let envelope = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key).unwrap();
        let trust = TrustStore {
            dir: "t".into(),
            certs: vec![],
            ecdsa: vec![TrustedEcdsa {
                key_id: cosign::key_id(key.verifying_key()),
                key: *key.verifying_key(),
            }],
        };
        assert_eq!(verify(&envelope, &trust).unwrap().0, b"{}");
        let mut tampered = envelope.clone();
        tampered.payload = base64::engine::general_purpose::STANDARD.encode(b"{ }");
        assert!(verify(&tampered, &trust).unwrap_err().contains("BAD"));
        let other = TrustStore { ecdsa: vec![], ..trust };
        assert!(verify(&envelope, &other)
            .unwrap_err()
            .contains("not in the trust store"));
    }
}
