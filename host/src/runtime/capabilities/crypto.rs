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
}
