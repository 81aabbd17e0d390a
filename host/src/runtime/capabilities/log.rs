//! `log`: a plugin's log lines, attributed to it, bounded and unforgeable.

use nats_callout_sdk::LogLevel;

use crate::runtime::{LOG_LINES_PER_CALL, State, truncate};

impl State {
    /// Plugins are untrusted: a bounded number of lines per call, each cut to 2 KiB,
    /// with line breaks and control characters escaped so that no plugin can write what
    /// looks like another log line.
    pub(crate) fn log(&mut self, level: LogLevel, message: &str) {
        if self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let plugin = &self.caps.plugin;
        let cut = truncate(message, 2048);
        let message = cut.escape_debug();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        if self.log_lines_left == 0 {
            tracing::warn!(
                plugin,
                "plugin wrote {LOG_LINES_PER_CALL} log lines in one call; further lines of \
                 this call are dropped"
            );
        }
    }
}
