//! A staged view of one space: reads see the store plus the writes staged so far, and the
//! staged writes reach the store as one atomic batch. For work that applies many items in
//! order, each reading what the earlier ones wrote, and commits them together: every
//! `apply_batch` costs sled two log-buffer writes (`pin_log` rolls the buffer before and
//! after its manifest), so one batch per item would pay them per item.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Backend, BatchOp, Entry, Space, StoreError, UniqueInsert, UpdateFn, WriteObserver};

/// Staged writes: key → new value, `None` for a delete. The last write of a key wins.
type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Reads of `space` through the staged writes; writes are staged, not applied, until
/// [`commit`](Staged::commit). Only `get`, the scans, `put`, `delete`, `apply_batch` and
/// `next_id` are supported; the other operations (and other spaces) are refused, since
/// they could not keep their atomicity promise on a view.
pub struct Staged {
    inner: Arc<dyn Backend>,
    space: Space,
    pending: Mutex<Pending>,
}

impl Staged {
    /// A view of `space` in `inner` with nothing staged.
    pub fn new(inner: Arc<dyn Backend>, space: Space) -> Staged {
        Staged {
            inner,
            space,
            pending: Mutex::new(Pending::new()),
        }
    }

    /// Stages `ops` (in order), or none of them if a key or value is over its limit.
    pub fn stage(&self, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        for op in &ops {
            op.check()?;
        }
        let mut p = self.lock();
        for op in ops {
            match op {
                BatchOp::Put { key, value } => p.insert(key, Some(value)),
                BatchOp::Delete { key } => p.insert(key, None),
            };
        }
        Ok(())
    }

