//! `weft:plugin/log`: structured logging into tracing and the invocation record.

use super::weft;
use crate::runtime::host::{HostState, LogLine, MAX_LOG_LINES, MAX_LOG_MESSAGE};
use weft::log::Level;

/// Truncates `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl weft::log::Host for HostState {
    fn emit(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.enter()?;
        if self.logs.len() >= MAX_LOG_LINES {
            self.logs_dropped += 1;
            return Ok(());
        }
        let message = truncate(message, MAX_LOG_MESSAGE);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(16)
            .map(|(k, v)| (truncate(k, 64), truncate(v, 256)))
            .collect();
        let (tenant, plugin) = (&self.installation.tenant, &self.installation.plugin);
        let level = match level {
            Level::Debug => {
                tracing::debug!(target: "weft::plugin", %tenant, %plugin, ?fields, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(target: "weft::plugin", %tenant, %plugin, ?fields, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(target: "weft::plugin", %tenant, %plugin, ?fields, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(target: "weft::plugin", %tenant, %plugin, ?fields, "{message}");
                "error"
            }
        };
        self.logs.push(LogLine {
            level: level.into(),
            message,
            fields,
        });
        Ok(())
    }
}
