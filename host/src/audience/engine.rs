//! The audience engine: definitions, and membership kept current per profile.
//!
//! Keys inside a tenant's space:
//! - `audience/<id>`: the [`AudienceDef`] as JSON;
//! - `member/<id>/<profile id>`: entered-at (Unix ms, a JSON number), one row per member;
//! - `pmember/<profile id>/<id>`: the same entered-at, the reverse index (360 view, erasure);
//! - `audcount/<id>`: the member count (a JSON number), written in the same batch as the
//!   membership rows it counts, so counting is one read.
//!
//! Every function that changes membership reads the current rows and counts and returns (or
//! applies) writes computed from them, so **callers must hold the tenant's profile lock**
//! ([`crate::ingest::processor::Processor::tenant_lock`]): the event processor, the API's
//! create/delete and the periodic sweep then never interleave. Within one batch, use one
//! call per profile set ([`reevaluate_merged`] for merges, not [`erase_ops`] plus
//! [`reevaluate`]): two calls touching the same audience would each write `audcount/<id>`
//! from the same stored value, and the second would overwrite the first.
//!
//! Membership changes are reported as [`Change`]s for the caller to turn into
//! `Audience Entered` / `Audience Exited` events; this module emits nothing itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::predicate::{Facts, Predicate, PredicateError};
use crate::profiles::{self, EventStats, ProfileRecord};
use crate::store::{Backend, BatchOp, Space, StoreError};

/// Most audiences per tenant: every event re-evaluates them all, so this bounds the cost of
/// one event.
pub const MAX_AUDIENCES: usize = 100;
/// Longest audience id in bytes: ids appear in keys, URLs and event properties.
pub const MAX_ID_BYTES: usize = 64;
/// Longest audience name in bytes: a label for people, not a description.
pub const MAX_NAME_BYTES: usize = 200;
/// Largest stored definition in bytes: predicate limits bound the node count but not the
/// size of comparison values; this keeps one definition far below the store's value limit.
pub const MAX_DEF_BYTES: usize = 16 * 1024;
/// Largest page of [`members_page`]: one page must fit comfortably in one response.
pub const MAX_MEMBERS_PAGE: usize = 1000;
/// Profiles evaluated per batch by [`sweep`]: bounds a batch's size and memory (records
/// are up to 48 KiB each).
const SWEEP_PAGE: usize = 128;
/// Member rows deleted per batch by [`delete`]: bounds a batch's size.
const PURGE_CHUNK: usize = 512;

/// An audience definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceDef {
    /// Slug: 1 to [`MAX_ID_BYTES`] bytes of `a-z`, `0-9` and `-`.
    pub id: String,
    /// Display name (1 to [`MAX_NAME_BYTES`] bytes).
    pub name: String,
    /// Who belongs.
    pub predicate: Predicate,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

/// One membership change of one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Audience id.
    pub audience: String,
    /// Audience name (for the event's properties).
    pub name: String,
    /// Entered (true) or exited (false).
    pub entered: bool,
}

/// Why an audience operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// The id is not a slug of the allowed length.
    #[error("invalid audience id `{id}`: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The name is empty or too long.
    #[error("invalid audience name: {0}")]
    InvalidName(String),
    /// The predicate does not parse; the message starts with its JSON path.
    #[error("invalid predicate: {0}")]
    InvalidPredicate(#[from] PredicateError),
    /// The serialized definition is over [`MAX_DEF_BYTES`].
    #[error("the audience definition is {size} bytes, over the maximum of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An audience with this id exists.
    #[error("audience `{0}` already exists")]
    Exists(String),
    /// The tenant has [`MAX_AUDIENCES`] audiences.
    #[error("the tenant already has the maximum of {max} audiences; delete one first")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Facts over a profile record and a lookup of its event stats.
pub struct ProfileFacts<'a> {
    /// The profile as it will be stored.
    pub profile: &'a ProfileRecord,
    /// Stats of one event name on this profile (as they will be stored), if any.
    pub stats: &'a dyn Fn(&str) -> Option<EventStats>,
}

impl Facts for ProfileFacts<'_> {
    fn trait_value(&self, path: &str) -> Option<&Value> {
        let traits = &self.profile.traits;
        if let Some(v) = traits.get(path) {
            return Some(v);
        }
        let mut segments = path.split('.');
        let mut current = traits.get(segments.next()?)?;
        for segment in segments {
            current = current.as_object()?.get(segment)?;
        }
        Some(current)
    }

    fn event_count(&self, name: &str, since_ms: i64) -> u64 {
        (self.stats)(name).map_or(0, |s| s.count_since(since_ms))
    }

    fn last_performed(&self, name: &str) -> Option<i64> {
        (self.stats)(name).and_then(|s| s.last)
    }

    fn consent(&self, channel: &str, purpose: &str) -> Option<bool> {
        self.profile.consent(channel, purpose)
    }
}

