//! Structured logs to stderr: text for people, JSON for collectors.
//!
//! The level comes from `log.level` unless `RUST_LOG` is set. Secrets are
//! kept out by type (`config::Secret` prints as `***`), and the libraries
//! that echo protocol lines (suppaftp's `CC OUT: PASS ...`) are capped.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Library modules that log protocol lines verbatim at `trace`, where a
/// password would appear (suppaftp: `CC OUT: PASS ...`). They are capped
/// at `debug` whatever the filter asks, so Guarantee 6 holds at every level.
const VERBATIM: &[&str] = &[
    "suppaftp::async_ftp::tokio_ftp::control",
    "suppaftp::sync_ftp::control",
];

/// `filter` with the verbatim protocol loggers capped at `debug`.
fn with_secrets_capped(filter: &str) -> String {
    let mut f = filter.to_string();
    for target in VERBATIM {
        f.push_str(&format!(",{target}=debug"));
    }
    f
}

/// Installs the global subscriber; later calls (tests) are ignored.
pub fn init(settings: &LogSettings) {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    let filter = EnvFilter::try_new(with_secrets_capped(&base))
        .unwrap_or_else(|_| EnvFilter::new(with_secrets_capped("info")));
    // Colour only for a person at a terminal, and never with NO_COLOR.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
