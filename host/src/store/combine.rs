//! Concurrent sled batches on one tree combined into one.
//!
//! Every `sled::Tree::apply_batch` rolls sled's log buffer twice (two buffer writes, each
//! waking all of sled's I/O threads) and holds sled's process-wide write lock, which
//! stalls every reader. Callers that arrive while a batch is being applied queue up; the
//! thread that applied it then applies all the queued ones, per tree, as one batch, in
//! arrival order (a later write of a key wins, as if applied one after another), and
//! wakes their callers. Each caller's writes stay atomic: they are all in one batch.

use sled::IVec;

use super::group::Group;

/// One caller's writes: key → new value, `None` to remove.
pub(crate) type Writes = Vec<(IVec, Option<IVec>)>;

/// The combiner of one database.
#[derive(Default)]
pub(crate) struct Combiner {
    group: Group<(sled::Tree, Writes), sled::Result<()>>,
}

impl Combiner {
    /// Applies `writes` to `tree` atomically, possibly in one batch with other callers'.
    /// Blocking.
    pub(crate) fn apply(&self, tree: &sled::Tree, writes: Writes) -> sled::Result<()> {
        self.group
            .run((tree.clone(), writes), apply_group)
            .unwrap_or_else(|lost| Err(sled::Error::Io(std::io::Error::other(lost))))
    }
}

/// Applies `group` as one batch per tree; the answers are in the order of `group`.
fn apply_group(group: Vec<(sled::Tree, Writes)>) -> Vec<sled::Result<()>> {
    let mut trees: Vec<(sled::Tree, sled::Batch, Vec<usize>)> = Vec::new();
    let n = group.len();
    for (i, (tree, writes)) in group.into_iter().enumerate() {
        let at = match trees.iter().position(|(t, _, _)| t.name() == tree.name()) {
            Some(at) => at,
            None => {
                trees.push((tree, sled::Batch::default(), Vec::new()));
                trees.len() - 1
            }
        };
        let (_, batch, members) = &mut trees[at];
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        members.push(i);
    }
    let mut answers: Vec<Option<sled::Result<()>>> = (0..n).map(|_| None).collect();
    for (tree, batch, members) in trees {
        let result = tree.apply_batch(batch);
        for i in members {
            answers[i] = Some(result.clone());
        }
    }
    answers
        .into_iter()
        .map(|a| a.expect("every job belongs to one tree's batch"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
