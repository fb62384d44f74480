//! Customer profiles, stored in the owning tenant's space only.
//!
//! Keys inside a tenant's space:
//! - `profile/<id>`: the [`ProfileRecord`] as JSON;
//! - `ident/<kind>\0<value>`: the id of the profile owning that identity;
//! - `event/<id>/<timestamp:020>/<seq:016x>`: one stored event, for history;
//! - `stats/<id>/<event name>`: [`EventStats`] of one event name (computed traits);
//! - `mergelog/<id>/<at:020>/<seq:016x>`: profiles merged into this one;
//! - `merged/<old id>`: the id a merged-away profile now lives under.
//!
//! Identity resolution and merges are in [`crate::ingest::processor`]; this module holds
//! the records and their keys, and gives capabilities and the API a tenant-scoped read path.

use serde::{Deserialize, Serialize};

use crate::runtime::bindings::types;
use crate::store::{Backend, Space, StoreError};

/// One identity of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Namespace, for example `user_id` or `phone`.
    pub kind: String,
    /// Identifier within the namespace.
    pub value: String,
}

/// A stored profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Stable id within the tenant.
    pub id: String,
    /// Identities merged into the profile.
    pub identities: Vec<IdentityRecord>,
    /// Traits (JSON object).
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// IANA time zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// Creation time, Unix ms.
    pub created_at: i64,
    /// Last update, Unix ms.
    pub updated_at: i64,
    /// Computed traits kept as events arrive.
    #[serde(default)]
    pub computed: Computed,
    /// Consent decisions per channel and purpose (the consent ledger's current state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<ConsentRecord>,
}

/// One consent decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Channel, for example `email`, `sms`, `zalo-oa`, or `*` for every channel.
    pub channel: String,
    /// Purpose, for example `marketing` or `transactional`.
    pub purpose: String,
    /// Granted (true) or withdrawn (false).
    pub granted: bool,
    /// Where it came from (`identify`, `api`, `sms-stop`, …).
    pub source: String,
    /// When, Unix ms.
    pub at: i64,
}

impl ProfileRecord {
    /// The consent state for (channel, purpose): an exact channel entry wins over `*`.
    pub fn consent(&self, channel: &str, purpose: &str) -> Option<bool> {
        let find = |ch: &str| {
            self.consents
                .iter()
                .find(|c| c.channel == ch && c.purpose == purpose)
                .map(|c| c.granted)
        };
        find(channel).or_else(|| find("*"))
    }
}

impl ProfileRecord {
    /// An empty profile.
    pub fn new(id: String, now_ms: i64) -> ProfileRecord {
        ProfileRecord {
            id,
            identities: Vec::new(),
            traits: serde_json::Map::new(),
            timezone: None,
            locale: None,
            created_at: now_ms,
            updated_at: now_ms,
            computed: Computed::default(),
            consents: Vec::new(),
        }
    }
}

/// Largest stored profile record: well under the store's value limit.
pub const MAX_PROFILE_BYTES: usize = 48 * 1024;

/// Profile-wide computed traits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Computed {
    /// Time of the earliest event, Unix ms.
    pub first_seen: Option<i64>,
    /// Time of the latest event, Unix ms.
    pub last_seen: Option<i64>,
    /// Sum of `Order Completed` revenue (or total).
    pub lifetime_revenue: f64,
    /// Number of `Order Completed` events.
    pub orders: u64,
}

impl Computed {
    /// Notes an event at `ts`.
    pub fn seen(&mut self, ts: i64) {
        self.first_seen = Some(self.first_seen.map_or(ts, |f| f.min(ts)));
        self.last_seen = Some(self.last_seen.map_or(ts, |l| l.max(ts)));
    }

