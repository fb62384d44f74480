//! Sticky experiment assignment and the `Experiment Viewed` exposures it leads to.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::settings::Experiment;

/// A stable 64-bit hash of `parts`: FNV-1a over the bytes with a separator, then the
/// splitmix64 finalizer so nearby inputs spread over the whole range. Fixed here (not
/// `DefaultHasher`, which may change between Rust releases) because assignments must
/// survive upgrades.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The variant of `experiment` that visitor `unit` (profile id, or anonymous id) is in:
/// the same for the same unit every time, weighted by the variants' weights.
pub fn assign<'e>(experiment: &'e Experiment, unit: &str) -> &'e str {
    let total: u64 = experiment
        .variants
        .iter()
        .map(|v| u64::from(v.weight))
        .sum();
    let mut point = stable_hash(&[&experiment.id, unit]) % total.max(1);
    for v in &experiment.variants {
        if point < u64::from(v.weight) {
            return &v.id;
        }
        point -= u64::from(v.weight);
    }
    // Unreachable with validated settings (weights ≥ 1); the first arm is the safe answer.
    &experiment.variants[0].id
}

/// How long one visitor's view of one variant counts as one exposure: a browsing
/// session, as analytics tools count sessions.
pub const EXPOSURE_WINDOW_MS: i64 = 30 * 60_000;

/// Remembered exposures before a shard forgets them all: about 64 MiB at most, and a
/// forgotten exposure only costs one duplicate event, which the message id dedups.
const MAX_REMEMBERED: usize = 1_000_000;

/// Shards of the exposure memory.
const SHARDS: usize = 16;

/// Which (tenant, visitor, experiment, variant) exposures were recorded lately.
#[derive(Debug)]
pub struct Exposures {
    shards: Vec<Mutex<HashMap<u64, i64>>>,
}

impl Default for Exposures {
    fn default() -> Self {
        Exposures {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Exposures {
    /// Whether exposure `key` (a [`stable_hash`]) should be recorded at `now`: the first
    /// time in [`EXPOSURE_WINDOW_MS`].
    pub fn first_in_window(&self, key: u64, now: i64) -> bool {
        let mut shard = self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= MAX_REMEMBERED / SHARDS {
            shard.clear();
        }
        match shard.get(&key) {
            Some(at) if now - at < EXPOSURE_WINDOW_MS => false,
            _ => {
                shard.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalize::settings::Variant;

    fn exp(weights: &[u32]) -> Experiment {
        Experiment {
            id: "hero-2026".into(),
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    id: format!("v{i}"),
                    weight: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn assignment_is_sticky_and_follows_the_weights() {
        let e = exp(&[50, 50]);
        let mut counts = [0u32; 2];
        for i in 0..20_000 {
            let unit = format!("p_{i:032x}");
            let v = assign(&e, &unit);
            assert_eq!(v, assign(&e, &unit), "not sticky for {unit}");
            counts[usize::from(v == "v1")] += 1;
        }
        // 50/50 within 2 percentage points over 20,000 visitors.
        assert!((9_600..=10_400).contains(&counts[0]), "{counts:?}");
        let skewed = exp(&[90, 10]);
        let v1 = (0..20_000)
            .filter(|i| assign(&skewed, &format!("a-{i}")) == "v1")
            .count();
        assert!(
            (1_600..=2_400).contains(&v1),
            "{v1} of 20,000 in the 10% arm"
        );
    }

    /// `stable_hash(["hero-2026", "p_1"])` when assignments shipped.
    const PINNED: u64 = 0x8df3_b92f_da8c_53ce;

    #[test]
    fn the_hash_is_fixed_across_releases() {
        // Changing this value reshuffles every running experiment.
        assert_eq!(
            stable_hash(&["hero-2026", "p_1"]),
            stable_hash(&["hero-2026", "p_1"])
        );
        assert_ne!(stable_hash(&["a", "bc"]), stable_hash(&["ab", "c"]));
        assert_eq!(stable_hash(&["hero-2026", "p_1"]), PINNED);
    }

    #[test]
    fn one_exposure_per_window() {
        let x = Exposures::default();
        assert!(x.first_in_window(7, 0));
        assert!(!x.first_in_window(7, EXPOSURE_WINDOW_MS - 1));
        assert!(x.first_in_window(7, EXPOSURE_WINDOW_MS));
        assert!(x.first_in_window(8, 1));
    }
}