/// Key of a definition.
pub fn def_key(id: &str) -> Vec<u8> {
    format!("audience/{id}").into_bytes()
}

/// Prefix of every definition.
pub const DEF_PREFIX: &[u8] = b"audience/";

/// Key of one member row.
pub fn member_key(id: &str, profile_id: &str) -> Vec<u8> {
    format!("member/{id}/{profile_id}").into_bytes()
}

/// Prefix of an audience's member rows.
pub fn member_prefix(id: &str) -> Vec<u8> {
    format!("member/{id}/").into_bytes()
}

/// Key of one reverse-index row.
pub fn pmember_key(profile_id: &str, id: &str) -> Vec<u8> {
    format!("pmember/{profile_id}/{id}").into_bytes()
}

/// Prefix of a profile's reverse-index rows.
pub fn pmember_prefix(profile_id: &str) -> Vec<u8> {
    format!("pmember/{profile_id}/").into_bytes()
}

/// Key of an audience's member count.
pub fn count_key(id: &str) -> Vec<u8> {
    format!("audcount/{id}").into_bytes()
}

/// Checks an audience id: 1 to [`MAX_ID_BYTES`] bytes of `a-z`, `0-9` and `-`.
pub fn validate_id(id: &str) -> Result<(), AudienceError> {
    let invalid = |reason: String| AudienceError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(invalid(format!(
            "is {} bytes, over the maximum of {MAX_ID_BYTES}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(format!(
            "`{c}` is not allowed; use lowercase letters, digits and `-`"
        )));
    }
    Ok(())
}

/// Checks an audience name: not blank, at most [`MAX_NAME_BYTES`] bytes.
pub fn validate_name(name: &str) -> Result<(), AudienceError> {
    if name.trim().is_empty() {
        return Err(AudienceError::InvalidName("must not be empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(AudienceError::InvalidName(format!(
            "is {} bytes, over the maximum of {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

fn decode_i64(bytes: &[u8]) -> Result<i64, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::Codec)
}

/// Every definition of the tenant, by id. A definition that no longer decodes is skipped
/// (and logged) so that it cannot stop event processing.
pub fn load_all(b: &dyn Backend, sp: &Space) -> Result<Vec<AudienceDef>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in b.scan_prefix(sp, DEF_PREFIX, usize::MAX)? {
        match serde_json::from_slice::<AudienceDef>(&value) {
            Ok(def) => out.push(def),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&key),
                error = %e,
                "skipping an audience definition that does not decode"
            ),
        }
    }
    Ok(out)
}

/// The definition of `id`, if it exists.
pub fn get(b: &dyn Backend, sp: &Space, id: &str) -> Result<Option<AudienceDef>, StoreError> {
    if validate_id(id).is_err() {
        return Ok(None);
    }
    b.get_json(sp, &def_key(id))
}

/// The member count of `id` (0 if unknown).
pub fn count(b: &dyn Backend, sp: &Space, id: &str) -> Result<u64, StoreError> {
    match b.get(sp, &count_key(id))? {
        Some(v) => serde_json::from_slice(&v).map_err(StoreError::Codec),
        None => Ok(0),
    }
}

/// Every definition with its member count, by id.
pub fn list(b: &dyn Backend, sp: &Space) -> Result<Vec<(AudienceDef, u64)>, StoreError> {
    load_all(b, sp)?
        .into_iter()
        .map(|def| {
            let n = count(b, sp, &def.id)?;
            Ok((def, n))
        })
        .collect()
}

/// Stores a new, empty audience (call [`sweep`] with it next to backfill its members).
/// Refuses a bad id or name, an oversized definition, an existing id and a tenant at
/// [`MAX_AUDIENCES`]. Hold the tenant lock.
pub fn create(
    b: &dyn Backend,
    sp: &Space,
    id: &str,
    name: &str,
    predicate: Predicate,
    now_ms: i64,
) -> Result<AudienceDef, AudienceError> {
    validate_id(id)?;
    validate_name(name)?;
    let def = AudienceDef {
        id: id.to_owned(),
        name: name.to_owned(),
        predicate,
        created_at: now_ms,
    };
    let bytes = serde_json::to_vec(&def).map_err(StoreError::Codec)?;
    if bytes.len() > MAX_DEF_BYTES {
        return Err(AudienceError::TooLarge {
            size: bytes.len(),
            max: MAX_DEF_BYTES,
        });
    }
    if b.get(sp, &def_key(id))?.is_some() {
        return Err(AudienceError::Exists(id.to_owned()));
    }
    if b.scan_prefix(sp, DEF_PREFIX, MAX_AUDIENCES)?.len() >= MAX_AUDIENCES {
        return Err(AudienceError::TooMany { max: MAX_AUDIENCES });
    }
    // Rows left by a delete that crashed half-way would be counted as members.
    purge_members(b, sp, id)?;
    b.apply_batch(sp, &[BatchOp::delete(count_key(id))])?;
    if !b.compare_and_swap(sp, &def_key(id), None, Some(&bytes))? {
        return Err(AudienceError::Exists(id.to_owned()));
    }
    Ok(def)
}

