//! Tenants, their API keys and the admin token. Keys are random 128-bit secrets stored only
//! as SHA-256 hashes (a fast hash is right for high-entropy keys; nothing to brute-force).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Db, Space, StoreError};

/// Prefix of tenant secret keys (management API).
pub const SECRET_KEY_PREFIX: &str = "wsk_";
/// Prefix of tenant write keys (ingestion and edge calls).
pub const WRITE_KEY_PREFIX: &str = "wwk_";
/// Prefix of admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "wat_";

const ADMIN_HASH_KEY: &[u8] = b"admin_token_sha256";

/// A stored tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant id (`t_` + 16 hex digits).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, Unix ms.
    pub created_at: i64,
}

/// Which kind of key authenticated a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// The tenant's secret key: management API.
    Secret,
    /// The tenant's public write key: ingestion and edge calls.
    Write,
}

/// A stored key hash record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The tenant the key belongs to.
    pub tenant_id: String,
    /// Which key it is.
    pub kind: KeyKind,
}

/// A new tenant with its plaintext keys (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct NewTenant {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Secret key for the management API.
    pub secret_key: String,
    /// Public write key for ingestion and edge calls.
    pub write_key: String,
}

/// Hex SHA-256 of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Whether `key` looks like a Weft key of the given prefix (so malformed keys get a
/// clearer error than "unknown").
pub fn well_formed(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Creates a tenant and its two keys, durably.
pub async fn create(db: &Db, name: &str, now_ms: i64) -> Result<NewTenant, StoreError> {
    let id = format!("t_{}", random_hex(8));
    let secret_key = format!("{SECRET_KEY_PREFIX}{}", random_hex(16));
    let write_key = format!("{WRITE_KEY_PREFIX}{}", random_hex(16));
    let tenant = Tenant {
        id: id.clone(),
        name: name.to_string(),
        created_at: now_ms,
    };
    db.put_json(&Space::TENANTS, id.as_bytes(), &tenant).await?;
    for (key, kind) in [(&secret_key, KeyKind::Secret), (&write_key, KeyKind::Write)] {
        let rec = KeyRecord {
            tenant_id: id.clone(),
            kind,
        };
        db.put_json(&Space::KEYS, hash_key(key).as_bytes(), &rec)
            .await?;
    }
    db.commit().await?;
    Ok(NewTenant {
        id,
        name: name.to_string(),
        secret_key,
        write_key,
    })
}

/// Looks up the record of an API key.
pub async fn lookup_key(db: &Db, key: &str) -> Result<Option<KeyRecord>, StoreError> {
    db.get_json(&Space::KEYS, hash_key(key).as_bytes()).await
}

/// An in-memory cache of key lookups for hot paths (ingestion, edge calls). Keys are
/// never changed once issued, so entries never go stale; unknown keys are not cached, so
/// guessing cannot grow it.
#[derive(Debug, Default)]
pub struct KeyCache {
    known: std::sync::RwLock<std::collections::HashMap<String, KeyRecord>>,
}

impl KeyCache {
    /// [`lookup_key`], from memory after the first hit.
    pub async fn lookup(&self, db: &Db, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let hash = hash_key(key);
        if let Some(rec) = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
        {
            return Ok(Some(rec.clone()));
        }
        let rec: Option<KeyRecord> = db.get_json(&Space::KEYS, hash.as_bytes()).await?;
        if let Some(r) = &rec {
            self.known
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(hash, r.clone());
        }
        Ok(rec)
    }
}

/// Lists every tenant.
pub async fn list(db: &Db) -> Result<Vec<Tenant>, StoreError> {
    let rows = db.scan_prefix(&Space::TENANTS, b"", usize::MAX).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// How the admin token was set up at start.
#[derive(Debug, Clone)]
pub enum AdminToken {
    /// Taken from configuration (`WEFT_ADMIN_TOKEN`); its hash is stored.
    Configured,
    /// Generated on first start; the plaintext is shown once.
    Generated(String),
    /// Already stored from an earlier start.
    Existing,
}

/// Ensures an admin token hash is stored: from `configured`, or generated on first start.
pub async fn ensure_admin_token(
    db: &Db,
    configured: Option<&str>,
) -> Result<AdminToken, StoreError> {
    if let Some(tok) = configured {
        db.put(&Space::META, ADMIN_HASH_KEY, hash_key(tok).as_bytes())
            .await?;
        db.commit().await?;
        return Ok(AdminToken::Configured);
    }
    if db.get(&Space::META, ADMIN_HASH_KEY).await?.is_some() {
        return Ok(AdminToken::Existing);
    }
    let tok = format!("{ADMIN_TOKEN_PREFIX}{}", random_hex(16));
    db.put(&Space::META, ADMIN_HASH_KEY, hash_key(&tok).as_bytes())
        .await?;
    db.commit().await?;
    Ok(AdminToken::Generated(tok))
}

/// Whether `token` is the admin token (constant-time comparison of the hashes).
pub async fn check_admin(db: &Db, token: &str) -> Result<bool, StoreError> {
    use subtle::ConstantTimeEq;
    let Some(stored) = db.get(&Space::META, ADMIN_HASH_KEY).await? else {
        return Ok(false);
    };
    let given = hash_key(token);
    Ok(stored.len() == given.len() && bool::from(stored.ct_eq(given.as_bytes())))
}
