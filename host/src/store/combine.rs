//! Concurrent multi-key writes on one tree combined into one.
//!
//! Making a list of writes atomic has a fixed cost per list (a redo record and its
//! removal, see [`redo`](super::redo)) and holds the tree's isolation lock, which stalls its
//! readers. Callers that arrive while a list is being applied queue up; the thread that
//! applied it then applies all the queued ones, per tree, as one list, in arrival order (a
//! later write of a key wins, as if applied one after another), and wakes their callers.
//! Each caller's writes stay atomic: they are all in one list.

use std::sync::Arc;

use super::group::Group;
use super::redo::{Redo, TreeSlot, Writes};

/// The combiner of one database.
#[derive(Default)]
pub(crate) struct Combiner {
    group: Group<(Arc<TreeSlot>, Writes), sled::Result<()>>,
}

impl Combiner {
    /// Applies `writes` to `slot`'s tree atomically through `redo`, possibly in one list
    /// with other callers'. Blocking.
    pub(crate) fn apply(
        &self,
        redo: &Redo,
        slot: &Arc<TreeSlot>,
        writes: Writes,
    ) -> sled::Result<()> {
        self.group
            .run((slot.clone(), writes), |group| apply_group(redo, group))
            .unwrap_or_else(|lost| Err(sled::Error::Io(std::io::Error::other(lost))))
    }
}

/// Applies `group` as one list per tree; the answers are in the order of `group`.
fn apply_group(redo: &Redo, group: Vec<(Arc<TreeSlot>, Writes)>) -> Vec<sled::Result<()>> {
    let mut trees: Vec<(Arc<TreeSlot>, Writes, Vec<usize>)> = Vec::new();
    let n = group.len();
    for (i, (slot, writes)) in group.into_iter().enumerate() {
        match trees.iter_mut().find(|(s, _, _)| Arc::ptr_eq(s, &slot)) {
            Some((_, all, members)) => {
                all.extend(writes);
                members.push(i);
            }
            // The tree's first job: its writes start the list as they are.
            None => trees.push((slot, writes, vec![i])),
        }
    }
    let mut answers: Vec<Option<sled::Result<()>>> = (0..n).map(|_| None).collect();
    for (slot, writes, members) in trees {
        let result = redo.apply(&slot, &writes).map(drop);
        for i in members {
            answers[i] = Some(result.clone());
        }
    }
    answers
        .into_iter()
        .map(|a| a.expect("every job belongs to one tree's list"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sled::IVec;

    #[test]
    fn concurrent_batches_all_land_and_a_later_write_of_a_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = Arc::new(TreeSlot::new(db.open_tree("t").unwrap()));
        let other = Arc::new(TreeSlot::new(db.open_tree("u").unwrap()));
        let redo = Arc::new(Redo::open(&db).unwrap());
        let c = Arc::new(Combiner::default());
        let threads: Vec<_> = (0..8u32)
            .map(|i| {
                let (c, tree, other, redo) = (c.clone(), tree.clone(), other.clone(), redo.clone());
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
                        c.apply(&redo, t, writes).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (tree, other) = (&tree.tree, &other.tree);
        assert_eq!(tree.len() + other.len(), 8 * 200);
        assert_eq!(tree.get("k3/10").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(other.get("k3/11").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(tree.get("k3/10/x").unwrap().is_none());
    }
}
