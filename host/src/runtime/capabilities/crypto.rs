//! `weft:plugin/crypto`: hashing and HMACs for webhook signatures.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::weft;
use crate::runtime::host::HostState;

impl weft::crypto::Host for HostState {
    fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.enter()?;
        Ok(Sha256::digest(&data).to_vec())
    }

    fn hmac_sha256(&mut self, key: Vec<u8>, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.enter()?;
        let mut m = <Hmac<Sha256>>::new_from_slice(&key).expect("HMAC accepts any key length");
        m.update(&data);
        Ok(m.finalize().into_bytes().to_vec())
    }

    fn hmac_sha1(&mut self, key: Vec<u8>, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        self.enter()?;
        let mut m = <Hmac<sha1::Sha1>>::new_from_slice(&key).expect("HMAC accepts any key length");
        m.update(&data);
        Ok(m.finalize().into_bytes().to_vec())
    }

    fn constant_time_eq(&mut self, a: Vec<u8>, b: Vec<u8>) -> wasmtime::Result<bool> {
        self.enter()?;
        use subtle::ConstantTimeEq;
        Ok(a.len() == b.len() && bool::from(a.ct_eq(&b)))
    }

    fn ecdsa_p256_verify(
        &mut self,
        public_key: Vec<u8>,
        data: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        self.enter()?;
        Ok(ecdsa_p256_verify(&public_key, &data, &signature))
    }
}

/// Whether `signature` (DER) signs `data` under `public_key` (DER SubjectPublicKeyInfo).
fn ecdsa_p256_verify(public_key: &[u8], data: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(public_key) else {
        return false;
    };
    let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
        return false;
    };
    key.verify(data, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::ecdsa_p256_verify;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    use p256::pkcs8::EncodePublicKey;

    #[test]
    fn ecdsa_p256_verify_accepts_only_the_signed_data() {
        let key = SigningKey::from_slice(&[7u8; 32]).expect("a valid scalar");
        let public = p256::PublicKey::from(*key.verifying_key())
            .to_public_key_der()
            .expect("DER")
            .into_vec();
        let sig: Signature = key.sign(b"1700000000{\"event\":\"open\"}");
        let der = sig.to_der().as_bytes().to_vec();
        assert!(ecdsa_p256_verify(
            &public,
            b"1700000000{\"event\":\"open\"}",
            &der
        ));
        assert!(!ecdsa_p256_verify(
            &public,
            b"1700000001{\"event\":\"open\"}",
            &der
        ));
        assert!(!ecdsa_p256_verify(b"not a key", b"x", &der));
        assert!(!ecdsa_p256_verify(&public, b"x", b"not a signature"));
    }
}
