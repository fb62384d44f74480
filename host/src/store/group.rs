//! Flat combining: callers hand in jobs, and one of them (the *leader*) runs every job
//! queued meanwhile as one group while the others wait for their answers.
//!
//! Used where a fixed cost is paid per run rather than per job: a sled batch rolls sled's
//! log buffer twice (two buffer writes, each waking all of sled's I/O threads) and holds
//! its process-wide write lock, whatever the batch holds. Callers that arrive while a
//! group runs queue up; when it ends, the leader runs the queued ones as the next group,
//! in arrival order, until the queue is empty. Nobody waits for company: a job that finds
//! no leader runs at once, alone.
//!
//! Async callers use [`Group::submit`]: their job waits in the queue without holding a
//! thread, and a group that finds no leader gets one blocking thread that leads until the
//! queue is empty. So N concurrent requests cost one blocking thread per group, not N
//! threads each woken twice (once to queue, once for the answer).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The leader panicked while running the group that held this job; its effects are
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the thread applying this write together with others panicked")]
pub struct LeaderLost;

/// A queue of jobs of type `J`, each answered with an `R`.
pub struct Group<J, R> {
    state: Mutex<State<J, R>>,
}

struct State<J, R> {
    /// Jobs waiting for the leader, in arrival order.
    queue: Vec<(J, Answer<R>)>,
    /// Whether a caller is running groups.
    leading: bool,
}

/// Where a job's answer goes: a waiting thread's slot, or an async caller's channel.
enum Answer<R> {
    Thread(Arc<Slot<R>>),
    Task(tokio::sync::oneshot::Sender<Result<R, LeaderLost>>),
}

impl<R> Answer<R> {
    fn fill(self, answer: Result<R, LeaderLost>) {
        match self {
            Answer::Thread(slot) => slot.fill(answer),
            // A caller that stopped waiting (its request was dropped) is not an error:
            // its job ran all the same.
            Answer::Task(tx) => drop(tx.send(answer)),
        }
    }
}

/// Where one job's answer is delivered.
struct Slot<R> {
    answer: Mutex<Option<Result<R, LeaderLost>>>,
    cv: Condvar,
}

impl<R> Slot<R> {
    fn fill(&self, answer: Result<R, LeaderLost>) {
        *lock(&self.answer) = Some(answer);
        self.cv.notify_one();
    }

    fn wait(&self) -> Result<R, LeaderLost> {
        let mut answer = lock(&self.answer);
        loop {
            if let Some(a) = answer.take() {
                return a;
            }
            answer = self.cv.wait(answer).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<J, R> Default for Group<J, R> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                leading: false,
            }),
        }
    }
}

impl<J, R> Group<J, R> {
    /// Runs `job`, perhaps together with other callers' jobs: `run_group` gets the jobs of
    /// one group in arrival order and must answer each, in the same order. Only the
    /// leader's `run_group` runs, so every caller of one `Group` must pass an equivalent
    /// one. Blocking.
    pub fn run(&self, job: J, run_group: impl FnMut(Vec<J>) -> Vec<R>) -> Result<R, LeaderLost> {
        // Nobody to hand the lead to: a caller who finds no group running leads.
        self.run_led_elsewhere(job, || false, run_group)
    }

    /// Runs `job` like [`run`](Self::run), except that a caller who finds no group running
    /// does not lead: it calls `hand_lead`, which must make another thread call
    /// [`lead_handed`](Self::lead_handed) and answer `true`, and waits for its answer. If
    /// `hand_lead` answers `false` (nobody can take the lead), the caller leads after all.
    /// For callers whose thread may be preempted for long (a lowered CPU priority): as
    /// leader they would hold up every job queued behind theirs. Blocking.
    pub fn run_led_elsewhere(
        &self,
        job: J,
        hand_lead: impl FnOnce() -> bool,
        mut run_group: impl FnMut(Vec<J>) -> Vec<R>,
    ) -> Result<R, LeaderLost> {
        let mine = Arc::new(Slot {
            answer: Mutex::new(None),
            cv: Condvar::new(),
        });
        let lead = {
            let mut state = lock(&self.state);
            state.queue.push((job, Answer::Thread(mine.clone())));
            !std::mem::replace(&mut state.leading, true)
        };
        if lead && !hand_lead() {
            self.lead(&mut run_group);
        }
        mine.wait()
    }

    /// Leads, on the thread a [`run_led_elsewhere`](Self::run_led_elsewhere) caller handed
    /// the lead to, until the queue is empty.
    pub fn lead_handed(&self, run_group: &mut impl FnMut(Vec<J>) -> Vec<R>) {
        self.lead(run_group);
    }