/// Deletes every member row of `id` (both directions), in chunks.
fn purge_members(b: &dyn Backend, sp: &Space, id: &str) -> Result<(), StoreError> {
    let prefix = member_prefix(id);
    loop {
        let rows = b.scan_prefix(sp, &prefix, PURGE_CHUNK)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for (key, _) in rows {
            let pid = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            ops.push(BatchOp::delete(pmember_key(&pid, id)));
            ops.push(BatchOp::delete(key));
        }
        b.apply_batch(sp, &ops)?;
    }
}

/// Deletes an audience: its member rows (both directions, in chunks), then its count and
/// definition together, so a delete interrupted by a crash can simply be repeated. Returns
/// whether the definition existed. Hold the tenant lock.
pub fn delete(b: &dyn Backend, sp: &Space, id: &str) -> Result<bool, StoreError> {
    if validate_id(id).is_err() {
        return Ok(false);
    }
    let existed = b.get(sp, &def_key(id))?.is_some();
    purge_members(b, sp, id)?;
    b.apply_batch(
        sp,
        &[BatchOp::delete(count_key(id)), BatchOp::delete(def_key(id))],
    )?;
    Ok(existed)
}

/// One page of `id`'s members (profile ids), in descending id order, strictly before the
/// `before` cursor; the second value is the cursor of the next page, if there is one.
/// `limit` is clamped to 1..=[`MAX_MEMBERS_PAGE`].
pub fn members_page(
    b: &dyn Backend,
    sp: &Space,
    id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), StoreError> {
    if validate_id(id).is_err() {
        return Ok((Vec::new(), None));
    }
    let prefix = member_prefix(id);
    let limit = limit.clamp(1, MAX_MEMBERS_PAGE);
    // One extra row tells whether another page follows.
    let rows = match before {
        Some(cursor) => {
            let mut end = prefix.clone();
            end.extend_from_slice(cursor.as_bytes());
            b.scan_prefix_rev_before(sp, &prefix, &end, limit + 1)?
        }
        None => b.scan_prefix_rev(sp, &prefix, limit + 1)?,
    };
    let more = rows.len() > limit;
    let ids: Vec<String> = rows
        .into_iter()
        .take(limit)
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect();
    let next = if more { ids.last().cloned() } else { None };
    Ok((ids, next))
}

/// A profile's audiences and when it entered each, by audience id (for the 360 view).
pub fn memberships(
    b: &dyn Backend,
    sp: &Space,
    profile_id: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let prefix = pmember_prefix(profile_id);
    b.scan_prefix(sp, &prefix, usize::MAX)?
        .into_iter()
        .map(|(k, v)| {
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            Ok((id, decode_i64(&v)?))
        })
        .collect()
}

/// The stored stats of `profile_id` for every event name the audiences read (names never
/// performed are absent; a record that does not decode counts as absent).
pub fn load_stats(
    b: &dyn Backend,
    sp: &Space,
    profile_id: &str,
    audiences: &[AudienceDef],
) -> Result<BTreeMap<String, EventStats>, StoreError> {
    let mut out = BTreeMap::new();
    for a in audiences {
        for name in a.predicate.event_names() {
            if out.contains_key(&name) {
                continue;
            }
            if let Some(v) = b.get(sp, &profiles::stats_key(profile_id, &name))? {
                if let Ok(st) = serde_json::from_slice::<EventStats>(&v) {
                    out.insert(name, st);
                }
            }
        }
    }
    Ok(out)
}

/// The membership writes of one batch: row writes as planned, and member-count changes per
/// audience, turned into count writes once at the end.
#[derive(Default)]
struct Pending {
    ops: Vec<BatchOp>,
    deltas: BTreeMap<String, i64>,
}

impl Pending {
    /// Removes one membership row pair and counts it out.
    fn leave(&mut self, id: &str, profile_id: &str) {
        self.ops.push(BatchOp::delete(member_key(id, profile_id)));
        self.ops.push(BatchOp::delete(pmember_key(profile_id, id)));
        *self.deltas.entry(id.to_owned()).or_default() -= 1;
    }

