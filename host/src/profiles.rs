//! Customer profiles, stored in the owning tenant's space only.
//!
//! Keys inside a tenant's space:
//! - `profile/<id>`: the [`ProfileRecord`] as JSON;
//! - `ident/<kind>\0<value>`: the id of the profile owning that identity;
//! - `event/<id>/<timestamp:020>/<message-id>`: one stored event, for history.
//!
//! The journeys issue extends this with full identity resolution and merges; this module
//! already gives capabilities and the API a tenant-scoped read path.

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
}

fn profile_key(id: &str) -> Vec<u8> {
    format!("profile/{id}").into_bytes()
}

fn ident_key(kind: &str, value: &str) -> Vec<u8> {
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

/// Loads a profile by id.
pub fn get(b: &dyn Backend, sp: &Space, id: &str) -> Result<Option<ProfileRecord>, ProfileError> {
    match b.get(sp, &profile_key(id))? {
        Some(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(ProfileError::Corrupt)?,
        )),
        None => Ok(None),
    }
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
    let mut rec = existing.unwrap_or_else(|| ProfileRecord {
        id: new_id(),
        identities: Vec::new(),
        traits: serde_json::Map::new(),
        timezone: None,
        locale: None,
        created_at: now_ms,
        updated_at: now_ms,
    });
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

fn new_id() -> String {
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
        consents: Vec::new(),
    }
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
    }
    for (k, _) in b.scan_prefix(sp, format!("event/{}/", rec.id).as_bytes(), usize::MAX)? {
        ops.push(crate::store::BatchOp::delete(k));
    }
    b.apply_batch(sp, &ops)?;
    Ok(true)
}