    /// Runs `job` like [`run`](Self::run), but the caller waits without a thread: if no
    /// group is running, one blocking thread (tokio's pool) leads until the queue is empty.
    /// Must be called inside a tokio runtime.
    pub async fn submit<F>(self: Arc<Self>, job: J, mut run_group: F) -> Result<R, LeaderLost>
    where
        J: Send + 'static,
        R: Send + 'static,
        F: FnMut(Vec<J>) -> Vec<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut state = lock(&self.state);
            state.queue.push((job, Answer::Task(tx)));
            !std::mem::replace(&mut state.leading, true)
        };
        if lead {
            let me = self.clone();
            // A panic in `run_group` answers the group with `LeaderLost` (see `Pending`);
            // the panic itself is logged here, as nobody else awaits the leader.
            drop(tokio::task::spawn_blocking(move || {
                let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    me.lead(&mut run_group)
                }));
                if let Err(panic) = led {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %why, "a group's leader panicked; its jobs were answered with an error");
                }
            }));
        }
        rx.await.unwrap_or(Err(LeaderLost))
    }

    /// Runs queued groups until the queue is empty, then stops leading. The caller has set
    /// `leading`.
    fn lead(&self, run_group: &mut impl FnMut(Vec<J>) -> Vec<R>) {
        let mut state = lock(&self.state);
        loop {
            let group = std::mem::take(&mut state.queue);
            if group.is_empty() {
                state.leading = false;
                return;
            }
            drop(state);
            let (jobs, answers): (Vec<J>, Vec<Answer<R>>) = group.into_iter().unzip();
            // Answers every job of the group even if `run_group` panics, and hands the
            // lead on, so no caller waits forever.
            let mut pending = Pending {
                answers,
                group: self,
                armed: true,
            };
            let results = run_group(jobs);
            assert_eq!(
                results.len(),
                pending.answers.len(),
                "a group runner must answer every job"
            );
            for (answer, result) in std::mem::take(&mut pending.answers)
                .into_iter()
                .zip(results)
            {
                answer.fill(Ok(result));
            }
            pending.armed = false;
            drop(pending);
            state = lock(&self.state);
        }
    }

    /// How many jobs wait for the leader.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }
}

/// One [`Group`] per key (a tenant id, say), made on first use. Groups nobody holds are
/// dropped as the map grows, so keys that stop coming (deleted tenants) do not pile up.
pub struct Groups<J, R> {
    by_key: Mutex<ByKey<J, R>>,
}

struct ByKey<J, R> {
    groups: HashMap<String, Arc<Group<J, R>>>,
    /// Size at which the next insert first drops idle groups: twice the size left by the
    /// last prune, so pruning costs O(1) per insert on average.
    prune_at: usize,
}

/// The map is not pruned below this size: a few idle groups cost less than re-creating them.
const MIN_PRUNE_AT: usize = 64;

impl<J, R> Default for Groups<J, R> {
    fn default() -> Self {
        Self {
            by_key: Mutex::new(ByKey {
                groups: HashMap::new(),
                prune_at: MIN_PRUNE_AT,
            }),
        }
    }
}

impl<J, R> Groups<J, R> {
    /// The group of `key`.
    pub fn of(&self, key: &str) -> Arc<Group<J, R>> {
        let mut by_key = lock(&self.by_key);
        if let Some(g) = by_key.groups.get(key) {
            return g.clone();
        }
        if by_key.groups.len() >= by_key.prune_at {
            // A group held only by this map has no leader and no queued job (both hold a
            // clone while they run): dropping it loses nothing, and the next caller of its
            // key makes a new one.
            by_key.groups.retain(|_, g| Arc::strong_count(g) > 1);
            by_key.prune_at = (2 * by_key.groups.len()).max(MIN_PRUNE_AT);
        }
        let g = Arc::new(Group::default());
        by_key.groups.insert(key.to_string(), g.clone());
        g
    }

    /// How many groups the map holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.by_key).groups.len()
    }
}

/// The slots of a running group: dropped only when the leader unwinds.
struct Pending<'a, J, R> {
    answers: Vec<Answer<R>>,
    group: &'a Group<J, R>,
    /// Whether dropping this means the leader is unwinding.
    armed: bool,
}

