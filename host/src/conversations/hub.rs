//! Live web-chat sockets by conversation, so a bot reply, an agent reply or a state change
//! reaches every tab the visitor has open. Sharded: sockets of different conversations
//! rarely share a lock, and no lock is held while a frame is sent.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

/// Shards of the socket table: far more than cores, so two busy conversations seldom meet.
const SHARDS: usize = 64;

/// Frames queued per socket before the slowest reader is dropped: a visitor's tab that
/// stopped reading must not make the host hold unbounded memory.
pub const SOCKET_QUEUE: usize = 64;

/// One serialized frame, shared by every socket it goes to.
pub type Frame = Arc<str>;

type Table = HashMap<(String, String), Vec<(u64, mpsc::Sender<Frame>)>>;

/// The live sockets.
pub struct Hub {
    shards: Vec<Mutex<Table>>,
    hasher: std::collections::hash_map::RandomState,
    next_id: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// A socket's registration; dropping it unregisters the socket.
pub struct Subscription {
    hub: Arc<Hub>,
    key: (String, String),
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shard = self.hub.shard(&self.key);
        if let Some(list) = shard.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                shard.remove(&self.key);
            }
        }
    }
}

impl Hub {
    fn shard(&self, key: &(String, String)) -> std::sync::MutexGuard<'_, Table> {
        self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a socket of `conv`; frames for it arrive on the receiver.
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        conv: &str,
    ) -> (Subscription, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let key = (tenant.to_string(), conv.to_string());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shard(&key)
            .entry(key.clone())
            .or_default()
            .push((id, tx));
        (
            Subscription {
                hub: self.clone(),
                key,
                id,
            },
            rx,
        )
    }

    /// Sends `frame` to every socket of `conv`; returns how many took it. A socket whose
    /// queue is full is dropped (its task sees the channel close and ends the socket).
    pub fn publish(&self, tenant: &str, conv: &str, frame: Frame) -> usize {
        let key = (tenant.to_string(), conv.to_string());
        let targets: Vec<(u64, mpsc::Sender<Frame>)> = match self.shard(&key).get(&key) {
            Some(list) => list.clone(),
            None => return 0,
        };
        let mut sent = 0;
        let mut full = Vec::new();
        for (id, tx) in targets {
            match tx.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(_) => full.push(id),
            }
        }
        if !full.is_empty() {
            let mut shard = self.shard(&key);
            if let Some(list) = shard.get_mut(&key) {
                list.retain(|(id, _)| !full.contains(id));
                if list.is_empty() {
                    shard.remove(&key);
                }
            }
        }
        sent
    }

    /// Whether any socket of `conv` is open.
    pub fn connected(&self, tenant: &str, conv: &str) -> bool {
        let key = (tenant.to_string(), conv.to_string());
        self.shard(&key).contains_key(&key)
    }

    /// Open sockets in all.
    pub fn sockets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_reach_every_socket_of_the_conversation_only() {
        let hub = Arc::new(Hub::default());
        let (_a, mut ra) = hub.subscribe("t", "c1");
        let (_b, mut rb) = hub.subscribe("t", "c1");
        let (_c, mut rc) = hub.subscribe("t", "c2");
        assert_eq!(hub.publish("t", "c1", "x".into()), 2);
        assert_eq!(&*ra.recv().await.unwrap(), "x");
        assert_eq!(&*rb.recv().await.unwrap(), "x");
        assert!(rc.try_recv().is_err());
        assert_eq!(hub.publish("other-tenant", "c1", "y".into()), 0);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_and_a_stalled_reader_is_dropped() {
        let hub = Arc::new(Hub::default());
        let (a, _ra) = hub.subscribe("t", "c");
        for _ in 0..SOCKET_QUEUE {
            hub.publish("t", "c", "f".into());
        }
        // The queue is full: this frame drops the socket instead of queueing more.
        assert_eq!(hub.publish("t", "c", "f".into()), 0);
        assert!(!hub.connected("t", "c"));
        drop(a);
        let (b, _rb) = hub.subscribe("t", "c");
        assert_eq!(hub.sockets(), 1);
        drop(b);
        assert_eq!(hub.sockets(), 0);
    }
}
