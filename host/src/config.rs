//! Server and runtime configuration: strict TOML with documented defaults.
//!
//! Every default carries a one-line reason. Unknown fields are refused so a typo in a
//! limit cannot silently leave the default in place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kind::PluginKind;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Format version of this file; only `1` exists.
    pub config_version: u32,
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory for the sled database, blobs and compiled artifacts.
    pub data_dir: PathBuf,
    /// Runtime limits.
    pub runtime: RuntimeConfig,
    /// The server's public base URL (`https://weft.example.vn`). When set, links in
    /// messages are rewritten to `<public_url>/v1/c/…` so clicks reach the delivery log on
    /// every channel, not only those whose provider reports clicks.
    pub public_url: Option<String>,
    /// Web chat.
    pub chat: ChatConfig,
    /// Edge personalization.
    pub personalize: PersonalizeConfig,
    /// How many nice steps (0 to 19) below request handling the event processor and the
    /// journey runner run. Nobody waits on them, so while a backlog drains the requests
    /// being answered (ingest, lookups, personalization) get the cores first; 0 runs them
    /// at request priority.
    #[serde(deserialize_with = "nice_steps")]
    pub background_nice: u8,
}

/// Default of [`Config::background_nice`]. 10: on 2 cores it nearly halved single-event
/// ingest's p50 at 10,000 events/s and profile lookups' p50 during a backlog, with the
/// drain's throughput within the noise (BENCHMARKS.md, session 22); in one run each, 5
/// helped less and 19 gave a longer tail.
pub const DEFAULT_BACKGROUND_NICE: u8 = 10;

/// Reads a nice increment, refusing values outside Linux's range.
fn nice_steps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let steps = i64::deserialize(d)?;
    u8::try_from(steps)
        .ok()
        .filter(|s| *s <= 19)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "background_nice must be 0 to 19 (nice steps below request handling), got {steps}"
            ))
        })
}

/// Edge-personalization settings of the server (a tenant's own are in its API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalizeConfig {
    /// Memory for cached profiles on the `/v1/personalize` path. 256 MiB holds about
    /// 250,000 profiles with a few traits, or about 40,000 with twenty recent events each.
    pub profile_cache_bytes: usize,
}

impl Default for PersonalizeConfig {
    fn default() -> Self {
        PersonalizeConfig {
            profile_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Web-chat settings of the server (a tenant's own chat settings are in its API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Visitor sockets open at once, over all tenants; more are refused with 503 before
    /// the upgrade. Each socket holds a descriptor and ~40 KiB: 10,000 is twice the
    /// 5,000-conversation design point of a 2-core box and stays well inside a 16k
    /// descriptor limit, so a flood of visitors cannot starve the store of descriptors.
    pub max_sockets: usize,
    /// Visitor sockets one tenant may hold at once: half the server's, so one brand's
    /// spike (or a script using its public key) cannot lock the other brands out.
    pub max_sockets_per_tenant: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_sockets: 10_000,
            max_sockets_per_tenant: 5_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            config_version: 1,
            // Loopback by default: an operator opts in to exposing the server.
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            runtime: RuntimeConfig::default(),
            public_url: None,
            chat: ChatConfig::default(),
            personalize: PersonalizeConfig::default(),
            background_nice: DEFAULT_BACKGROUND_NICE,
        }
    }
}

/// Engine-wide settings and per-kind limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Largest accepted component upload, in bytes.
    pub max_component_bytes: usize,
    /// Instance slots in the pooling allocator (also the cap on concurrent invocations).
    pub pool_instances: u32,
    /// Use the pooling allocator when the address space allows it.
    pub pooling: bool,
    /// Epoch tick period in microseconds; deadlines overshoot by at most about one tick.
    pub epoch_tick_us: u64,
    /// Invocations one tenant may run at once; the rest wait, so one brand cannot take the pool.
    pub tenant_concurrency: usize,
    /// Limits for journey-rule plugins.
    pub journey_rule: KindLimits,
    /// Limits for personalization plugins.
    pub personalization: KindLimits,
    /// Limits for channel-adapter plugins.
    pub channel_adapter: KindLimits,
    /// Limits for chatbot-flow plugins.
    pub chatbot_flow: KindLimits,
    /// Let `outbound-http` reach loopback, private, link-local and other non-public
    /// addresses. Off by default, so an allowlisted name that resolves inside the operator's
    /// network cannot be used to probe it; tests and the demo turn it on for their fake
    /// providers on 127.0.0.1.
    pub allow_private_networks: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            // 8 MiB: a Rust plugin is 100-500 KiB; 16x headroom for bigger runtimes,
            // small enough that an upload cannot fill the disk quickly.
            max_component_bytes: 8 * 1024 * 1024,
            // 1,000 slots as in Spin: 6 TiB of address space reserved, within 47-bit VA.
            pool_instances: 1000,
            pooling: true,
            // 1 ms: keeps the overshoot small next to the 20 ms personalization deadline,
            // and one atomic increment per ms costs nothing.
            epoch_tick_us: 1000,
            // 32: on a small edge box this lets ~30 tenants share the pool fairly.
            tenant_concurrency: 32,
            journey_rule: KindLimits::for_kind(PluginKind::JourneyRule),
            personalization: KindLimits::for_kind(PluginKind::Personalization),
            channel_adapter: KindLimits::for_kind(PluginKind::ChannelAdapter),
            chatbot_flow: KindLimits::for_kind(PluginKind::ChatbotFlow),
            allow_private_networks: false,
        }
    }
}