    /// Adds another profile's figures (a merge).
    pub fn merge(&mut self, other: &Computed) {
        if let Some(f) = other.first_seen {
            self.seen(f);
        }
        if let Some(l) = other.last_seen {
            self.seen(l);
        }
        self.lifetime_revenue += other.lifetime_revenue;
        self.orders += other.orders;
    }
}

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Days of per-day counts kept per event name: windows up to a year, plus slack.
pub const STATS_DAYS: i64 = 400;

/// Counts of one event name on one profile: all time, first and last, and per UTC day for
/// the last [`STATS_DAYS`] days (windowed counts are in whole days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventStats {
    /// Events ever.
    pub total: u64,
    /// Earliest, Unix ms.
    pub first: Option<i64>,
    /// Latest, Unix ms.
    pub last: Option<i64>,
    /// Day number (Unix ms / day) → count.
    pub days: std::collections::BTreeMap<i64, u32>,
}

impl EventStats {
    /// Notes one event at `ts`.
    pub fn record(&mut self, ts: i64) {
        self.total += 1;
        self.first = Some(self.first.map_or(ts, |f| f.min(ts)));
        self.last = Some(self.last.map_or(ts, |l| l.max(ts)));
        *self.days.entry(ts.div_euclid(DAY_MS)).or_default() += 1;
        self.prune();
    }

