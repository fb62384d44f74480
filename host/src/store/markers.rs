//! Guard markers kept for a bounded time: `messageId` deduplication and fired timers.
//!
//! A marker guards against doing something twice (storing a retried event, firing a timer
//! again after a crash). Kept forever, markers would grow the store by one key per event
//! for as long as a tenant sends events. Each set of markers is therefore grouped in
//! buckets of its window by when a marker was written, `<prefix><bucket:016x>/<id>`. An id
//! is taken when its marker is in the current or the previous bucket, so a marker guards
//! for at least one window and at most two; [`expire`] deletes every older bucket.
//!
//! Stores written before buckets existed hold `<legacy prefix><id>` markers. [`expire`]
//! moves them into the current bucket; until then [`Markers::guards`] also checks that key
//! when asked to, so nothing slips through during an upgrade.

use super::{Backend, BatchOp, Space, StoreError};

/// One day, in ms.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// One set of bucketed markers in a tenant's space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Markers {
    /// Prefix of the bucketed markers.
    pub prefix: &'static [u8],
    /// Prefix of the same markers written before buckets existed.
    pub legacy: &'static [u8],
    /// How long a marker guards, at least (and at most twice as long).
    pub window_ms: i64,
}

/// `messageId` dedup of ingested events: `dd/<bucket>/<messageId>` → the queue sequence
/// number. A day: SDKs retry a failed upload within minutes to hours (and a queue kept
/// offline is sent once, when back online), so a day covers their retries.
pub const MESSAGE_IDS: Markers = Markers {
    prefix: b"dd/",
    legacy: b"msg/",
    window_ms: DAY_MS,
};

/// Fired journey timers: `fd/<bucket>/<token>`, so that a crash between turning a timer
/// into work and deleting it cannot fire it twice. The delete follows within
/// milliseconds; a day is a wide margin for a restart in between.
pub const FIRED_TIMERS: Markers = Markers {
    prefix: b"fd/",
    legacy: b"fired/",
    window_ms: DAY_MS,
};

/// Every set of markers a tenant's space holds, for [`expire`].
pub const ALL: [Markers; 2] = [MESSAGE_IDS, FIRED_TIMERS];

/// Keys deleted or moved per batch by [`expire`]: bounds a batch's size and the time it
/// holds sled's write lock.
const CHUNK: usize = 512;

impl Markers {
    /// The bucket of time `at_ms`.
    pub fn bucket(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.window_ms)
    }

    /// The marker key of `id` in `bucket`.
    pub fn key(&self, bucket: i64, id: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 17 + id.len());
        k.extend_from_slice(self.prefix);
        k.extend_from_slice(format!("{:016x}/", bucket.max(0)).as_bytes());
        k.extend_from_slice(id);
        k
    }

    /// The bucket a marker key is in, if it is one.
    fn bucket_of(&self, key: &[u8]) -> Option<i64> {
        let hex = key.strip_prefix(self.prefix)?.get(..16)?;
        i64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    }

    /// The keys that decide whether `id`, arriving at `now_ms`, is new: the marker to
    /// write (in the current bucket), and the other keys whose presence means it is taken
    /// (the previous bucket's marker, and the pre-bucket marker when `legacy` ones may
    /// still exist).
    pub fn guards(&self, id: &str, now_ms: i64, legacy: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
        let current = self.bucket(now_ms);
        let id = id.as_bytes();
        let mut others = vec![self.key(current - 1, id)];
        if legacy {
            let mut k = self.legacy.to_vec();
            k.extend_from_slice(id);
            others.push(k);
        }
        (self.key(current, id), others)
    }
}

/// What one [`expire`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Markers deleted because their bucket is older than the previous one.
    pub deleted: usize,
    /// Pre-bucket markers moved into the current bucket.
    pub moved: usize,
}

impl std::ops::AddAssign for Expired {
    fn add_assign(&mut self, other: Expired) {
        self.deleted += other.deleted;
        self.moved += other.moved;
    }
}

/// Deletes the `markers` of `space` older than the previous bucket, and moves pre-bucket
/// markers into the current bucket. Blocking: call it off the async runtime.
pub fn expire(
    b: &dyn Backend,
    space: &Space,
    markers: &Markers,
    now_ms: i64,
) -> Result<Expired, StoreError> {
    let current = markers.bucket(now_ms);
    let mut done = Expired::default();
    loop {
        // Keys sort by bucket, oldest first: the expired ones are a run at the start.
        let rows = b.scan_prefix(space, markers.prefix, CHUNK)?;
        let old: Vec<BatchOp> = rows
            .iter()
            .take_while(|(k, _)| markers.bucket_of(k).is_none_or(|bk| bk < current - 1))
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
        let rows = b.scan_prefix(space, markers.legacy, CHUNK)?;
        if rows.is_empty() {
            break;
        }
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for (k, v) in &rows {
            ops.push(BatchOp::put(
                markers.key(current, &k[markers.legacy.len()..]),
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

    const DAY: i64 = DAY_MS;
    const M: Markers = MESSAGE_IDS;
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
        let (written, _) = M.guards("m-1", T0, false);
        // A day later, in the next bucket: the first marker is one of the guards.
        let (_, later) = M.guards("m-1", T0 + DAY, false);
        assert!(later.contains(&written));
        // Two days later it is not.
        let (now, much_later) = M.guards("m-1", T0 + 2 * DAY, false);
        assert!(!much_later.contains(&written) && now != written);
        // Pre-bucket markers are checked only while they may exist.
        let (_, with_legacy) = M.guards("m-1", T0, true);
        assert!(with_legacy.contains(&b"msg/m-1".to_vec()));
    }

    #[test]
    fn expire_keeps_the_current_and_previous_buckets_and_deletes_older_ones() {
        let (_dir, db) = db();
        let sp = Space::tenant("t1");
        let b = db.backend();
        // 1,100 markers in the oldest bucket (more than one chunk), some in each later one.
        let mut ops: Vec<BatchOp> = (0..1_100)
            .map(|i| BatchOp::put(M.key(M.bucket(T0), format!("old-{i}").as_bytes()), vec![1]))
            .collect();
        for d in 1..=3 {
            ops.push(BatchOp::put(
                M.key(M.bucket(T0 + d * DAY), format!("day-{d}").as_bytes()),
                vec![1],
            ));
        }
        b.apply_batch(&sp, &ops).expect("write");

        let done = expire(b.as_ref(), &sp, &M, T0 + 3 * DAY).expect("expire");
        assert_eq!(done.deleted, 1_101, "the oldest bucket and day 1 are gone");
        let left = keys(&db, &sp, M.prefix);
        assert_eq!(
            left,
            vec![
                M.key(M.bucket(T0 + 2 * DAY), b"day-2"),
                M.key(M.bucket(T0 + 3 * DAY), b"day-3")
            ]
        );
        // Nothing more to do.
        assert_eq!(
            expire(b.as_ref(), &sp, &M, T0 + 3 * DAY).expect("expire"),
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

        let done = expire(b.as_ref(), &sp, &M, T0).expect("expire");
        assert_eq!(done.moved, 600);
        assert!(keys(&db, &sp, M.legacy).is_empty());
        assert_eq!(keys(&db, &sp, M.prefix).len(), 600);
        let moved = b
            .get(&sp, &M.key(M.bucket(T0), b"old-7"))
            .expect("get")
            .expect("moved with its value");
        assert_eq!(moved, 7u64.to_be_bytes().to_vec());
    }
}
