//! `weft:plugin/config`: per-installation settings and secrets.

use std::sync::Arc;

use super::{unavailable, weft};
use crate::runtime::bindings::types::CapabilityError;
use crate::runtime::host::{HostState, Settings};

/// Storage key of an installation's settings in its tenant's space.
pub(crate) fn settings_key(plugin: &str) -> Vec<u8> {
    format!("settings/{plugin}").into_bytes()
}

impl weft::config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.enter()?;
        Ok(self.installation.settings().config.get(&key).cloned())
    }

    fn get_secret(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.enter()?;
        Ok(self.installation.settings().secrets.get(&key).cloned())
    }

    fn rotate_secret(
        &mut self,
        key: String,
        expected: String,
        replacement: String,
    ) -> wasmtime::Result<Result<bool, CapabilityError>> {
        self.enter()?;
        let skey = settings_key(&self.installation.plugin);
        let mut swapped = false;
        let mut new_settings: Option<Settings> = None;
        let r = self
            .services
            .backend
            .update(&self.space, &skey, &mut |old| {
                swapped = false;
                let mut s: Settings = old
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                if s.secrets.get(&key) != Some(&expected) {
                    return old.map(|o| o.to_vec());
                }
                s.secrets.insert(key.clone(), replacement.clone());
                let bytes = serde_json::to_vec(&s).ok();
                swapped = bytes.is_some();
                new_settings = Some(s);
                bytes.or_else(|| old.map(|o| o.to_vec()))
            });
        if let Err(e) = r {
            return Ok(Err(unavailable(e)));
        }
        if swapped {
            if let Err(e) = self.services.backend.commit_blocking() {
                return Ok(Err(unavailable(e)));
            }
            if let Some(s) = new_settings {
                *self
                    .installation
                    .settings
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
            }
        }
        Ok(Ok(swapped))
    }
}