impl RuntimeConfig {
    /// The limits for one kind.
    pub fn limits(&self, kind: PluginKind) -> &KindLimits {
        match kind {
            PluginKind::JourneyRule => &self.journey_rule,
            PluginKind::Personalization => &self.personalization,
            PluginKind::ChannelAdapter => &self.channel_adapter,
            PluginKind::ChatbotFlow => &self.chatbot_flow,
        }
    }

    /// Mutable limits for one kind (for tests and embedders).
    pub fn limits_mut(&mut self, kind: PluginKind) -> &mut KindLimits {
        match kind {
            PluginKind::JourneyRule => &mut self.journey_rule,
            PluginKind::Personalization => &mut self.personalization,
            PluginKind::ChannelAdapter => &mut self.channel_adapter,
            PluginKind::ChatbotFlow => &mut self.chatbot_flow,
        }
    }

    /// Largest linear memory any kind may use (sizes the pool's slots).
    pub fn max_memory_bytes(&self) -> usize {
        PluginKind::ALL
            .iter()
            .map(|k| self.limits(*k).memory_bytes)
            .max()
            .unwrap_or(0)
    }
}

/// Limits applied to every invocation of one plugin kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindLimits {
    /// Wall-clock deadline of the main call (`step`, `decide`, `send`, `turn`), in milliseconds.
    pub deadline_ms: u64,
    /// Wall-clock deadline of the secondary calls (`describe`, `capabilities`,
    /// `handle-webhook`, `refresh-credentials`), in milliseconds.
    pub aux_deadline_ms: u64,
    /// Linear memory cap, in bytes.
    pub memory_bytes: usize,
    /// Instruction (fuel) budget per invocation; `None` meters without a cap.
    pub fuel: Option<u64>,
    /// Largest input accepted, in bytes of JSON.
    pub max_input_bytes: usize,
    /// Largest output accepted, in bytes of JSON.
    pub max_output_bytes: usize,
    /// Bytes the guest may pass to the host across all host calls of one invocation.
    pub hostcall_bytes: usize,
    /// Entries the guest may hold in the host's resource table (streams, pollables).
    pub max_resources: usize,
    /// Table elements per table (function references).
    pub max_table_elements: usize,
}

