//! What operations watch while `ferry run` runs: Prometheus metrics at
//! `/metrics`, a health check at `/healthz` fed by the agent loop's
//! heartbeat, and systemd's notify protocol (READY, WATCHDOG, STOPPING).
//!
//! The engine and the agent know nothing of Prometheus: the agent hands each
//! run's report to [`Metrics::after_run`], and gauges are read from the
//! engine and the ledger when a scraper asks.

mod heartbeat;
mod http;
mod metrics;

pub use heartbeat::{Heartbeat, STALL_FILE_ENV};
pub use http::serve;
pub use metrics::{Metrics, prometheus_text};
