//! `messageId` deduplication markers, kept for a bounded time.
//!
//! A marker is written for every accepted message; kept forever they would grow the store
//! by one key per event for as long as the tenant sends events. Markers are therefore
//! grouped in buckets of [`WINDOW_MS`] by when they were written,
//! `dd/<bucket:016x>/<messageId>` → the queue sequence number. A message is a duplicate
//! when its id is in the current or the previous bucket, so a retry is recognised for at
//! least one window and at most two; [`expire`] deletes every older bucket.
//!
//! Stores written before buckets existed hold `msg/<messageId>` markers. [`expire`] moves
//! them into the current bucket, and until every tenant's are moved [`guards`] also checks
//! that key, so no duplicate slips through during an upgrade.

use crate::store::{Backend, BatchOp, Space, StoreError};

/// How long a `messageId` is remembered, at least: one day. SDKs retry a failed upload
/// within minutes to hours (and a queue kept offline is sent once, when back online), so a
/// day covers their retries; markers then cost at most two days of keys.
pub const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Prefix of bucketed markers.
pub const PREFIX: &[u8] = b"dd/";
/// Prefix of markers written before buckets existed.
pub const LEGACY_PREFIX: &[u8] = b"msg/";

/// Keys deleted or moved per batch by [`expire`]: bounds a batch's size and the time it
/// holds sled's write lock.
const CHUNK: usize = 512;

/// The bucket of time `at_ms`.
pub fn bucket(at_ms: i64) -> i64 {
    at_ms.div_euclid(WINDOW_MS)
}

/// The marker key of `message_id` in `bucket`.
pub fn key(bucket: i64, message_id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 17 + message_id.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(format!("{:016x}/", bucket.max(0)).as_bytes());
    k.extend_from_slice(message_id);
    k
}

/// The bucket a marker key is in, if it is one.
fn bucket_of(key: &[u8]) -> Option<i64> {
    let hex = key.strip_prefix(PREFIX)?.get(..16)?;
    i64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// The keys that decide whether `message_id` arriving at `now_ms` is new: the marker to
/// write (in the current bucket), and the other keys whose presence makes it a duplicate
/// (the previous bucket's marker, and the pre-bucket marker while `legacy` ones may exist).
pub fn guards(message_id: &str, now_ms: i64, legacy: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let current = bucket(now_ms);
    let id = message_id.as_bytes();
    let mut others = vec![key(current - 1, id)];
    if legacy {
        let mut k = LEGACY_PREFIX.to_vec();
        k.extend_from_slice(id);
        others.push(k);
    }
    (key(current, id), others)
}

/// What one [`expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Markers deleted because their bucket is older than the previous one.
    pub deleted: usize,
    /// Pre-bucket markers moved into the current bucket.
    pub moved: usize,
}

/// Deletes the markers of `space` older than the previous bucket, and moves pre-bucket
/// markers into the current bucket. Blocking: call it off the async runtime.
pub fn expire(b: &dyn Backend, space: &Space, now_ms: i64) -> Result<Expired, StoreError> {
    let current = bucket(now_ms);
    let mut done = Expired::default();
    loop {
        // Keys sort by bucket, oldest first: the expired ones are a run at the start.
        let rows = b.scan_prefix(space, PREFIX, CHUNK)?;
        let old: Vec<BatchOp> = rows
            .iter()
            .take_while(|(k, _)| bucket_of(k).is_none_or(|bk| bk < current - 1))
            .map(|(k, _)| BatchOp::delete(k.clone()))
            .collect();
        if !old.is_empty() {
            b.apply_batch(space, &old)?;
            done.deleted += old.len();
        }
        if old.len() < CHUNK {
            break;
        }
    }
    loop {
        let rows = b.scan_prefix(space, LEGACY_PREFIX, CHUNK)?;
        if rows.is_empty() {
            break;
        }
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for (k, v) in &rows {
            ops.push(BatchOp::put(
                key(current, &k[LEGACY_PREFIX.len()..]),
                v.clone(),
            ));
            ops.push(BatchOp::delete(k.clone()));
        }
        b.apply_batch(space, &ops)?;
        done.moved += rows.len();
        if rows.len() < CHUNK {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    const DAY: i64 = WINDOW_MS;
    const T0: i64 = 20_000 * DAY + 3_600_000;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, _) = crate::store::open(dir.path()).expect("open");
        (dir, db)
    }

    fn keys(db: &Db, sp: &Space, prefix: &[u8]) -> Vec<Vec<u8>> {
        let b = db.backend();
        b.scan_prefix(sp, prefix, 10_000)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_marker_guards_its_own_and_the_next_bucket() {
        let (written, _) = guards("m-1", T0, false);
        // A day later, in the next bucket: the first marker is one of the guards.
        let (_, later) = guards("m-1", T0 + DAY, false);
        assert!(later.contains(&written));
        // Two days later it is not.
        let (now, much_later) = guards("m-1", T0 + 2 * DAY, false);
        assert!(!much_later.contains(&written) && now != written);
        // Pre-bucket markers are checked only while they may exist.
        let (_, with_legacy) = guards("m-1", T0, true);
        assert!(with_legacy.contains(&b"msg/m-1".to_vec()));
    }

    #[test]
    fn expire_keeps_the_current_and_previous_buckets_and_deletes_older_ones() {
        let (_dir, db) = db();
        let sp = Space::tenant("t1");
        let b = db.backend();
        // 1,100 markers in the oldest bucket (more than one chunk), some in each later one.
        let mut ops: Vec<BatchOp> = (0..1_100)
            .map(|i| BatchOp::put(key(bucket(T0), format!("old-{i}").as_bytes()), vec![1]))
            .collect();
        for d in 1..=3 {
            ops.push(BatchOp::put(
                key(bucket(T0 + d * DAY), format!("day-{d}").as_bytes()),
                vec![1],
            ));
        }
        b.apply_batch(&sp, &ops).expect("write");

        let done = expire(b.as_ref(), &sp, T0 + 3 * DAY).expect("expire");
        assert_eq!(done.deleted, 1_101, "the oldest bucket and day 1 are gone");
        let left = keys(&db, &sp, PREFIX);
        assert_eq!(
            left,
            vec![
                key(bucket(T0 + 2 * DAY), b"day-2"),
                key(bucket(T0 + 3 * DAY), b"day-3")
            ]
        );
        // Nothing more to do.
        assert_eq!(
            expire(b.as_ref(), &sp, T0 + 3 * DAY).expect("expire"),
            Expired::default()
        );
    }

    #[test]
    fn expire_moves_pre_bucket_markers_into_the_current_bucket() {
        let (_dir, db) = db();
        let sp = Space::tenant("t1");
        let b = db.backend();
        let ops: Vec<BatchOp> = (0..600u64)
            .map(|i| {
                BatchOp::put(
                    format!("msg/old-{i}").into_bytes(),
                    i.to_be_bytes().to_vec(),
                )
            })
            .collect();
        b.apply_batch(&sp, &ops).expect("write");

        let done = expire(b.as_ref(), &sp, T0).expect("expire");
        assert_eq!(done.moved, 600);
        assert!(keys(&db, &sp, LEGACY_PREFIX).is_empty());
        assert_eq!(keys(&db, &sp, PREFIX).len(), 600);
        let moved = b
            .get(&sp, &key(bucket(T0), b"old-7"))
            .expect("get")
            .expect("moved with its value");
        assert_eq!(moved, 7u64.to_be_bytes().to_vec());
    }
}