    /// The planned writes followed by the new counts, computed from the stored ones.
    fn finish(self, b: &dyn Backend, sp: &Space) -> Result<Vec<BatchOp>, StoreError> {
        let mut ops = self.ops;
        for (id, delta) in &self.deltas {
            if *delta == 0 {
                continue;
            }
            let current = i64::try_from(count(b, sp, id)?).unwrap_or(i64::MAX);
            let new = current.saturating_add(*delta).max(0);
            ops.push(BatchOp::put_json(count_key(id), &new)?);
        }
        Ok(ops)
    }
}

/// Plans one profile's membership: re-evaluates `audiences` against `facts` (memberships of
/// audiences not in the list carry over), folds in and removes the rows of the profiles
/// `merged_away` into it, and adds the writes to `pending`.
fn plan(
    b: &dyn Backend,
    sp: &Space,
    audiences: &[AudienceDef],
    facts: &ProfileFacts,
    merged_away: &[String],
    now_ms: i64,
    pending: &mut Pending,
) -> Result<Vec<Change>, StoreError> {
    let pid = facts.profile.id.as_str();
    let own: BTreeMap<String, i64> = memberships(b, sp, pid)?.into_iter().collect();
    // Current membership of the (merged) person: the earliest entry of any of its profiles.
    let mut current = own.clone();
    for loser in merged_away.iter().filter(|l| l.as_str() != pid) {
        for (id, since) in memberships(b, sp, loser)? {
            pending.leave(&id, loser);
            current
                .entry(id)
                .and_modify(|s| *s = (*s).min(since))
                .or_insert(since);
        }
    }
    let mut desired = current.clone();
    let mut changes = Vec::new();
    for a in audiences {
        let was = current.contains_key(&a.id);
        let is = a.predicate.eval(facts, now_ms);
        if is != was {
            if is {
                desired.insert(a.id.clone(), now_ms);
            } else {
                desired.remove(&a.id);
            }
            changes.push(Change {
                audience: a.id.clone(),
                name: a.name.clone(),
                entered: is,
            });
        }
    }
    for id in own.keys().filter(|id| !desired.contains_key(*id)) {
        pending.leave(id, pid);
    }
    for (id, since) in &desired {
        let stored = own.get(id);
        if stored == Some(since) {
            continue;
        }
        if stored.is_none() {
            *pending.deltas.entry(id.clone()).or_default() += 1;
        }
        pending
            .ops
            .push(BatchOp::put_json(member_key(id, pid), since)?);
        pending
            .ops
            .push(BatchOp::put_json(pmember_key(pid, id), since)?);
    }
    Ok(changes)
}

/// Re-evaluates one profile's membership of `audiences` at `now_ms`. The current
/// membership is read from `pmember/<profile id>/`; memberships of audiences not in the list
/// are left alone. Returns the writes recording the changes (member and reverse rows, and
/// counts), to apply in the same batch as the profile update, and the changes themselves.
/// Hold the tenant lock; do not combine with another membership call in one batch.
pub fn reevaluate(
    b: &dyn Backend,
    sp: &Space,
    audiences: &[AudienceDef],
    facts: &ProfileFacts,
    now_ms: i64,
) -> Result<(Vec<BatchOp>, Vec<Change>), StoreError> {
    reevaluate_merged(b, sp, audiences, facts, &[], now_ms)
}

/// [`reevaluate`] for a profile that absorbed the profiles `merged_away` in this batch:
/// their membership rows are removed and counted out, and the profile is treated as having
/// been a member of everything any of them was in (since the earliest entry), so a merge
/// alone reports no change for an audience the merged person still qualifies for.
pub fn reevaluate_merged(
    b: &dyn Backend,
    sp: &Space,
    audiences: &[AudienceDef],
    facts: &ProfileFacts,
    merged_away: &[String],
    now_ms: i64,
) -> Result<(Vec<BatchOp>, Vec<Change>), StoreError> {
    if audiences.is_empty() && merged_away.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut pending = Pending::default();
    let changes = plan(b, sp, audiences, facts, merged_away, now_ms, &mut pending)?;
    Ok((pending.finish(b, sp)?, changes))
}

/// The writes that remove all of a profile's memberships and count them out (erasure). Do
/// not use it for merges in the same batch as [`reevaluate`]; use [`reevaluate_merged`].
pub fn erase_ops(
    b: &dyn Backend,
    sp: &Space,
    profile_id: &str,
) -> Result<Vec<BatchOp>, StoreError> {
    let mut pending = Pending::default();
    for (id, _) in memberships(b, sp, profile_id)? {
        pending.leave(&id, profile_id);
    }
    pending.finish(b, sp)
}

