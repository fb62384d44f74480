//! Sends from outside a journey (`POST /v1/messages`): each intent is checked against the
//! messaging policy and recorded in the outbox for the delivery worker.
//!
//! Intents of one tenant that arrive while others are being recorded wait and are then
//! recorded together, in arrival order, as one sled batch ([`Group`](crate::store::group::Group)):
//! a batch costs sled two log-buffer writes whatever it holds. Each intent reads what the
//! earlier ones wrote, so the same `intent_id` twice in one group is recorded once.

use std::sync::Arc;

use super::{log, Deliveries};
use crate::messaging::outbox::{self, OutboxRecord};
use crate::runtime::bindings::exports::journey::SendIntent;
use crate::store::{Backend, Space, Staged, StoreError};

/// One intent to record.
pub struct Intake {
    /// Who receives it: an identity kind and value (`phone`, `+84901234567`).
    pub to: (String, String),
    /// The intent.
    pub intent: SendIntent,
    /// When it was submitted, ms since the epoch.
    pub now: i64,
}

impl Deliveries {
    /// Records `intake` for `tenant` in the outbox (not yet durable; the caller commits).
    /// Returns `None` when no profile has the identity, else whether it was new (a known
    /// `intent_id` records nothing) and the intent's record. The wait holds no thread:
    /// the group it joins runs on one blocking thread.
    pub async fn record_intake(
        self: &Arc<Self>,
        tenant: &str,
        intake: Intake,
    ) -> Result<Option<(bool, OutboxRecord)>, StoreError> {
        let (me, owned) = (self.clone(), tenant.to_string());
        self.intake_groups
            .of(tenant)
            .submit(intake, move |group| me.record_group(&owned, group))
            .await
            .unwrap_or_else(|lost| Err(lost.into()))
    }

    /// Records several intents of `tenant` as one batch; a failed batch fails them all.
    fn record_group(
        &self,
        tenant: &str,
        group: Vec<Intake>,
    ) -> Vec<Result<Option<(bool, OutboxRecord)>, StoreError>> {
        Staged::apply_each(
            self.db.backend().clone(),
            Space::tenant(tenant),
            group,
            |staged, sp, intake| record_one(staged, sp, intake),
        )
    }
}

/// One intent: the policy's decision and the outbox entry, staged in `b`.
fn record_one(
    b: &dyn Backend,
    sp: &Space,
    Intake { to, intent, now }: Intake,
) -> Result<Option<(bool, OutboxRecord)>, StoreError> {
    let Some(pid) = crate::profiles::owner(b, sp, &to.0, &to.1)? else {
        return Ok(None);
    };
    let Some(profile) = crate::profiles::get(b, sp, &pid)? else {
        return Ok(None);
    };
    let intent_id = intent.intent_id.clone();
    let (mut ops, hold) = outbox::submit(b, sp, "api", "api", &profile, intent, now)?;
    let created = !ops.is_empty();
    if let Some(until) = hold {
        // Quiet hours: the delivery worker looks again when they end.
        ops.push(log::due_op(until, &intent_id));
    }
    b.apply_batch(sp, &ops)?;
    Ok(log::get(b, sp, &intent_id)?.map(|r| (created, r)))
}
