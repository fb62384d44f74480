//! The profile cache of the personalization path: identity → profile id, and profile id →
//! the snapshot a plugin sees (traits, identities, audiences, recent events).
//!
//! **Invalidation** hooks the store itself ([`WriteObserver`]): every write of a profile's
//! record, history, audience memberships or merge redirect, and of an identity link, drops
//! the matching entry, whatever code path made it. A read that raced a write cannot put a
//! stale entry back: each shard counts its invalidations, and an entry loaded before one
//! of them is not inserted.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ingest::{Message, MessageType};
use crate::profiles;
use crate::runtime::bindings::types;
use crate::store::{Backend, Db, Space, StoreError, WriteObserver};

/// Shards of the cache: enough that two cores never queue on one lock.
const SHARDS: usize = 64;

/// Track and page events a plugin sees, newest first: the WIT contract's bound.
pub const RECENT_EVENTS: usize = 20;

/// History rows read to find [`RECENT_EVENTS`] track and page events (identify and other
/// calls are skipped): enough for a profile whose latest activity is mostly identifies.
const RECENT_SCAN: usize = 60;

/// Bytes counted per cached identity link beyond its key and id: the map slot and the
/// allocator's headers.
const ENTRY_OVERHEAD: usize = 192;

/// Bytes counted per snapshot beyond its strings: the records, vectors, `Arc` and the
/// allocator's headers. Measured: caching the benchmark's 100,000 small profiles grew the
/// server's RSS by about 100 MiB, ~1 KiB a profile with its identity link.
const SNAPSHOT_OVERHEAD: usize = 640;

/// A profile as a personalization plugin sees it.
#[derive(Debug)]
pub struct Snapshot {
    /// The profile with its audiences.
    pub profile: types::Profile,
    /// Latest track and page events, newest first.
    pub recent: Vec<types::Event>,
    bytes: usize,
}

impl Snapshot {
    /// Loads profile `pid`'s snapshot (`None` if the record is gone).
    pub fn load(b: &dyn Backend, sp: &Space, pid: &str) -> Result<Option<Snapshot>, StoreError> {
        let Some(rec) = profiles::get(b, sp, pid)? else {
            return Ok(None);
        };
        let mut profile = profiles::to_wit(&rec);
        profile.audiences = crate::audience::engine::memberships(b, sp, pid)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut recent = Vec::new();
        for (_, v) in b.scan_prefix_rev(sp, &profiles::event_prefix(pid), RECENT_SCAN)? {
            // A history row that does not decode is skipped, not fatal: the page still
            // gets a decision.
            let Ok(m) = serde_json::from_slice::<Message>(&v) else {
                continue;
            };
            if matches!(m.kind, MessageType::Track | MessageType::Page) {
                recent.push(crate::journeys::engine::to_wit_event(&m));
                if recent.len() == RECENT_EVENTS {
                    break;
                }
            }
        }
        let bytes = SNAPSHOT_OVERHEAD
            + profile.traits.len()
            + profile
                .identities
                .iter()
                .map(|i| i.kind.len() + i.value.len() + 48)
                .sum::<usize>()
            + profile
                .audiences
                .iter()
                .map(|a| a.len() + 24)
                .sum::<usize>()
            + recent
                .iter()
                .map(|e| {
                    e.message_id.len() + e.properties.len() + e.traits.len() + e.context.len() + 160
                })
                .sum::<usize>();
        Ok(Some(Snapshot {
            profile,
            recent,
            bytes,
        }))
    }
}

/// One shard: its entries, their size, and how many invalidations it has seen.
#[derive(Default)]
struct Shard {
    generation: u64,
    bytes: usize,
    /// `tenant \xff ident-key` → owning profile id (`None`: no profile has it).
    idents: HashMap<Box<[u8]>, Option<Arc<str>>>,
    /// `tenant \xff profile-id` → snapshot.
    profiles: HashMap<Box<[u8]>, Arc<Snapshot>>,
}

/// Hit and miss counts, for `/v1/personalize/status` and the benchmarks.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that read the store.
    pub misses: u64,
    /// Entries dropped because a write changed them.
    pub invalidations: u64,
    /// Entries dropped to stay within the memory budget.
    pub evictions: u64,
}

