//! Crypto for webhook signatures (`weft:plugin/crypto`), granted to channel adapters only,
//! plus hex helpers that need no import.
//!
//! Calling anything from the re-exported import functions in another kind makes the host
//! refuse the upload: only [`hex`] and [`unhex`] are safe everywhere.
//!
//! ```no_run
//! use weft_guest::crypto;
//!
//! let body = br#"{"event_name":"follow"}"#;
//! let mac = crypto::hex(&crypto::sha256(body));
//! let expected = crypto::unhex(&mac).unwrap();
//! assert!(crypto::constant_time_eq(&expected, &crypto::sha256(body)));
//! ```

pub use crate::bindings::host::weft::plugin::crypto::{
    constant_time_eq, hmac_sha1, hmac_sha256, sha256,
};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Bytes of a hex string (either case); `None` if it is not hex of whole bytes.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001ABff").unwrap(), bytes);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
