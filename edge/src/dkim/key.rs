//! DKIM private keys: reading a PEM file (RSA of 2048 to 4096 bits, or Ed25519), the key
//! record to publish in DNS, and making a new key for `smtp-edge dkim keygen`.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;

/// Smallest RSA key accepted: [RFC 8301 §3.2] says signers SHOULD use 2048 bits, and the large
/// mailbox providers treat 1024-bit signatures as weak.
///
/// [RFC 8301 §3.2]: https://www.rfc-editor.org/rfc/rfc8301#section-3.2
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA key accepted: verifiers need only handle up to 4096 bits ([RFC 8301 §3.2]), and
/// a longer public key no longer fits a DNS TXT record comfortably.
///
/// [RFC 8301 §3.2]: https://www.rfc-editor.org/rfc/rfc8301#section-3.2
pub const MAX_RSA_BITS: usize = 4096;

/// Longest key file read: a 4096-bit RSA key in PEM is about 3.3 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// `rsa-sha256` ([RFC 6376 §3.3.1]).
    ///
    /// [RFC 6376 §3.3.1]: https://www.rfc-editor.org/rfc/rfc6376#section-3.3.1
    Rsa,
    /// `ed25519-sha256` ([RFC 8463]).
    ///
    /// [RFC 8463]: https://www.rfc-editor.org/rfc/rfc8463
    Ed25519,
}

impl KeyAlgorithm {
    /// The `k=` tag of the key record.
    fn tag(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read {path}: {problem}")]
    Read {
        /// The file.
        path: String,
        /// The system's reason.
        problem: String,
    },
    /// No private key in PEM form, or one that does not decode.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A private key ready to sign, with what the DNS record needs.
#[derive(Clone)]
pub struct SigningKey {
    /// The key itself, shared by every signature made with it.
    pub(super) key: Arc<DkimKey>,
    algorithm: KeyAlgorithm,
    /// The `p=` value: SubjectPublicKeyInfo DER for RSA (as `openssl rsa -pubout` writes it,
    /// which every verifier reads), the raw 32-octet key for Ed25519 ([RFC 8463 §4.2]).
    ///
    /// [RFC 8463 §4.2]: https://www.rfc-editor.org/rfc/rfc8463#section-4.2
    public: Vec<u8>,
    /// RSA modulus bits; 256 for Ed25519.
    bits: usize,
}

impl std::fmt::Debug for SigningKey {
    /// Names the algorithm and size, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// Two keys are equal when their public halves are: the public key determines the private one.
impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm && self.public == other.public
    }
}

impl Eq for SigningKey {}

impl SigningKey {
    /// Reads a PEM private key: PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), RSA of
    /// [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`] bits or Ed25519.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let shown = path.display().to_string();
        let read = |problem: std::io::Error| KeyError::Read {
            path: shown.clone(),
            problem: problem.to_string(),
        };
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut pem))
            .map_err(read)?;
        if pem.len() as u64 > MAX_KEY_FILE {
            return Err(invalid(&shown, format!("larger than {MAX_KEY_FILE} bytes")));
        }
        SigningKey::from_pem(&pem).map_err(|problem| invalid(&shown, problem))
    }

    /// [`SigningKey::load`] on the file's contents.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            "no private key in PEM form (expected \"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE \
             KEY\")"
                .to_owned()
        })?;
        let rsa = match &der {
            PrivateKeyDer::Pkcs1(k) => rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| format!("not a valid RSA key: {e}"))?,
            PrivateKeyDer::Pkcs8(k) => {
                if let Ok(ed) = Ed25519Key::from_pkcs8_der(k.secret_pkcs8_der()) {
                    let public = ed.public_key();
                    return Ok(SigningKey {
                        key: Arc::new(DkimKey::Ed25519(ed)),
                        algorithm: KeyAlgorithm::Ed25519,
                        public,
                        bits: 256,
                    });
                }
                rsa::RsaPrivateKey::from_pkcs8_der(k.secret_pkcs8_der())
                    .map_err(|_| "not an RSA or Ed25519 key (DKIM signs with those)".to_owned())?
            }
            _ => return Err("an EC key: DKIM signs with RSA or Ed25519".to_owned()),
        };
        let bits = rsa.size() * 8;
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "an RSA key of {bits} bits; {MIN_RSA_BITS}..={MAX_RSA_BITS} are accepted \
                 (RFC 8301 §3.2)"
            ));
        }
        let public = rsa
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| format!("cannot encode its public key: {e}"))?
            .into_vec();
        let key = RsaKey::<Sha256>::from_key_der(der.clone_key())
            .map_err(|e| format!("not a valid RSA key: {e}"))?;
        Ok(SigningKey {
            key: Arc::new(DkimKey::Rsa(key)),
            algorithm: KeyAlgorithm::Rsa,
            public,
            bits,
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// RSA modulus bits, or 256 for Ed25519.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The value of the DNS TXT record that publishes this key ([RFC 6376 §3.6.1]):
    /// `v=DKIM1; k=rsa; p=...`.
    ///
    /// [RFC 6376 §3.6.1]: https://www.rfc-editor.org/rfc/rfc6376#section-3.6.1
    pub fn txt_record(&self) -> String {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        format!("v=DKIM1; k={}; p={p}", self.algorithm.tag())
    }
}

fn invalid(path: &str, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// A new private key in PKCS#8 PEM. RSA keys are made by aws-lc (through rcgen, which the
/// self-signed certificate already uses): far faster than a pure-Rust prime search.
pub fn generate(algorithm: KeyAlgorithm, rsa_bits: usize) -> Result<String, String> {
    let pair = match algorithm {
        KeyAlgorithm::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyAlgorithm::Rsa => {
            let size = match rsa_bits {
                2048 => rcgen::RsaKeySize::_2048,
                3072 => rcgen::RsaKeySize::_3072,
                4096 => rcgen::RsaKeySize::_4096,
                other => return Err(format!("RSA keys of 2048, 3072 or 4096 bits, not {other}")),
            };
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        }
    };
    pair.map(|p| p.serialize_pem())
        .map_err(|e| format!("cannot make a key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_publish_their_public_half() {
        let pem = generate(KeyAlgorithm::Ed25519, 0).unwrap();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Ed25519);
        let record = key.txt_record();
        let p = record.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        assert_eq!(raw.len(), 32, "RFC 8463 publishes the bare 32-octet key");

        let pem = generate(KeyAlgorithm::Rsa, 2048).unwrap();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!((key.algorithm(), key.bits()), (KeyAlgorithm::Rsa, 2048));
        assert!(key.txt_record().starts_with("v=DKIM1; k=rsa; p=MII"));
    }

    #[test]
    fn short_rsa_keys_ec_keys_and_garbage_are_refused() {
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&small, Default::default()).unwrap();
        let e = SigningKey::from_pem(pem.as_bytes()).unwrap_err();
        assert!(e.contains("1024 bits"), "{e}");

        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let e = SigningKey::from_pem(ec.serialize_pem().as_bytes()).unwrap_err();
        assert!(e.contains("RSA or Ed25519"), "{e}");

        let e = SigningKey::from_pem(b"not a key").unwrap_err();
        assert!(e.contains("no private key"), "{e}");
    }
}
