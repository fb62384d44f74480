//! Per-tenant background loops: at most one task per key (a tenant, or one lane of a
//! tenant's work) runs a pass function until it reports no more work; keys run in
//! parallel. Used by the event processor (one loop per tenant), the journey runner (one
//! per tenant and lane) and the delivery worker, whose writes to one key's data must not
//! interleave.
//!
//! The event processor's and the journey runner's passes are *background* work: nobody
//! waits on them, and a backlog may drain a little later. They run on threads of their own
//! at a lower CPU priority (`background_nice` in the configuration), so that on a small
//! box the requests being answered meanwhile (ingest, profile lookups, personalization)
//! get the cores first. The delivery worker's sends keep request priority: a send's
//! latency is part of its target. They run on threads of their own too
//! ([`send_threads`]), so that a burst of sends does not hold up the requests.
//!
//! A thread inherits its creator's priority. Background threads create only background
//! threads (their runtime's blocking pool), with one exception outside Weft's control:
//! sled starts an extra I/O thread from whichever thread queues work when its queue is
//! deep, and one started from a background pass writes log buffers at the lower priority
//! until it exits after idling (not seen in the benchmarks: `ps -L` after a run).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::store::StoreError;

/// First wait before retrying a pass that failed (storage trouble).
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between retries of a failing pass.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One pass over a tenant's pending work: how many items it took (0 = nothing to do).
pub type PassFn = Arc<dyn Fn(&str) -> Result<usize, StoreError> + Send + Sync>;

/// The set of running per-tenant loops of one kind of work.
pub struct TenantLoops {
    name: &'static str,
    /// Whether passes run on the background threads (lower CPU priority).
    background: bool,
    /// The runtime the loops' own tasks run on: the one that built them, so a wake from
    /// inside a background pass does not move the loop onto the background threads.
    home: Option<tokio::runtime::Handle>,
    /// Tenants with a running loop → whether new work arrived during the current pass.
    runs: Mutex<HashMap<String, bool>>,
}

impl std::fmt::Debug for TenantLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLoops")
            .field("name", &self.name)
            .field("background", &self.background)
            .finish_non_exhaustive()
    }
}

impl TenantLoops {
    /// Loops named `name` (for logs) whose passes run at request priority.
    pub fn new(name: &'static str) -> Arc<TenantLoops> {
        TenantLoops::with_priority(name, false)
    }

    /// Loops named `name` whose passes run on the background threads, at a lower CPU
    /// priority than request handling (see the module documentation).
    pub fn background(name: &'static str) -> Arc<TenantLoops> {
        TenantLoops::with_priority(name, true)
    }

