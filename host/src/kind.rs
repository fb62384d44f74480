//! The four plugin kinds and what each one is granted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A plugin kind: which WIT world a component must implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// `journey-rule`: decides the steps of automated journeys.
    JourneyRule,
    /// `personalization`: decides page content at the edge.
    Personalization,
    /// `channel-adapter`: sends over and receives from one provider.
    ChannelAdapter,
    /// `chatbot-flow`: runs conversational turns.
    ChatbotFlow,
}

/// The unknown kind named in an upload or a command line.
#[derive(Debug, thiserror::Error)]
#[error("unknown plugin kind `{0}`; expected one of journey-rule, personalization, channel-adapter, chatbot-flow")]
pub struct UnknownKind(pub String);

impl PluginKind {
    /// Every kind, in documentation order.
    pub const ALL: [PluginKind; 4] = [
        PluginKind::JourneyRule,
        PluginKind::Personalization,
        PluginKind::ChannelAdapter,
        PluginKind::ChatbotFlow,
    ];

    /// The kebab-case name, which is also the WIT world name.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::JourneyRule => "journey-rule",
            PluginKind::Personalization => "personalization",
            PluginKind::ChannelAdapter => "channel-adapter",
            PluginKind::ChatbotFlow => "chatbot-flow",
        }
    }

    /// The interface the component must export, without the package version.
    pub fn export_interface(self) -> &'static str {
        match self {
            PluginKind::JourneyRule => "weft:plugin/journey",
            PluginKind::Personalization => "weft:plugin/personalize",
            PluginKind::ChannelAdapter => "weft:plugin/adapter",
            PluginKind::ChatbotFlow => "weft:plugin/flow",
        }
    }

    /// The `weft:plugin` interfaces this kind may import.
    pub fn granted_weft_imports(self) -> &'static [&'static str] {
        const COMMON: &[&str] = &[
            "weft:plugin/types",
            "weft:plugin/profile-store",
            "weft:plugin/state",
            "weft:plugin/config",
            "weft:plugin/clock",
            "weft:plugin/log",
        ];
        const ADAPTER: &[&str] = &[
            "weft:plugin/types",
            "weft:plugin/profile-store",
            "weft:plugin/state",
            "weft:plugin/config",
            "weft:plugin/clock",
            "weft:plugin/log",
            "weft:plugin/crypto",
            "weft:plugin/outbound-http",
        ];
        match self {
            PluginKind::ChannelAdapter => ADAPTER,
            _ => COMMON,
        }
    }

    /// Whether this kind gets outbound HTTP and crypto.
    pub fn has_network(self) -> bool {
        matches!(self, PluginKind::ChannelAdapter)
    }
}

/// The WASI interfaces every kind receives, so ordinary language runtimes work. Stdio is
/// captured, the environment is empty and clocks come from the host clock. Filesystem,
/// sockets and HTTP are never here.
pub const GRANTED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Strips the `@version` suffix of an interface name.
pub fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PluginKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PluginKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_by_its_world_name() {
        for k in PluginKind::ALL {
            assert_eq!(k.as_str().parse::<PluginKind>().unwrap(), k);
        }
    }

    #[test]
    fn rejects_unknown_kind_with_the_name_in_the_message() {
        let err = "webhook".parse::<PluginKind>().unwrap_err();
        assert!(err.to_string().contains("`webhook`"));
    }

    #[test]
    fn only_adapters_are_granted_outbound_http() {
        for k in PluginKind::ALL {
            let has = k
                .granted_weft_imports()
                .contains(&"weft:plugin/outbound-http");
            assert_eq!(has, k == PluginKind::ChannelAdapter, "{k}");
        }
    }
}