impl<J, R> Drop for Pending<'_, J, R> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The panicking leader stops leading before its own jobs hear of it, so a caller
        // that submits again on that news finds no leader and leads. Jobs queued behind it
        // never ran; they fail too rather than wait for a leader that will not come.
        let behind = {
            let mut state = lock(&self.group.state);
            state.leading = false;
            std::mem::take(&mut state.queue)
        };
        for answer in std::mem::take(&mut self.answers)
            .into_iter()
            .chain(behind.into_iter().map(|(_, answer)| answer))
        {
            answer.fill(Err(LeaderLost));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_lead_runs_the_group_on_the_thread_it_was_handed_to() {
        let g = Arc::new(Group::<u32, std::thread::ThreadId>::default());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = {
            let g = g.clone();
            std::thread::spawn(move || {
                let me = std::thread::current().id();
                while rx.recv().is_ok() {
                    g.lead_handed(&mut |jobs: Vec<u32>| jobs.iter().map(|_| me).collect());
                }
                me
            })
        };
        let ran_on = g
            .run_led_elsewhere(1, || tx.send(()).is_ok(), |_| unreachable!("handed"))
            .unwrap();
        // With nobody to hand the lead to, the caller leads.
        drop(tx);
        let helper_id = helper.join().unwrap();
        assert_eq!(ran_on, helper_id);
        let here = std::thread::current().id();
        let alone = g
            .run_led_elsewhere(2, || false, |jobs| jobs.iter().map(|_| here).collect())
            .unwrap();
        assert_eq!(alone, here);
    }

    #[test]
    fn every_job_is_answered_with_its_own_result_under_contention() {
        let g = Arc::new(Group::<u32, u32>::default());
        let threads: Vec<_> = (0..8u32)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for j in 0..500u32 {
                        let job = i * 1000 + j;
                        let got = g.run(job, |jobs| jobs.iter().map(|j| j * 2).collect());
                        assert_eq!(got.unwrap(), job * 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn jobs_that_arrive_while_a_group_runs_run_together_as_the_next_group() {
        let g = Arc::new(Group::<u32, u32>::default());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let run = |g: Arc<Group<u32, u32>>,
                   job: u32,
                   hold: Option<std::sync::mpsc::Receiver<()>>,
                   sizes: Arc<Mutex<Vec<usize>>>| {
            std::thread::spawn(move || {
                let mut hold = hold;
                g.run(job, |jobs| {
                    lock(&sizes).push(jobs.len());
                    // Only the first group waits: its leader runs the next group too.
                    if let Some(h) = hold.take() {
                        h.recv().unwrap();
                    }
                    jobs.iter().map(|j| j + 1).collect()
                })
                .unwrap()
            })
        };
        let leader = run(g.clone(), 1, Some(hold), sizes.clone());
        while lock(&sizes).is_empty() {
            std::thread::yield_now();
        }
        let followers: Vec<_> = (2..5)
            .map(|j| run(g.clone(), j, None, sizes.clone()))
            .collect();
        while g.queued() < 3 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 2);
        let answers: Vec<u32> = followers.into_iter().map(|f| f.join().unwrap()).collect();
        assert_eq!(answers, vec![3, 4, 5]);
        assert_eq!(
            *lock(&sizes),
            vec![1, 3],
            "the three late jobs ran as one group"
        );
    }

    #[test]
    fn idle_groups_of_keys_that_stop_coming_are_dropped_and_busy_ones_kept() {
        let groups = Groups::<u32, u32>::default();
        let busy = groups.of("busy");
        for i in 0..10_000u32 {
            let g = groups.of(&format!("tenant-{i}"));
            assert_eq!(g.run(i, |jobs| jobs).unwrap(), i);
        }
        assert!(
            groups.len() <= 2 * MIN_PRUNE_AT + 1,
            "{} groups kept for 10,001 keys",
            groups.len()
        );
        assert!(
            Arc::ptr_eq(&busy, &groups.of("busy")),
            "a group someone holds is never replaced"
        );
    }

    #[test]
    fn a_panicking_leader_fails_its_group_and_later_jobs_still_run() {
        let g = Arc::new(Group::<u32, u32>::default());
        let g2 = g.clone();
        let panicked = std::thread::spawn(move || {
            g2.run(1, |_| panic!("bug in the group runner"))
                .map_err(|_| ())
        })
        .join();
        assert!(panicked.is_err(), "the leader's own panic propagates");
        assert_eq!(g.run(7, |jobs| jobs).unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_jobs_are_answered_with_their_own_results_and_share_groups() {
        let g = Arc::new(Group::<u32, u32>::default());
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..400u32)
            .map(|job| {
                let (g, sizes) = (g.clone(), sizes.clone());
                tokio::spawn(async move {
                    let got = g
                        .submit(job, move |jobs| {
                            lock(&sizes).push(jobs.len());
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            jobs.iter().map(|j| j * 2).collect()
                        })
                        .await;
                    assert_eq!(got.unwrap(), job * 2);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let sizes = lock(&sizes);
        assert_eq!(sizes.iter().sum::<usize>(), 400, "every job ran once");
        assert!(
            sizes.len() < 400,
            "jobs that arrived while a group ran were grouped: {} groups",
            sizes.len()
        );
        assert!(
            !lock(&g.state).leading,
            "the leader stopped with the queue empty"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_async_leader_fails_its_group_and_later_jobs_still_run() {
        let g = Arc::new(Group::<u32, u32>::default());
        let lost = g
            .clone()
            .submit(1, |_| panic!("bug in the group runner"))
            .await;
        assert_eq!(lost, Err(LeaderLost));
        assert_eq!(g.clone().submit(7, |jobs| jobs).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_and_async_callers_share_one_queue() {
        let g = Arc::new(Group::<u32, u32>::default());
        let g2 = g.clone();
        let blocking = tokio::task::spawn_blocking(move || {
            (0..200u32)
                .map(|j| {
                    g2.run(j, |jobs| jobs.iter().map(|j| j + 1).collect())
                        .unwrap()
                })
                .sum::<u32>()
        });
        let mut sum = 0;
        for j in 0..200u32 {
            sum += g
                .clone()
                .submit(j, |jobs| jobs.iter().map(|j| j + 1).collect())
                .await
                .unwrap();
        }
        assert_eq!(sum, (1..=200).sum::<u32>());
        assert_eq!(blocking.await.unwrap(), (1..=200).sum::<u32>());
    }
}