    fn with_priority(name: &'static str, background: bool) -> Arc<TenantLoops> {
        Arc::new(TenantLoops {
            name,
            background,
            home: tokio::runtime::Handle::try_current().ok(),
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a loop for `tenant` is running.
    pub fn busy(&self, tenant: &str) -> bool {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(tenant)
    }

    /// Makes sure a loop runs `pass` for `tenant` until a pass finds nothing to do.
    pub fn wake(self: &Arc<Self>, tenant: &str, pass: PassFn) {
        {
            let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(again) = runs.get_mut(tenant) {
                *again = true;
                return;
            }
            runs.insert(tenant.to_string(), false);
        }
        let me = self.clone();
        let tenant = tenant.to_string();
        let run = async move { me.run(tenant, pass).await };
        match &self.home {
            Some(home) => drop(home.spawn(run)),
            None => drop(tokio::spawn(run)),
        }
    }

    async fn run(self: Arc<Self>, tenant: String, pass: PassFn) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(again) = self
                .runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&tenant)
            {
                *again = false;
            }
            let (p, t) = (pass.clone(), tenant.clone());
            let task = match self.background.then(background_threads).flatten() {
                Some(threads) => threads.spawn_blocking(move || p(&t)),
                None => tokio::task::spawn_blocking(move || p(&t)),
            };
            match task.await {
                Ok(Ok(n)) if n > 0 => backoff = FIRST_BACKOFF,
                Ok(Ok(_)) => {
                    let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
                    if runs.get(&tenant).copied().unwrap_or(false) {
                        continue;
                    }
                    runs.remove(&tenant);
                    return;
                }
                Ok(Err(e)) => {
                    tracing::error!(work = self.name, tenant = %tenant, error = %e, "pass failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(work = self.name, tenant = %tenant, error = %e, "pass task failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// How many nice steps below request handling background passes run, for background
/// threads started from now on (process-wide: `App::open` sets it from the
/// configuration's `background_nice`).
static BACKGROUND_NICE: AtomicU8 = AtomicU8::new(crate::config::DEFAULT_BACKGROUND_NICE);

/// Sets how many nice steps below request handling background passes run (0 to 19; 0
/// runs them at request priority). Applies to background threads started afterwards; the
/// setting is process-wide, so with several hosts in one process the last one opened wins.
pub fn set_background_nice(steps: u8) {
    BACKGROUND_NICE.store(steps.min(MAX_NICE_STEPS), Ordering::Relaxed);
}

/// The largest nice increment: Linux nice values run from -20 to 19.
const MAX_NICE_STEPS: u8 = 19;

/// The threads background passes run on: a runtime of their own (one worker for its
/// timers, and its blocking pool for the passes), every thread lowered in priority as it
/// starts. Built on first use and kept for the life of the process; `None` if it could not
/// be built (no thread could start), and then background passes share the request threads'
/// blocking pool, as they did before they had threads of their own.
fn background_threads() -> Option<&'static tokio::runtime::Runtime> {
    static THREADS: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let threads = THREADS.get_or_init(|| {
        // The priority of the thread that first needs background work (a request-handling
        // thread): background threads run `BACKGROUND_NICE` steps below it. A background
        // thread's own children would otherwise inherit its lowered priority and go lower.
        let base = thread_nice();
        threads_of_their_own(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("weft-background")
                .on_thread_start(move || {
                    mark_background_thread();
                    let steps = i32::from(BACKGROUND_NICE.load(Ordering::Relaxed));
                    set_thread_nice((base + steps).min(i32::from(MAX_NICE_STEPS)));
                }),
            "background work runs at request priority",
        )
    });
    threads.as_ref()
}

/// The cores this process may run on; 2 (the smallest machine Weft targets) if the system
/// cannot say.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The threads channel adapters' sends run on: a runtime of their own at request
/// priority, one worker per core (a send is CPU work between provider round trips). A
/// delivery pass only takes, starts and records attempts; the sends it starts run here,
/// beside it. On the request threads instead, a burst of sends queued API requests behind
/// it (`POST /v1/messages` p50 8 ms here, 0.8-1 s there, at 5,000 sends/s: BENCHMARKS.md,
/// session 23), and on the pass's own thread they ran one after another. Built on first
/// use (by a delivery pass, at request priority) and kept for the life of the process;
/// `None` if it could not be built, and then sends run on the request threads.
pub(crate) fn send_threads() -> Option<&'static tokio::runtime::Runtime> {
    static THREADS: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    THREADS
        .get_or_init(|| {
            threads_of_their_own(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cores())
                    .thread_name("weft-send"),
                "sends share the request threads",
            )
        })
        .as_ref()
}

/// Builds `builder`'s runtime (timers and I/O enabled); `None`, logged with `otherwise`
/// (what happens instead), if no thread could start.
fn threads_of_their_own(
    builder: &mut tokio::runtime::Builder,
    otherwise: &str,
) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .inspect_err(
            |e| tracing::error!(error = %e, "could not start threads of their own; {otherwise}"),
        )
        .ok()
}

thread_local! {
    /// Whether this thread runs background passes (see [`background_threads`]).
    static BACKGROUND: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that runs background passes at a lowered priority.
pub(crate) fn mark_background_thread() {
    BACKGROUND.with(|b| b.set(true));
}

/// Whether the calling thread runs background passes: such a thread may wait long for a
/// core, so it should not hold others up (the store's combiner hands its lead elsewhere).
pub(crate) fn on_background_thread() -> bool {
    BACKGROUND.with(std::cell::Cell::get)
}

/// The calling thread's nice value (Linux keeps one per thread).
#[cfg(target_os = "linux")]
fn thread_nice() -> i32 {
    // SAFETY: getpriority and gettid only read the calling thread's scheduling attributes.
    #[allow(unsafe_code)]
    let nice = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    };
    nice
}

/// Sets the calling thread's nice value; a failure is logged and the thread keeps its
/// priority (only raising priority needs privileges, and this only lowers it).
#[cfg(target_os = "linux")]
fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority and gettid change only the calling thread's scheduling priority.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}

/// Elsewhere a thread's priority is left as it is.
#[cfg(not(target_os = "linux"))]
fn thread_nice() -> i32 {
    0
}

/// Elsewhere a thread's priority is left as it is.
#[cfg(not(target_os = "linux"))]
fn set_thread_nice(_nice: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Runs one pass of `loops` and answers the nice value of the thread it ran on.
    async fn nice_of_a_pass(loops: &Arc<TenantLoops>) -> i32 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        let pass: PassFn = Arc::new(move |_| {
            if let Some(tx) = tx.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = tx.send(thread_nice());
            }
            Ok(0)
        });
        loops.wake("t_test", pass);
        rx.await.expect("the pass ran")
    }

    #[tokio::test]
    async fn background_passes_run_at_a_lower_priority_than_request_passes() {
        let here = thread_nice();
        let request = nice_of_a_pass(&TenantLoops::new("request work")).await;
        let background = nice_of_a_pass(&TenantLoops::background("background work")).await;
        assert_eq!(request, here, "request passes keep the caller's priority");
        let expected = (here + i32::from(BACKGROUND_NICE.load(Ordering::Relaxed))).min(19);
        assert_eq!(background, expected);
        assert!(
            here >= 19 || background > request,
            "background {background} should be nicer than request {request}"
        );
    }
}
