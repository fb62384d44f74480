//! `weft:plugin/profile-store`: tenant-scoped profile reads.
//!
//! The tenant comes from the installation, never from the guest: every lookup goes to
//! `self.space`, the caller's own tenant space, whatever ids the guest passes.

use super::{invalid, unavailable, weft};
use crate::profiles;
use crate::runtime::bindings::types::{CapabilityError, Event, Identity, Profile};
use crate::runtime::host::HostState;

/// Most events one `recent-events` call returns.
pub const MAX_RECENT_EVENTS: u32 = 100;

type R<T> = wasmtime::Result<Result<T, CapabilityError>>;

impl weft::profile_store::Host for HostState {
    fn get_profile(&mut self, id: Identity) -> R<Option<Profile>> {
        self.enter()?;
        if id.kind.len() > 128 || id.value.len() > 1024 {
            return Ok(Err(invalid("identity kind or value too long")));
        }
        let b = self.services.backend.as_ref();
        Ok(
            profiles::get_by_identity(b, &self.space, &id.kind, &id.value)
                .map(|p| p.as_ref().map(profiles::to_wit))
                .map_err(unavailable),
        )
    }

    fn in_audience(&mut self, profile_id: String, audience: String) -> R<bool> {
        self.enter()?;
        let _ = (profile_id, audience);
        // Audiences arrive with the journeys issue; until then no profile is in any audience.
        Ok(Ok(false))
    }

    fn recent_events(
        &mut self,
        profile_id: String,
        name: Option<String>,
        since: i64,
        limit: u32,
    ) -> R<Vec<Event>> {
        self.enter()?;
        let limit = limit.min(MAX_RECENT_EVENTS) as usize;
        let prefix = format!("event/{profile_id}/").into_bytes();
        let rows = match self
            .services
            .backend
            .scan_prefix_rev(&self.space, &prefix, limit * 4)
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(unavailable(e))),
        };
        let mut out = Vec::new();
        for (_, v) in rows {
            let Ok(ev) = serde_json::from_slice::<Event>(&v) else {
                continue;
            };
            if ev.timestamp < since {
                break;
            }
            if name.as_ref().is_some_and(|n| ev.name.as_ref() != Some(n)) {
                continue;
            }
            out.push(ev);
            if out.len() >= limit {
                break;
            }
        }
        Ok(Ok(out))
    }
}
