//! Per-tenant background loops: at most one task per key (a tenant, or one lane of a
//! tenant's work) runs a pass function until it reports no more work; keys run in
//! parallel. Used by the event processor (one loop per tenant), the journey runner (one
//! per tenant and lane) and the delivery worker, whose writes to one key's data must not
//! interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
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
    /// Tenants with a running loop → whether new work arrived during the current pass.
    runs: Mutex<HashMap<String, bool>>,
}

impl std::fmt::Debug for TenantLoops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLoops")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TenantLoops {
    /// Loops named `name` (for logs).
    pub fn new(name: &'static str) -> Arc<TenantLoops> {
        Arc::new(TenantLoops {
            name,
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
        tokio::spawn(async move { me.run(tenant, pass).await });
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
            match tokio::task::spawn_blocking(move || p(&t)).await {
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
