//! `weft:plugin/state`: plugin-private key-value state, one namespace per installation.

use super::{invalid, limit, unavailable, weft};
use crate::runtime::bindings::types::CapabilityError;
use crate::runtime::host::HostState;

/// Longest key, in bytes: keys are names, not data.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes: well under sled's 128 KiB comfort zone.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

type R<T> = wasmtime::Result<Result<T, CapabilityError>>;

impl HostState {
    /// The storage key of `key` in this installation's namespace: `state/<plugin>\0<key>`.
    fn state_key(&self, key: &str) -> Result<Vec<u8>, CapabilityError> {
        check_key(key)?;
        Ok(installation_state_key(&self.installation.plugin, key))
    }
}

/// Refuses empty keys and keys over [`MAX_KEY_BYTES`].
fn check_key(key: &str) -> Result<(), CapabilityError> {
    if key.is_empty() {
        return Err(invalid("state key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(limit(format!(
            "state key of {} bytes exceeds the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

/// The storage key of a state entry: `state/<plugin>\0<key>`, inside the tenant's space.
pub(crate) fn installation_state_key(plugin: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(7 + plugin.len() + key.len());
    k.extend_from_slice(b"state/");
    k.extend_from_slice(plugin.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn check_value(v: &[u8]) -> Result<(), CapabilityError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(limit(format!(
            "state value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
            v.len()
        )));
    }
    Ok(())
}

impl HostState {
    fn state_get(&self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        let k = self.state_key(key)?;
        self.services
            .backend
            .get(&self.space, &k)
            .map_err(unavailable)
    }

    fn state_set(&self, key: &str, value: &[u8]) -> Result<(), CapabilityError> {
        let k = self.state_key(key)?;
        check_value(value)?;
        self.services
            .backend
            .put(&self.space, &k, value)
            .map_err(unavailable)
    }

    fn state_delete(&self, key: &str) -> Result<(), CapabilityError> {
        let k = self.state_key(key)?;
        self.services
            .backend
            .delete(&self.space, &k)
            .map_err(unavailable)
    }

    fn state_increment(&self, key: &str, delta: i64) -> Result<i64, CapabilityError> {
        let k = self.state_key(key)?;
        let mut not_a_counter = false;
        let mut result = 0i64;
        self.services
            .backend
            .update(&self.space, &k, &mut |old| {
                let cur = match old {
                    None => 0,
                    Some(b) => match <[u8; 8]>::try_from(b) {
                        Ok(arr) => i64::from_le_bytes(arr),
                        Err(_) => {
                            not_a_counter = true;
                            return Some(b.to_vec());
                        }
                    },
                };
                not_a_counter = false;
                result = cur.wrapping_add(delta);
                Some(result.to_le_bytes().to_vec())
            })
            .map_err(unavailable)?;
        if not_a_counter {
            return Err(invalid(format!(
                "state key `{key}` does not hold a counter (8-byte little-endian i64)"
            )));
        }
        Ok(result)
    }

    fn state_cas(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, CapabilityError> {
        let k = self.state_key(key)?;
        check_value(new)?;
        self.services
            .backend
            .compare_and_swap(&self.space, &k, old, Some(new))
            .map_err(unavailable)
    }
}

impl weft::state::Host for HostState {
    fn get(&mut self, key: String) -> R<Option<Vec<u8>>> {
        self.enter()?;
        Ok(self.state_get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> R<()> {
        self.enter()?;
        Ok(self.state_set(&key, &value))
    }

    fn delete(&mut self, key: String) -> R<()> {
        self.enter()?;
        Ok(self.state_delete(&key))
    }

    fn increment(&mut self, key: String, delta: i64) -> R<i64> {
        self.enter()?;
        Ok(self.state_increment(&key, delta))
    }

    fn compare_and_swap(&mut self, key: String, old: Option<Vec<u8>>, new: Vec<u8>) -> R<bool> {
        self.enter()?;
        Ok(self.state_cas(&key, old.as_deref(), &new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_key_at_the_limit_is_accepted_and_over_it_is_limit_exceeded() {
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        let e = check_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert!(matches!(e, CapabilityError::LimitExceeded(m) if m.contains("257 bytes")));
        assert!(matches!(check_key(""), Err(CapabilityError::Invalid(_))));
    }

    #[test]
    fn state_value_at_the_limit_is_accepted_and_over_it_is_limit_exceeded() {
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        let e = check_value(&vec![0; MAX_VALUE_BYTES + 1]).unwrap_err();
        assert!(matches!(e, CapabilityError::LimitExceeded(m) if m.contains("65537 bytes")));
    }

    #[test]
    fn state_keys_of_two_installations_never_collide() {
        // "a" + "\0b/x" vs "a\0b" + "/x" cannot be produced: plugin names have no NUL.
        assert_ne!(
            installation_state_key("a", "b"),
            installation_state_key("ab", "")
        );
        assert!(!installation_state_key("x", "k").starts_with(&installation_state_key("xy", "")));
    }
}