/// The cache. Shared by every tenant; entries are keyed by tenant.
pub struct ProfileCache {
    shards: Vec<Mutex<Shard>>,
    budget_per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for ProfileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn entry_key(tenant: &str, rest: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + rest.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0xff);
    k.extend_from_slice(rest);
    k.into_boxed_slice()
}

/// The profile id a key of the profile's own data belongs to.
fn profile_of(key: &[u8]) -> Option<&[u8]> {
    for prefix in [
        &b"profile/"[..],
        &b"event/"[..],
        &b"pmember/"[..],
        &b"merged/"[..],
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
    }
    None
}

impl ProfileCache {
    /// A cache holding about `budget_bytes` of snapshots.
    pub fn new(budget_bytes: usize) -> ProfileCache {
        ProfileCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            budget_per_shard: (budget_bytes / SHARDS).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, Shard> {
        self.shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// From memory only: `Some(owner)` when the identity's owner is cached.
    fn cached_owner(&self, key: &[u8]) -> Option<Option<Arc<str>>> {
        self.lock(key).idents.get(key).cloned()
    }

    fn cached_profile(&self, key: &[u8]) -> Option<Arc<Snapshot>> {
        self.lock(key).profiles.get(key).cloned()
    }

    fn generation(&self, key: &[u8]) -> u64 {
        self.lock(key).generation
    }

    /// The profile owning the first of `identities` (kind, value) that has one, from
    /// memory when cached, else read from the store on the blocking pool and cached.
    pub async fn profile(
        self: &Arc<Self>,
        db: &Db,
        tenant: &str,
        identities: &[(&'static str, String)],
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let mut complete = true;
        for (kind, value) in identities {
            match self.cached_owner(&entry_key(tenant, &profiles::ident_key(kind, value))) {
                Some(None) => continue,
                Some(Some(pid)) => {
                    if let Some(s) = self.cached_profile(&entry_key(tenant, pid.as_bytes())) {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(s));
                    }
                    complete = false;
                    break;
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let tenant = tenant.to_string();
        let identities = identities.to_vec();
        db.run(move |b| this.load(b, &tenant, &identities)).await
    }

    /// The slow path of [`profile`](Self::profile); blocking.
    fn load(
        &self,
        b: &dyn Backend,
        tenant: &str,
        identities: &[(&'static str, String)],
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let sp = Space::tenant(tenant);
        for (kind, value) in identities {
            let ikey = entry_key(tenant, &profiles::ident_key(kind, value));
            let seen = self.generation(&ikey);
            let owner: Option<Arc<str>> = profiles::owner(b, &sp, kind, value)?.map(Arc::from);
            self.put_owner(ikey, owner.clone(), seen);
            let Some(pid) = owner else { continue };
            let pkey = entry_key(tenant, pid.as_bytes());
            if let Some(s) = self.cached_profile(&pkey) {
                return Ok(Some(s));
            }
            let seen = self.generation(&pkey);
            let Some(snap) = Snapshot::load(b, &sp, &pid)? else {
                continue;
            };
            let snap = Arc::new(snap);
            self.put_profile(pkey, snap.clone(), seen);
            return Ok(Some(snap));
        }
        Ok(None)
    }

    fn put_owner(&self, key: Box<[u8]>, owner: Option<Arc<str>>, seen: u64) {
        let mut shard = self.lock(&key);
        if shard.generation != seen {
            return;
        }
        let size = key.len() + owner.as_ref().map_or(0, |o| o.len()) + ENTRY_OVERHEAD;
        if shard.idents.insert(key, owner).is_none() {
            shard.bytes += size;
        }
        self.evict(&mut shard);
    }

    fn put_profile(&self, key: Box<[u8]>, snap: Arc<Snapshot>, seen: u64) {
        let mut shard = self.lock(&key);
        if shard.generation != seen {
            return;
        }
        let size = key.len() + snap.bytes;
        if let Some(old) = shard.profiles.insert(key, snap) {
            shard.bytes = shard.bytes.saturating_sub(old.bytes);
        }
        shard.bytes += size;
        self.evict(&mut shard);
    }

    /// Drops arbitrary entries (hash order: effectively random) until the shard is back
    /// under 90% of its budget; random eviction needs no per-hit bookkeeping.
    fn evict(&self, shard: &mut Shard) {
        if shard.bytes <= self.budget_per_shard {
            return;
        }
        let target = self.budget_per_shard / 10 * 9;
        let mut dropped = 0u64;
        while shard.bytes > target {
            if let Some(k) = shard.profiles.keys().next().cloned() {
                if let Some(s) = shard.profiles.remove(&k) {
                    shard.bytes = shard.bytes.saturating_sub(k.len() + s.bytes);
                }
            } else if let Some(k) = shard.idents.keys().next().cloned() {
                if let Some(o) = shard.idents.remove(&k) {
                    let size = k.len() + o.map_or(0, |o| o.len()) + ENTRY_OVERHEAD;
                    shard.bytes = shard.bytes.saturating_sub(size);
                }
            } else {
                shard.bytes = 0;
                break;
            }
            dropped += 1;
        }
        self.evictions.fetch_add(dropped, Ordering::Relaxed);
    }

    /// Drops the entry under `key` and makes loads that started earlier skip their insert.
    fn invalidate(&self, key: &[u8], profile: bool) {
        let mut shard = self.lock(key);
        shard.generation += 1;
        let size = if profile {
            shard.profiles.remove(key).map(|s| key.len() + s.bytes)
        } else {
            shard
                .idents
                .remove(key)
                .map(|o| key.len() + o.map_or(0, |o| o.len()) + ENTRY_OVERHEAD)
        };
        if let Some(n) = size {
            shard.bytes = shard.bytes.saturating_sub(n);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WriteObserver for ProfileCache {
    fn written(&self, space: &Space, key: &[u8]) {
        let Space::Tenant(tenant) = space else {
            return;
        };
        if key.starts_with(b"ident/") {
            self.invalidate(&entry_key(tenant, key), false);
        } else if let Some(pid) = profile_of(key) {
            self.invalidate(&entry_key(tenant, pid), true);
        }
    }

    fn dropped(&self, space: &Space) {
        let Space::Tenant(tenant) = space else {
            return;
        };
        let prefix = entry_key(tenant, b"");
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.generation += 1;
            shard.idents.retain(|k, _| !k.starts_with(&prefix));
            shard.profiles.retain(|k, _| !k.starts_with(&prefix));
            shard.bytes = shard
                .idents
                .iter()
                .map(|(k, o)| k.len() + o.as_ref().map_or(0, |o| o.len()) + ENTRY_OVERHEAD)
                .chain(shard.profiles.iter().map(|(k, s)| k.len() + s.bytes))
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_profiles_data_name_the_profile() {
        assert_eq!(profile_of(b"profile/p_1"), Some(&b"p_1"[..]));
        assert_eq!(profile_of(b"event/p_1/0001/ab"), Some(&b"p_1"[..]));
        assert_eq!(profile_of(b"pmember/p_1/vip"), Some(&b"p_1"[..]));
        assert_eq!(profile_of(b"merged/p_1"), Some(&b"p_1"[..]));
        assert_eq!(profile_of(b"q/0001"), None);
        assert_eq!(profile_of(b"stats/p_1/x"), None);
    }

    #[test]
    fn an_invalidation_during_a_load_keeps_the_stale_entry_out() {
        let c = ProfileCache::new(1 << 20);
        let key = entry_key("t1", b"ident/user_id\0u1");
        let seen = c.generation(&key);
        c.invalidate(&key, false);
        c.put_owner(key.clone(), Some(Arc::from("p_old")), seen);
        assert!(c.cached_owner(&key).is_none(), "stale owner was cached");
        let seen = c.generation(&key);
        c.put_owner(key.clone(), Some(Arc::from("p_new")), seen);
        assert_eq!(c.cached_owner(&key), Some(Some(Arc::from("p_new"))));
    }

    #[test]
    fn the_budget_holds_by_evicting() {
        let c = ProfileCache::new(SHARDS * 2_000);
        for i in 0..1_000 {
            let key = entry_key("t1", format!("ident/user_id\0u{i}").as_bytes());
            let seen = c.generation(&key);
            c.put_owner(key, None, seen);
        }
        let total: usize = c.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
        assert!(total <= SHARDS * 2_000, "{total} bytes cached");
        assert!(c.stats().evictions > 0);
    }
}