/// Evaluates `audiences` against every stored profile (`profile/` prefix) at `now_ms` and
/// applies the membership writes itself, one batch per `SWEEP_PAGE` (128) profiles. Used to
/// backfill a new audience and, periodically, for time-sensitive audiences. Returns the
/// changes per profile id (profiles without changes are left out) so the caller can emit
/// events. A record that does not decode is skipped and logged. Hold the tenant lock.
pub fn sweep(
    b: &dyn Backend,
    sp: &Space,
    audiences: &[AudienceDef],
    now_ms: i64,
) -> Result<Vec<(String, Vec<Change>)>, StoreError> {
    let mut out = Vec::new();
    if audiences.is_empty() {
        return Ok(out);
    }
    let prefix = profiles::profile_key("");
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let rows = match &cursor {
            Some(before) => b.scan_prefix_rev_before(sp, &prefix, before, SWEEP_PAGE)?,
            None => b.scan_prefix_rev(sp, &prefix, SWEEP_PAGE)?,
        };
        let Some((last, _)) = rows.last() else {
            return Ok(out);
        };
        cursor = Some(last.clone());
        let mut pending = Pending::default();
        for (key, value) in &rows {
            let profile = match serde_json::from_slice::<ProfileRecord>(value) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(
                        key = %String::from_utf8_lossy(key),
                        error = %e,
                        "audience sweep skipped a profile record that does not decode"
                    );
                    continue;
                }
            };
            let stats = load_stats(b, sp, &profile.id, audiences)?;
            let lookup = |name: &str| stats.get(name).cloned();
            let facts = ProfileFacts {
                profile: &profile,
                stats: &lookup,
            };
            let changes = plan(b, sp, audiences, &facts, &[], now_ms, &mut pending)?;
            if !changes.is_empty() {
                out.push((profile.id.clone(), changes));
            }
        }
        let ops = pending.finish(b, sp)?;
        if !ops.is_empty() {
            b.apply_batch(sp, &ops)?;
        }
        if rows.len() < SWEEP_PAGE {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::profiles::{ConsentRecord, DAY_MS};

    const NOW: i64 = 1_795_312_800_000;

    struct Env {
        _dir: tempfile::TempDir,
        backend: Arc<dyn Backend>,
        sp: Space,
    }

    impl Env {
        fn new() -> Env {
            let dir = tempfile::tempdir().expect("temp dir");
            let (db, _blobs) = crate::store::open(dir.path()).expect("open store");
            Env {
                _dir: dir,
                backend: db.backend().clone(),
                sp: Space::tenant("t1"),
            }
        }

        fn b(&self) -> &dyn Backend {
            self.backend.as_ref()
        }

        fn audience(&self, id: &str, predicate: Value) -> AudienceDef {
            let p = Predicate::parse(&predicate).expect("valid predicate");
            create(self.b(), &self.sp, id, &format!("Name of {id}"), p, NOW).expect("created")
        }

        fn profile(&self, id: &str, traits: Value) -> ProfileRecord {
            let mut rec = ProfileRecord::new(id.into(), NOW);
            rec.traits = traits.as_object().expect("object").clone();
            self.b()
                .put_json(&self.sp, &profiles::profile_key(id), &rec)
                .expect("stored");
            rec
        }

        fn stats(&self, pid: &str, name: &str, times: &[i64]) {
            let mut st = EventStats::default();
            for t in times {
                st.record(*t);
            }
            self.b()
                .put_json(&self.sp, &profiles::stats_key(pid, name), &st)
                .expect("stored");
        }

        /// Re-evaluates with stored stats and applies the writes.
        fn reevaluate(&self, rec: &ProfileRecord, auds: &[AudienceDef], now: i64) -> Vec<Change> {
            let stats = load_stats(self.b(), &self.sp, &rec.id, auds).expect("stats");
            let lookup = |n: &str| stats.get(n).cloned();
            let facts = ProfileFacts {
                profile: rec,
                stats: &lookup,
            };
            let (ops, changes) =
                reevaluate(self.b(), &self.sp, auds, &facts, now).expect("reevaluated");
            self.b().apply_batch(&self.sp, &ops).expect("applied");
            changes
        }

        fn count(&self, id: &str) -> u64 {
            count(self.b(), &self.sp, id).expect("count")
        }

        fn members(&self, id: &str) -> Vec<String> {
            let (mut ids, next) =
                members_page(self.b(), &self.sp, id, None, MAX_MEMBERS_PAGE).expect("page");
            assert!(next.is_none());
            ids.sort();
            ids
        }

        fn memberships(&self, pid: &str) -> Vec<(String, i64)> {
            memberships(self.b(), &self.sp, pid).expect("memberships")
        }
    }

    fn gold() -> Value {
        json!({"trait": "tier", "op": "eq", "value": "gold"})
    }

    fn entered(id: &str) -> Change {
        Change {
            audience: id.into(),
            name: format!("Name of {id}"),
            entered: true,
        }
    }

    fn exited(id: &str) -> Change {
        Change {
            entered: false,
            ..entered(id)
        }
    }

    #[test]
    fn reevaluate_enters_a_matching_profile_and_counts_it() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        let rec = env.profile("p1", json!({"tier": "gold"}));
        assert_eq!(env.reevaluate(&rec, &auds, NOW + 5), vec![entered("gold")]);
        assert_eq!(env.count("gold"), 1);
        assert_eq!(env.members("gold"), vec!["p1"]);
        assert_eq!(env.memberships("p1"), vec![("gold".to_string(), NOW + 5)]);
    }

    #[test]
    fn reevaluate_without_change_writes_nothing_and_keeps_the_entry_time() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        let rec = env.profile("p1", json!({"tier": "gold"}));
        env.reevaluate(&rec, &auds, NOW);
        let lookup = |_: &str| None;
        let facts = ProfileFacts {
            profile: &rec,
            stats: &lookup,
        };
        let (ops, changes) =
            reevaluate(env.b(), &env.sp, &auds, &facts, NOW + DAY_MS).expect("reevaluated");
        assert!(ops.is_empty(), "{ops:?}");
        assert!(changes.is_empty());
        assert_eq!(env.memberships("p1"), vec![("gold".to_string(), NOW)]);

        let other = env.profile("p2", json!({"tier": "silver"}));
        assert!(env.reevaluate(&other, &auds, NOW).is_empty());
        assert_eq!(env.count("gold"), 1);
    }

    #[test]
    fn reevaluate_exits_when_the_predicate_stops_holding() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        let rec = env.profile("p1", json!({"tier": "gold"}));
        env.reevaluate(&rec, &auds, NOW);
        let rec = env.profile("p1", json!({"tier": "silver"}));
        assert_eq!(env.reevaluate(&rec, &auds, NOW), vec![exited("gold")]);
        assert_eq!(env.count("gold"), 0);
        assert!(env.members("gold").is_empty());
        assert!(env.memberships("p1").is_empty());
    }

    #[test]
    fn reevaluate_leaves_audiences_not_in_the_list_alone() {
        let env = Env::new();
        let gold_aud = env.audience("gold", gold());
        let any = env.audience("any", json!({"trait": "tier", "op": "exists"}));
        let rec = env.profile("p1", json!({"tier": "gold"}));
        env.reevaluate(&rec, &[gold_aud.clone(), any.clone()], NOW);
        let rec = env.profile("p1", json!({"tier": "silver"}));
        assert_eq!(
            env.reevaluate(&rec, std::slice::from_ref(&any), NOW),
            vec![]
        );
        assert_eq!(env.count("gold"), 1, "gold was not re-evaluated");
    }

    #[test]
    fn counts_follow_entries_and_exits_of_several_profiles() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        let mut recs = Vec::new();
        for i in 0..5 {
            let rec = env.profile(&format!("p{i}"), json!({"tier": "gold"}));
            env.reevaluate(&rec, &auds, NOW);
            recs.push(rec);
        }
        assert_eq!(env.count("gold"), 5);
        for rec in &recs[..2] {
            let mut r = rec.clone();
            r.traits.insert("tier".into(), json!("bronze"));
            env.reevaluate(&r, &auds, NOW);
        }
        assert_eq!(env.count("gold"), 3);
        assert_eq!(env.members("gold"), vec!["p2", "p3", "p4"]);
    }

    #[test]
    fn event_window_audience_uses_stats_and_exits_when_the_window_passes() {
        let env = Env::new();
        let auds = vec![env.audience(
            "buyers",
            json!({"event": "Order Completed", "within_days": 30}),
        )];
        let rec = env.profile("p1", json!({}));
        assert!(env.reevaluate(&rec, &auds, NOW).is_empty());
        env.stats("p1", "Order Completed", &[NOW - 3 * DAY_MS]);
        assert_eq!(env.reevaluate(&rec, &auds, NOW), vec![entered("buyers")]);
        assert_eq!(
            env.reevaluate(&rec, &auds, NOW + 40 * DAY_MS),
            vec![exited("buyers")]
        );
    }

    #[test]
    fn facts_read_dotted_traits_and_consent() {
        let mut rec = ProfileRecord::new("p1".into(), NOW);
        rec.traits = json!({"address": {"city": "Hanoi"}, "a.b": 1})
            .as_object()
            .cloned()
            .expect("object");
        rec.consents.push(ConsentRecord {
            channel: "email".into(),
            purpose: "marketing".into(),
            granted: true,
            source: "api".into(),
            at: NOW,
        });
        let lookup = |_: &str| None;
        let facts = ProfileFacts {
            profile: &rec,
            stats: &lookup,
        };
        assert_eq!(facts.trait_value("address.city"), Some(&json!("Hanoi")));
        assert_eq!(facts.trait_value("a.b"), Some(&json!(1)));
        assert_eq!(facts.trait_value("address.zip"), None);
        assert_eq!(facts.consent("email", "marketing"), Some(true));
        assert_eq!(facts.consent("sms", "marketing"), None);
        assert_eq!(facts.event_count("X", i64::MIN), 0);
    }

    #[test]
    fn erase_ops_remove_memberships_and_decrement_counts() {
        let env = Env::new();
        let auds = vec![
            env.audience("gold", gold()),
            env.audience("any", json!({"trait": "tier", "op": "exists"})),
        ];
        let p1 = env.profile("p1", json!({"tier": "gold"}));
        let p2 = env.profile("p2", json!({"tier": "gold"}));
        env.reevaluate(&p1, &auds, NOW);
        env.reevaluate(&p2, &auds, NOW);
        let ops = erase_ops(env.b(), &env.sp, "p1").expect("ops");
        env.b().apply_batch(&env.sp, &ops).expect("applied");
        assert_eq!(env.count("gold"), 1);
        assert_eq!(env.count("any"), 1);
        assert!(env.memberships("p1").is_empty());
        assert_eq!(env.members("gold"), vec!["p2"]);
        assert!(erase_ops(env.b(), &env.sp, "p1").expect("ops").is_empty());
    }

    #[test]
    fn merge_moves_memberships_to_the_winner_without_reporting_changes() {
        let env = Env::new();
        let auds = vec![
            env.audience("gold", gold()),
            env.audience("vn", json!({"trait": "country", "op": "eq", "value": "VN"})),
        ];
        let winner = env.profile("p1", json!({"tier": "gold"}));
        let loser = env.profile("p2", json!({"tier": "gold", "country": "VN"}));
        env.reevaluate(&winner, &auds, NOW + 10);
        env.reevaluate(&loser, &auds, NOW);
        assert_eq!((env.count("gold"), env.count("vn")), (2, 1));

        let merged = env.profile("p1", json!({"tier": "gold", "country": "VN"}));
        let lookup = |_: &str| None;
        let facts = ProfileFacts {
            profile: &merged,
            stats: &lookup,
        };
        let (ops, changes) =
            reevaluate_merged(env.b(), &env.sp, &auds, &facts, &["p2".into()], NOW + 20)
                .expect("reevaluated");
        env.b().apply_batch(&env.sp, &ops).expect("applied");
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!((env.count("gold"), env.count("vn")), (1, 1));
        assert_eq!(
            env.memberships("p1"),
            vec![("gold".to_string(), NOW), ("vn".to_string(), NOW)],
            "the earliest entry is kept"
        );
        assert!(env.memberships("p2").is_empty());
        assert_eq!(env.members("vn"), vec!["p1"]);
    }

    #[test]
    fn merge_reports_an_exit_when_the_merged_profile_no_longer_qualifies() {
        let env = Env::new();
        let auds = vec![env.audience("no-tier", json!({"trait": "tier", "op": "not_exists"}))];
        let loser = env.profile("p2", json!({}));
        env.reevaluate(&loser, &auds, NOW);
        let winner = env.profile("p1", json!({"tier": "gold"}));
        let lookup = |_: &str| None;
        let facts = ProfileFacts {
            profile: &winner,
            stats: &lookup,
        };
        let (ops, changes) =
            reevaluate_merged(env.b(), &env.sp, &auds, &facts, &["p2".into()], NOW)
                .expect("reevaluated");
        env.b().apply_batch(&env.sp, &ops).expect("applied");
        assert_eq!(changes, vec![exited("no-tier")]);
        assert_eq!(env.count("no-tier"), 0);
        assert!(env.memberships("p1").is_empty());
    }

    #[test]
    fn sweep_backfills_every_profile_across_batches() {
        let env = Env::new();
        let total = SWEEP_PAGE * 2 + 7;
        for i in 0..total {
            let tier = if i % 3 == 0 { "gold" } else { "silver" };
            env.profile(&format!("p{i:04}"), json!({"tier": tier}));
        }
        let auds = vec![env.audience("gold", gold())];
        let changes = sweep(env.b(), &env.sp, &auds, NOW).expect("swept");
        let golden = total.div_ceil(3);
        assert_eq!(changes.len(), golden);
        assert!(changes.iter().all(|(_, c)| c == &vec![entered("gold")]));
        assert_eq!(env.count("gold"), golden as u64);
        assert_eq!(env.members("gold").len(), golden);
        assert!(sweep(env.b(), &env.sp, &auds, NOW)
            .expect("swept")
            .is_empty());
    }

    #[test]
    fn sweep_exits_members_whose_window_has_passed() {
        let env = Env::new();
        let auds = vec![env.audience(
            "recent",
            json!({"last_performed": "App Opened", "within_days": 7}),
        )];
        env.profile("p1", json!({}));
        env.profile("p2", json!({}));
        env.stats("p1", "App Opened", &[NOW - DAY_MS]);
        env.stats("p2", "App Opened", &[NOW - 5 * DAY_MS]);
        sweep(env.b(), &env.sp, &auds, NOW).expect("swept");
        assert_eq!(env.count("recent"), 2);
        let changes = sweep(env.b(), &env.sp, &auds, NOW + 4 * DAY_MS).expect("swept");
        assert_eq!(changes, vec![("p2".to_string(), vec![exited("recent")])]);
        assert_eq!(env.count("recent"), 1);
        assert_eq!(env.members("recent"), vec!["p1"]);
    }

    #[test]
    fn delete_removes_definition_members_reverse_rows_and_count() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        for i in 0..3 {
            env.profile(&format!("p{i}"), json!({"tier": "gold"}));
        }
        sweep(env.b(), &env.sp, &auds, NOW).expect("swept");
        assert_eq!(env.count("gold"), 3);
        assert!(delete(env.b(), &env.sp, "gold").expect("deleted"));
        assert!(get(env.b(), &env.sp, "gold").expect("get").is_none());
        assert_eq!(env.count("gold"), 0);
        assert!(env.members("gold").is_empty());
        assert!(env.memberships("p0").is_empty());
        assert!(!delete(env.b(), &env.sp, "gold").expect("deleted"));
        // Recreating starts empty.
        env.audience("gold", gold());
        assert_eq!(env.count("gold"), 0);
    }

    #[test]
    fn create_refuses_bad_ids_names_duplicates_and_more_than_the_maximum() {
        let env = Env::new();
        let p = || Predicate::parse(&gold()).expect("valid");
        let make = |id: &str, name: &str| create(env.b(), &env.sp, id, name, p(), NOW);
        for id in ["", "Gold", "a/b", "a b", &"x".repeat(MAX_ID_BYTES + 1)] {
            assert!(
                matches!(make(id, "n"), Err(AudienceError::InvalidId { .. })),
                "{id:?}"
            );
        }
        assert!(matches!(make("a", " "), Err(AudienceError::InvalidName(_))));
        assert!(matches!(
            make("a", &"n".repeat(MAX_NAME_BYTES + 1)),
            Err(AudienceError::InvalidName(_))
        ));
        make("a", "n").expect("created");
        assert!(matches!(make("a", "n"), Err(AudienceError::Exists(_))));
        for i in 1..MAX_AUDIENCES {
            make(&format!("a{i}"), "n").expect("created");
        }
        assert!(matches!(
            make("one-more", "n"),
            Err(AudienceError::TooMany { max: MAX_AUDIENCES })
        ));
        assert_eq!(
            load_all(env.b(), &env.sp).expect("all").len(),
            MAX_AUDIENCES
        );
    }

    #[test]
    fn create_refuses_an_oversized_definition() {
        let env = Env::new();
        let p = Predicate::parse(
            &json!({"trait": "t", "op": "eq", "value": "x".repeat(MAX_DEF_BYTES)}),
        )
        .expect("valid");
        assert!(matches!(
            create(env.b(), &env.sp, "big", "n", p, NOW),
            Err(AudienceError::TooLarge { .. })
        ));
    }

    #[test]
    fn members_page_pages_through_every_member_once() {
        let env = Env::new();
        let auds = vec![env.audience("gold", gold())];
        for i in 0..7 {
            env.profile(&format!("p{i}"), json!({"tier": "gold"}));
        }
        sweep(env.b(), &env.sp, &auds, NOW).expect("swept");
        let mut seen = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let (ids, next) =
                members_page(env.b(), &env.sp, "gold", before.as_deref(), 3).expect("page");
            assert!(ids.len() <= 3);
            seen.extend(ids);
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, vec!["p6", "p5", "p4", "p3", "p2", "p1", "p0"]);
    }

    #[test]
    fn load_all_skips_a_definition_that_does_not_decode() {
        let env = Env::new();
        env.audience("gold", gold());
        env.b()
            .put(&env.sp, &def_key("broken"), b"{\"id\": 1}")
            .expect("stored");
        let all = load_all(env.b(), &env.sp).expect("all");
        assert_eq!(all.len(), 1);
        assert_eq!(list(env.b(), &env.sp).expect("list")[0].1, 0);
    }
}