    /// Adds another profile's counts (a merge).
    pub fn merge(&mut self, other: &EventStats) {
        self.total += other.total;
        for t in [other.first, other.last].into_iter().flatten() {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        for (d, n) in &other.days {
            *self.days.entry(*d).or_default() += n;
        }
        self.prune();
    }

    fn prune(&mut self) {
        if let Some(newest) = self.days.keys().next_back().copied() {
            self.days = self.days.split_off(&(newest - STATS_DAYS));
        }
    }

    /// Events on days from `since_ms`'s day onwards.
    pub fn count_since(&self, since_ms: i64) -> u64 {
        if since_ms == i64::MIN {
            return self.total;
        }
        self.days
            .range(since_ms.div_euclid(DAY_MS)..)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

/// Key of a profile record.
pub fn profile_key(id: &str) -> Vec<u8> {
    format!("profile/{id}").into_bytes()
}

/// Key prefix of a profile's event stats.
pub fn stats_prefix(id: &str) -> Vec<u8> {
    format!("stats/{id}/").into_bytes()
}

/// Key of a profile's stats for one event name.
pub fn stats_key(id: &str, name: &str) -> Vec<u8> {
    let mut k = stats_prefix(id);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of one event in a profile's history (sorted by event time, then arrival).
pub fn event_key(id: &str, timestamp: i64, seq: u64) -> Vec<u8> {
    format!("event/{id}/{:020}/{seq:016x}", timestamp.max(0)).into_bytes()
}

/// Key prefix of a profile's history.
pub fn event_prefix(id: &str) -> Vec<u8> {
    format!("event/{id}/").into_bytes()
}

/// Key of an identity's owner link.
pub fn ident_key(kind: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(7 + kind.len() + value.len());
    k.extend_from_slice(b"ident/");
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k
}

/// Errors of the profile module.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record could not be decoded.
    #[error("stored profile record is corrupt")]
    Corrupt(#[source] serde_json::Error),
}

impl From<ProfileError> for StoreError {
    /// A corrupt record is a codec error to storage callers.
    fn from(e: ProfileError) -> StoreError {
        match e {
            ProfileError::Store(s) => s,
            ProfileError::Corrupt(c) => StoreError::Codec(c),
        }
    }
}

/// Loads a profile by id.
pub fn get(b: &dyn Backend, sp: &Space, id: &str) -> Result<Option<ProfileRecord>, ProfileError> {
    match b.get(sp, &profile_key(id))? {
        Some(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(ProfileError::Corrupt)?,
        )),
        None => Ok(None),
    }
}

/// Most `merged/` redirects followed to find a merged-away profile's current id: merges
/// chain only as often as one person's profiles are merged again.
const MAX_REDIRECTS: usize = 16;

/// The current id of profile `id`: itself, or the profile it was merged into (following
/// `merged/` redirects).
pub fn current_id(b: &dyn Backend, sp: &Space, id: &str) -> Result<String, StoreError> {
    let mut pid = id.to_string();
    for _ in 0..MAX_REDIRECTS {
        match b.get(sp, format!("merged/{pid}").as_bytes())? {
            Some(next) => pid = String::from_utf8_lossy(&next).into_owned(),
            None => break,
        }
    }
    Ok(pid)
}

/// Profile `id`, or the profile it was merged into (following `merged/` redirects);
/// `None` once erased.
pub fn get_current(
    b: &dyn Backend,
    sp: &Space,
    id: &str,
) -> Result<Option<ProfileRecord>, ProfileError> {
    get(b, sp, &current_id(b, sp, id)?)
}

/// The id of the profile owning an identity.
pub fn owner(
    b: &dyn Backend,
    sp: &Space,
    kind: &str,
    value: &str,
) -> Result<Option<String>, ProfileError> {
    Ok(b.get(sp, &ident_key(kind, value))?
        .map(|id| String::from_utf8_lossy(&id).into_owned()))
}

/// Writes that move a merged-away profile's history and merge log to `winner`, delete its
/// record and leave a redirect. Its stats are merged by the caller.
pub fn move_data_ops(
    b: &dyn Backend,
    sp: &Space,
    loser: &str,
    winner: &str,
) -> Result<Vec<crate::store::BatchOp>, ProfileError> {
    use crate::store::BatchOp;
    let mut ops = Vec::new();
    // History, merge log, the conversation index (`cvp/`), and the profile's deliveries
    // and marketing-cap counters (`outp/`, `mkt/`): the winner's 360 view and caps count
    // them, and erasing the winner erases them. Journey instances move by their own work
    // items (`journeys::engine::rehome_ops`).
    for family in ["event", "mergelog", "cvp", "outp", "mkt"] {
        let from = format!("{family}/{loser}/");
        for (k, v) in b.scan_prefix(sp, from.as_bytes(), usize::MAX)? {
            let mut to = format!("{family}/{winner}/").into_bytes();
            to.extend_from_slice(&k[from.len()..]);
            ops.push(BatchOp::put(to, v));
            ops.push(BatchOp::delete(k));
        }
    }
    ops.push(BatchOp::delete(profile_key(loser)));
    ops.push(BatchOp::put(
        format!("merged/{loser}").into_bytes(),
        winner.as_bytes().to_vec(),
    ));
    Ok(ops)
}

/// Loads the profile that owns an identity.
pub fn get_by_identity(
    b: &dyn Backend,
    sp: &Space,
    kind: &str,
    value: &str,
) -> Result<Option<ProfileRecord>, ProfileError> {
    match b.get(sp, &ident_key(kind, value))? {
        Some(id) => get(b, sp, &String::from_utf8_lossy(&id)),
        None => Ok(None),
    }
}

/// Creates or updates the profile owning any of `identities`, merging `traits` as identify
/// does (a `null` deletes a trait). Returns the stored record.
pub fn upsert(
    b: &dyn Backend,
    sp: &Space,
    identities: &[IdentityRecord],
    traits: &serde_json::Map<String, serde_json::Value>,
    now_ms: i64,
) -> Result<ProfileRecord, ProfileError> {
    let mut existing = None;
    for i in identities {
        if let Some(p) = get_by_identity(b, sp, &i.kind, &i.value)? {
            existing = Some(p);
            break;
        }
    }
    let mut rec = existing.unwrap_or_else(|| ProfileRecord::new(new_id(), now_ms));
    for i in identities {
        if !rec.identities.contains(i) {
            rec.identities.push(i.clone());
        }
    }
    for (k, v) in traits {
        if v.is_null() {
            rec.traits.remove(k);
        } else {
            rec.traits.insert(k.clone(), v.clone());
        }
    }
    if let Some(tz) = rec.traits.get("timezone").and_then(|v| v.as_str()) {
        rec.timezone = Some(tz.to_string());
    }
    rec.updated_at = now_ms;
    let bytes = serde_json::to_vec(&rec).map_err(ProfileError::Corrupt)?;
    let mut ops = vec![crate::store::BatchOp::put(profile_key(&rec.id), bytes)];
    for i in &rec.identities {
        ops.push(crate::store::BatchOp::put(
            ident_key(&i.kind, &i.value),
            rec.id.as_bytes().to_vec(),
        ));
    }
    b.apply_batch(sp, &ops)?;
    Ok(rec)
}

/// A new random profile id.
pub fn new_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("p_{n:032x}")
}

/// The WIT view of a stored profile.
pub fn to_wit(rec: &ProfileRecord) -> types::Profile {
    types::Profile {
        profile_id: rec.id.clone(),
        identities: rec
            .identities
            .iter()
            .map(|i| types::Identity {
                kind: i.kind.clone(),
                value: i.value.clone(),
            })
            .collect(),
        traits: serde_json::Value::Object(rec.traits.clone()).to_string(),
        audiences: Vec::new(),
        timezone: rec.timezone.clone(),
        locale: rec.locale.clone(),
        consents: wit_consents(rec),
    }
}

/// The consent ledger as the WIT contract shows it: one entry per channel, `*` expanded.
fn wit_consents(rec: &ProfileRecord) -> Vec<types::Consent> {
    use types::ChannelKind as C;
    const ALL: [C; 9] = [
        C::ZaloOa,
        C::ZaloZns,
        C::Messenger,
        C::Whatsapp,
        C::Sms,
        C::Email,
        C::Push,
        C::WebChat,
        C::Webhook,
    ];
    let mut out = Vec::new();
    for kind in ALL {
        let name = crate::messaging::policy::channel_name(kind);
        let mut purposes: Vec<&str> = rec.consents.iter().map(|c| c.purpose.as_str()).collect();
        purposes.sort_unstable();
        purposes.dedup();
        for purpose in purposes {
            let exact = rec
                .consents
                .iter()
                .find(|c| c.channel == name && c.purpose == purpose);
            let any = rec
                .consents
                .iter()
                .find(|c| c.channel == "*" && c.purpose == purpose);
            if let Some(c) = exact.or(any) {
                out.push(types::Consent {
                    channel: kind,
                    purpose: purpose.to_string(),
                    state: if c.granted {
                        types::ConsentState::OptedIn
                    } else {
                        types::ConsentState::OptedOut
                    },
                    updated_at: c.at,
                });
            }
        }
    }
    out
}

/// Erases the profile owning an identity: the record, its identity links and its events.
/// Returns whether a profile was found.
pub fn erase_by_identity(
    b: &dyn Backend,
    sp: &Space,
    kind: &str,
    value: &str,
) -> Result<bool, ProfileError> {
    let Some(rec) = get_by_identity(b, sp, kind, value)? else {
        return Ok(false);
    };
    let mut ops = vec![crate::store::BatchOp::delete(profile_key(&rec.id))];
    for i in &rec.identities {
        ops.push(crate::store::BatchOp::delete(ident_key(&i.kind, &i.value)));
        // What the customer wrote on a channel, and its care window.
        ops.push(crate::store::BatchOp::delete(
            crate::delivery::last_inbound_key(&i.kind, &i.value),
        ));
        for (k, _) in b.scan_prefix(
            sp,
            format!("conv/{}:{}/", i.kind, i.value).as_bytes(),
            usize::MAX,
        )? {
            ops.push(crate::store::BatchOp::delete(k));
        }
    }
    ops.extend(crate::audience::engine::erase_ops(b, sp, &rec.id)?);
    // Conversations: messages, page context, surveys' links.
    ops.extend(crate::conversations::store::erase_ops(b, sp, &rec.id)?);
    // History, counts, merges, journey links and waits, deliveries and cap counters.
    for family in ["event", "stats", "mergelog", "jact", "jwait", "mkt"] {
        let prefix = format!("{family}/{}/", rec.id);
        for (k, _) in b.scan_prefix(sp, prefix.as_bytes(), usize::MAX)? {
            ops.push(crate::store::BatchOp::delete(k));
        }
    }
    let outp = format!("outp/{}/", rec.id);
    let mut adapters = std::collections::BTreeSet::new();
    for (k, _) in b.scan_prefix(sp, outp.as_bytes(), usize::MAX)? {
        if let Some((_, intent)) = String::from_utf8_lossy(&k[outp.len()..]).split_once('/') {
            // The provider-id index of a sent message points at the record.
            if let Some(d) = crate::delivery::log::get(b, sp, intent)? {
                if let (Some(p), Some(id)) =
                    (&d.delivery.installation, &d.delivery.provider_message_id)
                {
                    ops.push(crate::store::BatchOp::delete(
                        crate::delivery::log::provider_key(p, id),
                    ));
                }
                if let Some(p) = d.delivery.installation {
                    adapters.insert(p);
                }
            }
            ops.push(crate::store::BatchOp::delete(
                format!("outbox/{intent}").into_bytes(),
            ));
        }
        ops.push(crate::store::BatchOp::delete(k));
    }
    // The per-recipient delivery index of every adapter that sent to the profile.
    for p in &adapters {
        for i in &rec.identities {
            let prefix = crate::delivery::log::recipient_prefix(p, &i.kind, &i.value);
            for (k, _) in b.scan_prefix(sp, prefix.as_bytes(), usize::MAX)? {
                ops.push(crate::store::BatchOp::delete(k));
            }
        }
    }
    // Journey instances hold the profile id and context.
    let jall = format!("jall/{}/", rec.id);
    for (k, entry_index) in b.scan_prefix(sp, jall.as_bytes(), usize::MAX)? {
        let iid = String::from_utf8_lossy(&k[jall.len()..]).into_owned();
        ops.push(crate::store::BatchOp::delete(
            format!("ji/{iid}").into_bytes(),
        ));
        if !entry_index.is_empty() {
            ops.push(crate::store::BatchOp::delete(entry_index));
        }
        ops.push(crate::store::BatchOp::delete(k));
    }
    b.apply_batch(sp, &ops)?;
    Ok(true)
}

/// Events shown in a profile's 360 view.
pub const RECENT_EVENTS: usize = 20;
/// Largest page of `/events`.
pub const MAX_EVENTS_PAGE: usize = 200;

/// One page of a profile's history, newest first.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    /// The events (as ingested, normalised), passed through as stored.
    pub events: Vec<Box<serde_json::value::RawValue>>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A page of `id`'s history, newest first, strictly older than the `before` cursor.
pub fn events_page(
    b: &dyn Backend,
    sp: &Space,
    id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<EventsPage, ProfileError> {
    let prefix = event_prefix(id);
    let limit = limit.clamp(1, MAX_EVENTS_PAGE);
    // One extra row tells whether another page follows.
    let rows = match before {
        Some(c) => {
            let mut end = prefix.clone();
            end.extend_from_slice(c.as_bytes());
            b.scan_prefix_rev_before(sp, &prefix, &end, limit + 1)?
        }
        None => b.scan_prefix_rev(sp, &prefix, limit + 1)?,
    };
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(limit);
    let mut next = None;
    for (k, v) in rows.into_iter().take(limit) {
        next = Some(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        events.push(raw_json(v)?);
    }
    Ok(EventsPage {
        events,
        next: if more { next } else { None },
    })
}

/// Windowed counts of one event name, as shown in the 360 view.
#[derive(Debug, Serialize)]
pub struct EventSummary {
    /// Events ever.
    pub total: u64,
    /// In the last 7 days (whole days).
    pub last_7_days: u64,
    /// In the last 30 days (whole days).
    pub last_30_days: u64,
    /// Earliest, Unix ms.
    pub first: Option<i64>,
    /// Latest, Unix ms.
    pub last: Option<i64>,
}

/// Every event name's stats of a profile.
pub fn event_stats(
    b: &dyn Backend,
    sp: &Space,
    id: &str,
) -> Result<std::collections::BTreeMap<String, EventStats>, ProfileError> {
    let prefix = stats_prefix(id);
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in b.scan_prefix(sp, &prefix, usize::MAX)? {
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        out.insert(
            name,
            serde_json::from_slice(&v).map_err(ProfileError::Corrupt)?,
        );
    }
    Ok(out)
}

/// The 360 view of a profile: what `GET /v1/profiles/{id}` answers. Stored JSON (events,
/// merges) is passed through as stored rather than parsed into values and written again.
/// Fields in alphabetical order, the order the view has always had.
#[derive(Debug, Serialize)]
pub struct ProfileView {
    /// Audiences the profile is in, with when it entered.
    pub audiences: Vec<Membership>,
    /// Inbound messages on the profile's conversations, newest first.
    pub conversations: Vec<serde_json::Value>,
    /// The profile's latest send intents, newest first.
    pub deliveries: Vec<crate::messaging::outbox::OutboxRecord>,
    /// Windowed counts per event name.
    pub events: std::collections::BTreeMap<String, EventSummary>,
    /// The profile's journey instances, newest first.
    pub journeys: Vec<crate::journeys::Instance>,
    /// The merge log, newest first.
    pub merges: Vec<Box<serde_json::value::RawValue>>,
    /// The profile record: traits, identities, computed traits.
    pub profile: ProfileRecord,
    /// The latest [`RECENT_EVENTS`] events, newest first.
    pub recent_events: Vec<Box<serde_json::value::RawValue>>,
}

/// One audience a profile is in.
#[derive(Debug, Serialize)]
pub struct Membership {
    /// Audience id.
    pub id: String,
    /// Entered at, Unix ms.
    pub since: i64,
}

/// The 360 view of a profile at `now_ms`: record, computed traits and event counts, recent
/// events, merges and audiences. Journeys, deliveries and conversations are left empty for
/// their modules to fill in.
pub fn view(
    b: &dyn Backend,
    sp: &Space,
    rec: ProfileRecord,
    now_ms: i64,
) -> Result<ProfileView, ProfileError> {
    let events = event_stats(b, sp, &rec.id)?
        .into_iter()
        .map(|(name, st)| {
            let summary = EventSummary {
                total: st.total,
                last_7_days: st.count_since(now_ms - 6 * DAY_MS),
                last_30_days: st.count_since(now_ms - 29 * DAY_MS),
                first: st.first,
                last: st.last,
            };
            (name, summary)
        })
        .collect();
    let recent = events_page(b, sp, &rec.id, None, RECENT_EVENTS)?;
    let mut merges = Vec::new();
    for (_, v) in b.scan_prefix_rev(sp, format!("mergelog/{}/", rec.id).as_bytes(), 50)? {
        merges.push(raw_json(v)?);
    }
    let audiences = crate::audience::engine::memberships(b, sp, &rec.id)?
        .into_iter()
        .map(|(id, since)| Membership { id, since })
        .collect();
    Ok(ProfileView {
        audiences,
        conversations: Vec::new(),
        deliveries: Vec::new(),
        events,
        journeys: Vec::new(),
        merges,
        profile: rec,
        recent_events: recent.events,
    })
}

/// Stored JSON bytes as a raw JSON value (checked, not parsed into a tree).
fn raw_json(v: Vec<u8>) -> Result<Box<serde_json::value::RawValue>, ProfileError> {
    let text = String::from_utf8(v)
        .map_err(|e| ProfileError::Corrupt(<serde_json::Error as serde::de::Error>::custom(e)))?;
    serde_json::value::RawValue::from_string(text).map_err(ProfileError::Corrupt)
}