impl KindLimits {
    /// The documented default limits of `kind` (see `../shared/design/runtime.md` §2).
    pub fn for_kind(kind: PluginKind) -> KindLimits {
        // 32 KB event + 32 KB context + profile: 256 KiB leaves room for big profiles.
        let input = 256 * 1024;
        // Hostcall budget: what a guest may push to the host in one invocation. 4 MiB covers
        // 64 state writes of 64 KiB; far below wasmtime's 128 MiB default.
        let hostcall = 4 * 1024 * 1024;
        // 256 handles, as Spin's key-value table: a plugin needs a handful of streams.
        let resources = 256;
        // 20,000 elements: Rust/C function tables of large plugins stay under 10,000.
        let tables = 20_000;
        // Journey rules set the baseline; the other kinds differ where noted.
        let journey = KindLimits {
            // 100 ms per journey step: a decision over a 32 KB event, not a batch job.
            deadline_ms: 100,
            aux_deadline_ms: 100,
            // 64 MiB: 2,000x a 32 KB input; rules do not need more.
            memory_bytes: 64 * 1024 * 1024,
            fuel: None,
            max_input_bytes: input,
            // 64 KiB of commands is hundreds of sends; more is a bug.
            max_output_bytes: 64 * 1024,
            hostcall_bytes: hostcall,
            max_resources: resources,
            max_table_elements: tables,
        };
        match kind {
            PluginKind::JourneyRule => journey,
            PluginKind::Personalization => KindLimits {
                // 20 ms: the page waits on it; p99 target is 10 ms. Memory 64 MiB as in
                // runtime.md: catalog slices are small.
                deadline_ms: 20,
                ..journey
            },
            PluginKind::ChannelAdapter => KindLimits {
                // 5 s per send: provider APIs answer in 100-2000 ms; beyond 5 s we retry.
                deadline_ms: 5_000,
                // 200 ms per webhook: providers time out at 5-20 s, and the work is parsing.
                aux_deadline_ms: 200,
                // 128 MiB: buffers provider responses of up to 1 MiB plus JSON trees.
                memory_bytes: 128 * 1024 * 1024,
                // 512 KiB + overhead: webhook bodies of up to 512 KiB (runtime.md).
                max_input_bytes: 640 * 1024,
                // 1 MiB: a webhook can report a batch of statuses.
                max_output_bytes: 1024 * 1024,
                // 8 MiB: a few 1 MiB HTTP bodies per send.
                hostcall_bytes: 8 * 1024 * 1024,
                ..journey
            },
            // 100 ms per turn (the customer is waiting in a chat window), 64 MiB, 64 KiB of
            // replies and slots: the journey baseline fits.
            PluginKind::ChatbotFlow => journey,
        }
    }

    /// The main-call deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

impl Config {
    /// Parses a TOML configuration, refusing unknown fields.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_file_parses() {
        let c = Config::from_toml(include_str!("../../examples/weft.toml")).expect("parses");
        assert!(!c.runtime.allow_private_networks);
        assert_eq!(c.public_url, None);
        let c = Config::from_toml(
            "public_url = \"https://weft.example.vn\"\n[runtime]\nallow_private_networks = true\n",
        )
        .expect("parses");
        assert!(c.runtime.allow_private_networks);
        assert_eq!(c.public_url.as_deref(), Some("https://weft.example.vn"));
    }

    #[test]
    fn defaults_match_the_documented_deadlines() {
        let c = RuntimeConfig::default();
        assert_eq!(c.limits(PluginKind::Personalization).deadline_ms, 20);
        assert_eq!(c.limits(PluginKind::JourneyRule).deadline_ms, 100);
        assert_eq!(c.limits(PluginKind::ChatbotFlow).deadline_ms, 100);
        assert_eq!(c.limits(PluginKind::ChannelAdapter).deadline_ms, 5_000);
        assert_eq!(c.limits(PluginKind::ChannelAdapter).aux_deadline_ms, 200);
    }

    #[test]
    fn rejects_unknown_fields_in_config_file() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn background_nice_is_read_and_refused_out_of_range() {
        assert_eq!(Config::default().background_nice, 10);
        let c = Config::from_toml("background_nice = 0\n").expect("parses");
        assert_eq!(c.background_nice, 0);
        for bad in ["20", "-1"] {
            let err = Config::from_toml(&format!("background_nice = {bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("background_nice must be 0 to 19")
                    && err.to_string().contains(&format!("got {bad}")),
                "{err}"
            );
        }
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_toml("[runtime.personalization]\ndeadline_ms = 15\naux_deadline_ms = 50\nmemory_bytes = 1048576\nmax_input_bytes = 1\nmax_output_bytes = 1\nhostcall_bytes = 1\nmax_resources = 1\nmax_table_elements = 1\n").unwrap();
        assert_eq!(c.runtime.personalization.deadline_ms, 15);
        assert_eq!(c.runtime.journey_rule.deadline_ms, 100);
    }
}
