//! Concurrent sled batches on one tree combined into one.
//!
//! Every `sled::Tree::apply_batch` rolls sled's log buffer twice (two buffer writes, each
//! waking all of sled's I/O threads) and holds sled's process-wide write lock, which
//! stalls every reader. Callers that arrive while a batch is being applied queue up; the
//! thread that applied it then applies all the queued ones, per tree, as one batch, in
//! arrival order (a later write of a key wins, as if applied one after another), and
//! wakes their callers. Each caller's writes stay atomic: they are all in one batch.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use sled::IVec;

/// One caller's writes: key → new value, `None` to remove.
pub(crate) type Writes = Vec<(IVec, Option<IVec>)>;

/// The combiner of one database.
#[derive(Default)]
pub(crate) struct Combiner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Requests waiting for the leader.
    queue: Vec<Arc<Request>>,
    /// Whether a thread is applying batches.
    leading: bool,
}

struct Request {
    tree: sled::Tree,
    writes: Mutex<Writes>,
    done: Mutex<Option<sled::Result<()>>>,
    cv: Condvar,
}

impl Combiner {
    /// Applies `writes` to `tree` atomically, possibly in one batch with other callers'.
    /// Blocking.
    pub(crate) fn apply(&self, tree: &sled::Tree, writes: Writes) -> sled::Result<()> {
        let me = Arc::new(Request {
            tree: tree.clone(),
            writes: Mutex::new(writes),
            done: Mutex::new(None),
            cv: Condvar::new(),
        });
        let mut state = lock(&self.state);
        state.queue.push(me.clone());
        if state.leading {
            drop(state);
            let mut done = lock(&me.done);
            loop {
                if let Some(result) = done.take() {
                    return result;
                }
                done = me.cv.wait(done).unwrap_or_else(PoisonError::into_inner);
            }
        }
        state.leading = true;
        loop {
            let group = std::mem::take(&mut state.queue);
            if group.is_empty() {
                state.leading = false;
                break;
            }
            drop(state);
            apply_group(group);
            state = lock(&self.state);
        }
        drop(state);
        let result = lock(&me.done).take();
        result.expect("the leader's own request is in its first group")
    }
}

/// Applies `group` as one batch per tree and answers every request.
fn apply_group(group: Vec<Arc<Request>>) {
    let mut trees: Vec<(sled::Tree, Vec<Arc<Request>>)> = Vec::new();
    for r in group {
        match trees.iter_mut().find(|(t, _)| t.name() == r.tree.name()) {
            Some((_, rs)) => rs.push(r),
            None => trees.push((r.tree.clone(), vec![r])),
        }
    }
    for (tree, requests) in trees {
        let mut batch = sled::Batch::default();
        for r in &requests {
            for (key, value) in std::mem::take(&mut *lock(&r.writes)) {
                match value {
                    Some(v) => batch.insert(key, v),
                    None => batch.remove(key),
                }
            }
        }
        let result = tree.apply_batch(batch);
        for r in &requests {
            *lock(&r.done) = Some(result.clone());
            r.cv.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_batches_all_land_and_a_later_write_of_a_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let other = db.open_tree("u").unwrap();
        let c = Arc::new(Combiner::default());
        let threads: Vec<_> = (0..8u32)
            .map(|i| {
                let (c, tree, other) = (c.clone(), tree.clone(), other.clone());
                std::thread::spawn(move || {
                    for j in 0..200u32 {
                        let t = if j % 2 == 0 { &tree } else { &other };
                        let writes = vec![
                            (
                                IVec::from(format!("k{i}/{j}").as_bytes()),
                                Some(IVec::from(b"v")),
                            ),
                            (
                                IVec::from(format!("k{i}/{j}/x").as_bytes()),
                                Some(IVec::from(b"x")),
                            ),
                            (IVec::from(format!("k{i}/{j}/x").as_bytes()), None),
                        ];
                        c.apply(t, writes).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(tree.len() + other.len(), 8 * 200);
        assert_eq!(tree.get("k3/10").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(other.get("k3/11").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(tree.get("k3/10/x").unwrap().is_none());
    }
}
