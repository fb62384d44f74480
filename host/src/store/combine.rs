//! Concurrent multi-key writes on one tree combined into one.
//!
//! Making a list of writes atomic has a fixed cost per list (a redo record and its
//! removal, see [`redo`](super::redo)) and holds the tree's isolation lock, which stalls its
//! readers. Callers that arrive while a list is being applied queue up; the thread that
//! applied it then applies all the queued ones, per tree, as one list, in arrival order (a
//! later write of a key wins, as if applied one after another), and wakes their callers.
//! Each caller's writes stay atomic: they are all in one list.
//!
//! A background thread (the event processor's, the journey runner's: see
//! [`worker`](crate::worker)) runs at a lowered CPU priority and may wait long for a core.
//! As leader it would hold every writer of the database, and the isolation lock of the
//! tree it applies, meanwhile. So it never leads: it hands the lead to the combiner's own
//! thread, which runs at the priority of the thread that opened the store.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::group::Group;
use super::redo::{Redo, TreeSlot, Writes};

/// One caller's job and its answer.
type CombineGroup = Group<(Arc<TreeSlot>, Writes), sled::Result<()>>;

/// The combiner of one database.
#[derive(Default)]
pub(crate) struct Combiner {
    group: Arc<CombineGroup>,
    /// The thread that leads for background callers, and the channel that hands it the lead.
    helper: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Combiner {
    /// A combiner whose own thread leads the groups background callers start. Call it on a
    /// thread of normal priority: the new thread inherits the caller's.
    pub(crate) fn with_helper(redo: Arc<Redo>) -> std::io::Result<Combiner> {
        let group = Arc::new(CombineGroup::default());
        let (tx, rx) = mpsc::channel::<()>();
        let g = group.clone();
        let thread = std::thread::Builder::new()
            .name("weft-combine".into())
            .spawn(move || {
                // One message per hand-off; the channel closes when the combiner drops.
                while rx.recv().is_ok() {
                    let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        g.lead_handed(&mut |jobs| apply_group(&redo, jobs));
                    }));
                    if led.is_err() {
                        tracing::error!("the combiner's thread panicked while applying writes; their callers were answered with an error");
                    }
                }
            })?;
        Ok(Combiner {
            group,
            helper: Some((tx, thread)),
        })
    }

    /// Applies `writes` to `slot`'s tree atomically through `redo`, possibly in one list
    /// with other callers'. Blocking.
    pub(crate) fn apply(
        &self,
        redo: &Redo,
        slot: &Arc<TreeSlot>,
        writes: Writes,
    ) -> sled::Result<()> {
        let job = (slot.clone(), writes);
        let run = |group| apply_group(redo, group);
        let answer = match &self.helper {
            Some((lead, _)) if crate::worker::on_background_thread() => self
                .group
                .run_led_elsewhere(job, || lead.send(()).is_ok(), run),
            _ => self.group.run(job, run),
        };
        answer.unwrap_or_else(|lost| Err(sled::Error::Io(std::io::Error::other(lost))))
    }
}

impl Drop for Combiner {
    fn drop(&mut self) {
        // Closing the channel ends the thread, and with it its hold on the database.
        if let Some((lead, thread)) = self.helper.take() {
            drop(lead);
            let _ = thread.join();
        }
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
    fn background_threads_writes_land_through_the_combiners_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = Arc::new(TreeSlot::new(db.open_tree("t").unwrap()));
        let redo = Arc::new(Redo::open(&db).unwrap());
        let c = Arc::new(Combiner::with_helper(redo.clone()).unwrap());
        let threads: Vec<_> = (0..4u32)
            .map(|i| {
                let (c, tree, redo) = (c.clone(), tree.clone(), redo.clone());
                std::thread::spawn(move || {
                    // Half the writers are background threads, which hand the lead over.
                    if i % 2 == 0 {
                        crate::worker::mark_background_thread();
                    }
                    for j in 0..100u32 {
                        let key = IVec::from(format!("k{i}/{j}").as_bytes());
                        c.apply(&redo, &tree, vec![(key, Some(IVec::from(b"v")))])
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(tree.tree.len(), 400);
        // Dropping the combiner ends its thread (the drop joins it).
        drop(Arc::into_inner(c).expect("the writers are done"));
    }

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