    /// How many keys are staged.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Writes everything staged as one atomic batch and empties the stage.
    pub fn commit(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let ops: Vec<BatchOp> = pending
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => BatchOp::Put { key, value },
                None => BatchOp::Delete { key },
            })
            .collect();
        self.inner.apply_batch(&self.space, &ops)
    }

    /// Runs `each` on every job in order through one staged view of `space` (each sees what
    /// the earlier ones wrote), then writes the view as one atomic batch. Answers each job;
    /// a failed batch fails them all.
    pub fn apply_each<J, T>(
        inner: Arc<dyn Backend>,
        space: Space,
        jobs: Vec<J>,
        mut each: impl FnMut(&Staged, &Space, J) -> Result<T, StoreError>,
    ) -> Vec<Result<T, StoreError>> {
        let staged = Staged::new(inner, space);
        let mut answers: Vec<_> = jobs
            .into_iter()
            .map(|job| each(&staged, &staged.space, job))
            .collect();
        if let Err(e) = staged.commit() {
            answers.iter_mut().for_each(|a| *a = Err(e.shared()));
        }
        answers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Backend::scan_prefix`], or its descending twin when `rev`.
    fn prefix_scan(
        &self,
        space: &Space,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.check(space)?;
        let end = prefix_end(prefix);
        self.merged(Bound::Included(prefix), upper(&end), rev, limit, |n| {
            if rev {
                self.inner.scan_prefix_rev(space, prefix, n)
            } else {
                self.inner.scan_prefix(space, prefix, n)
            }
        })
    }

    fn check(&self, space: &Space) -> Result<(), StoreError> {
        if *space == self.space {
            Ok(())
        } else {
            Err(refused("another space"))
        }
    }

    /// `inner`'s entries in `(lo, hi)` merged with the staged ones there: ascending, or
    /// descending when `rev`, at most `limit`. `fetch(n)` reads up to `n` entries of the
    /// range from the store in the same order.
    fn merged(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        rev: bool,
        limit: usize,
        fetch: impl FnOnce(usize) -> Result<Vec<Entry>, StoreError>,
    ) -> Result<Vec<Entry>, StoreError> {
        let p = self.lock();
        let staged: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = p.range::<[u8], _>((lo, hi)).collect();
        if staged.is_empty() {
            drop(p);
            return fetch(limit);
        }
        // Each staged key hides or replaces at most one stored entry, so `limit` more
        // than that many stored entries are enough to fill `limit` after the merge.
        let stored = fetch(limit.saturating_add(staged.len()))?;
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in staged {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k.as_slice()),
            };
        }
        Ok(if rev {
            all.into_iter().rev().take(limit).collect()
        } else {
            all.into_iter().take(limit).collect()
        })
    }
}

fn refused(what: &str) -> StoreError {
    StoreError::Backend(Box::new(std::io::Error::other(format!(
        "{what} is not supported on a staged view"
    ))))
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn upper(end: &Option<Vec<u8>>) -> Bound<&[u8]> {
    end.as_deref().map_or(Bound::Unbounded, Bound::Excluded)
}

impl Backend for Staged {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check(space)?;
        if let Some(v) = self.lock().get(key) {
            return Ok(v.clone());
        }
        self.inner.get(space, key)
    }

    fn put(&self, space: &Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.check(space)?;
        self.stage(vec![BatchOp::put(key.to_vec(), value.to_vec())])
    }

    fn delete(&self, space: &Space, key: &[u8]) -> Result<(), StoreError> {
        self.check(space)?;
        self.stage(vec![BatchOp::delete(key.to_vec())])
    }

    fn scan_prefix(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.prefix_scan(space, prefix, false, limit)
    }

    fn scan_range(
        &self,
        space: &Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.check(space)?;
        if start >= end {
            return Ok(Vec::new());
        }
        self.merged(
            Bound::Included(start),
            Bound::Excluded(end),
            false,
            limit,
            |n| self.inner.scan_range(space, start, end, n),
        )
    }

    fn scan_prefix_rev(
        &self,
        space: &Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.prefix_scan(space, prefix, true, limit)
    }

    fn scan_prefix_rev_before(
        &self,
        space: &Space,
        prefix: &[u8],
        before: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.check(space)?;
        if before <= prefix {
            return Ok(Vec::new());
        }
        let end = prefix_end(prefix);
        let hi = match &end {
            Some(e) if e.as_slice() < before => Bound::Excluded(e.as_slice()),
            _ => Bound::Excluded(before),
        };
        self.merged(Bound::Included(prefix), hi, true, limit, |n| {
            self.inner.scan_prefix_rev_before(space, prefix, before, n)
        })
    }

    fn compare_and_swap(
        &self,
        _space: &Space,
        _key: &[u8],
        _old: Option<&[u8]>,
        _new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        Err(refused("compare_and_swap"))
    }

    fn update(
        &self,
        _space: &Space,
        _key: &[u8],
        _f: &mut UpdateFn<'_>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Err(refused("update"))
    }

    fn apply_batch(&self, space: &Space, ops: &[BatchOp]) -> Result<(), StoreError> {
        self.check(space)?;
        self.stage(ops.to_vec())
    }

    fn insert_unique(
        &self,
        _space: &Space,
        _items: &[UniqueInsert],
    ) -> Result<Vec<bool>, StoreError> {
        Err(refused("insert_unique"))
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.inner.next_id()
    }

    fn drop_space(&self, _space: &Space) -> Result<(), StoreError> {
        Err(refused("drop_space"))
    }

    fn commit_blocking(&self) -> Result<(), StoreError> {
        Err(refused("commit_blocking"))
    }

    fn observe(&self, observer: Arc<dyn WriteObserver>) {
        self.inner.observe(observer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledBackend;

    fn setup() -> (tempfile::TempDir, Arc<dyn Backend>, Space) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(SledBackend::open(&dir.path().join("s")).unwrap());
        let sp = Space::tenant("t");
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            b.put(&sp, k.as_bytes(), k.as_bytes()).unwrap();
        }
        (dir, b, sp)
    }

    fn keys(entries: Vec<Entry>) -> Vec<String> {
        entries
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn reads_see_staged_writes_and_the_store_sees_them_only_after_commit() {
        let (_dir, b, sp) = setup();
        let st = Staged::new(b.clone(), sp.clone());
        st.put(&sp, b"a/0", b"new").unwrap();
        st.delete(&sp, b"a/2").unwrap();
        st.apply_batch(&sp, &[BatchOp::put(*b"a/3", b"changed".to_vec())])
            .unwrap();

        assert_eq!(st.get(&sp, b"a/0").unwrap(), Some(b"new".to_vec()));
        assert_eq!(st.get(&sp, b"a/2").unwrap(), None);
        assert_eq!(st.get(&sp, b"a/1").unwrap(), Some(b"a/1".to_vec()));
        assert_eq!(b.get(&sp, b"a/0").unwrap(), None, "nothing written yet");
        assert_eq!(b.get(&sp, b"a/2").unwrap(), Some(b"a/2".to_vec()));

        assert_eq!(
            keys(st.scan_prefix(&sp, b"a/", 10).unwrap()),
            ["a/0", "a/1", "a/3"]
        );
        assert_eq!(keys(st.scan_prefix(&sp, b"a/", 2).unwrap()), ["a/0", "a/1"]);
        assert_eq!(
            keys(st.scan_prefix_rev(&sp, b"a/", 2).unwrap()),
            ["a/3", "a/1"]
        );
        assert_eq!(
            keys(st.scan_prefix_rev_before(&sp, b"a/", b"a/3", 10).unwrap()),
            ["a/1", "a/0"]
        );
        assert_eq!(
            keys(st.scan_range(&sp, b"a/1", b"b/", 10).unwrap()),
            ["a/1", "a/3"]
        );
        assert_eq!(
            st.scan_prefix(&sp, b"a/", 10).unwrap()[2].1,
            b"changed".to_vec()
        );

        assert_eq!(st.len(), 3);
        st.commit().unwrap();
        assert!(st.is_empty());
        assert_eq!(
            keys(b.scan_prefix(&sp, b"a/", 10).unwrap()),
            ["a/0", "a/1", "a/3"]
        );
        assert_eq!(b.get(&sp, b"a/3").unwrap(), Some(b"changed".to_vec()));
    }

    #[test]
    fn a_limited_scan_is_filled_past_staged_deletes() {
        let (_dir, b, sp) = setup();
        let st = Staged::new(b, sp.clone());
        st.delete(&sp, b"a/1").unwrap();
        st.delete(&sp, b"a/2").unwrap();
        assert_eq!(keys(st.scan_prefix(&sp, b"a/", 1).unwrap()), ["a/3"]);
        assert_eq!(keys(st.scan_prefix(&sp, b"", 2).unwrap()), ["a/3", "b/1"]);
    }

    #[test]
    fn refuses_oversized_values_and_other_spaces_and_stages_nothing() {
        let (_dir, b, sp) = setup();
        let st = Staged::new(b, sp.clone());
        let big = vec![0u8; crate::store::MAX_VALUE_BYTES + 1];
        let r = st.stage(vec![
            BatchOp::put(*b"x", b"ok".to_vec()),
            BatchOp::put(*b"y", big),
        ]);
        assert!(matches!(r, Err(StoreError::ValueTooLarge { .. })), "{r:?}");
        assert!(st.is_empty());
        assert!(st.put(&Space::tenant("other"), b"x", b"1").is_err());
        assert!(st.compare_and_swap(&sp, b"x", None, Some(b"1")).is_err());
    }
}
