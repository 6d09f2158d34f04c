//! Structured logs to stderr: text for people, JSON for collectors.
//!
//! The level comes from `log.level` unless `RUST_LOG` is set. JSON lines are
//! flat: the fields of the spans an event happens in (`job`, `server`,
//! `run_id`, `file_id`) sit beside its own, where a SIEM indexes them.
//! Secrets are
//! kept out by type (`config::Secret` prints as `***`), and the libraries
//! that echo protocol lines (suppaftp's `CC OUT: PASS ...`) are capped.

use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

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
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
    };
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, the
/// event's fields, and the fields of every span it is in (innermost wins).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        obj.insert("level".into(), event.metadata().level().as_str().into());
        obj.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                // JsonFields stores each span's fields as one JSON object.
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(f)
                {
                    obj.extend(fields);
                }
            }
        }
        let mut visitor = JsonVisitor(&mut obj);
        event.record(&mut visitor);
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// Writes an event's fields into a JSON object: numbers and booleans as
/// such, everything else as its `Display`/`Debug` text.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_i64(&mut self, f: &tracing::field::Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &tracing::field::Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}
