//! The typed configuration the rest of ferry sees: no raw YAML, no strings
//! where a duration, a glob, a schedule or a time zone is meant.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use globset::GlobSet;

pub use super::raw::{
    AfterPush, CatchUp, Direction, LogFormat, SmtpSecurity, TlsMode, Upload, Verify, WatchMode,
};
pub use crate::edi::Environment;
use crate::schedule::Schedule;

/// The whole configuration: agent settings and every job, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `ferry.yaml` this was loaded from.
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub jobs_dir: PathBuf,
    pub log: LogSettings,
    pub defaults: Defaults,
    pub servers: BTreeMap<String, Arc<Server>>,
    pub mail: Option<Mail>,
    pub jobs: BTreeMap<String, Job>,
    /// Job runs at once across the agent; default: the number of servers.
    pub max_parallel_jobs: u32,
    /// How long in-flight files may finish after SIGTERM before they are aborted.
    pub shutdown_grace: Duration,
    /// `/metrics` and `/healthz` for `ferry run`; `None`: not served (the default).
    pub metrics: Option<MetricsSettings>,
    /// Things `check` warns about that do not stop a run (a `jobs/x.yml`).
    pub notices: Vec<String>,
    /// Every file this was loaded from, with the SHA-256 of the bytes read
    /// (`ferry.yaml` first), for the audit trail.
    pub sources: Vec<(PathBuf, String)>,
    pub retention: Retention,
}

/// How long records are kept; `None`: for ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished files, their events, runs, resolved alerts and audit rows.
    pub ledger: Option<Duration>,
    /// Archived outbound files (`state_dir/archive/<job>/<date>/`).
    pub archive: Option<Duration>,
}

/// Where `ferry run` serves Prometheus metrics and its health check.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// An IP address and port; loopback unless `allow_remote` says otherwise.
    pub listen: std::net::SocketAddr,
    /// `/healthz` answers 503 once the agent's loop has not beaten for this long.
    pub stall_after: Duration,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `ferry=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct Defaults {
    pub timezone: Tz,
    pub retry: RetryPolicy,
}

/// Exponential backoff with full jitter between `initial_delay` and `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included; at least 1.
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
        }
    }
}

/// A secret read from the environment or a file. It prints as `***` in
/// every `Debug` and `Display`, so it cannot leak through logs by accident.
#[derive(Clone, PartialEq, Eq)]
/// A password: never printed (Debug and Display show `***`) and zeroed in
/// memory when dropped.
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(zeroize::Zeroizing::new(s))
    }
    /// The one way to read the secret: call sites are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// A trading partner's FTPS server.
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: String,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server certificate (DER).
    pub pin_sha256: Option<[u8; 32]>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The versions this partner may negotiate, never empty; `None` (the
    /// default) offers TLS 1.2 and moves to 1.3 only if the server refuses
    /// 1.2 (see `transport::tls` for why 1.2 is preferred).
    pub tls_versions: Option<Vec<TlsVersion>>,
    pub passive_nat_workaround: bool,
    /// Follow a PASV reply that names another host than the control
    /// connection's (off: such a reply is answered by connecting to the
    /// control connection's address, with a warning).
    pub trust_pasv_address: bool,
    /// Bound on any single protocol step.
    pub timeout: Duration,
    /// Concurrent sessions to this server, across all jobs.
    pub max_connections: u32,
    /// The inbox takes each file away as soon as it is complete (a
    /// clearinghouse's write-once inbox): a complete upload is the proof of
    /// delivery, and absence afterwards means delivered.
    pub consumes: bool,
    /// A listing with more entries than this is an error (a hostile or
    /// broken server cannot make ferry's memory grow without bound).
    pub max_listing: u64,
    /// `environment`: the envelope gate refuses ISA15 `P` to a test server
    /// and `T` to a production one.
    pub environment: Option<Environment>,
}

impl Server {
    /// A server with every optional setting at its default: explicit TLS,
    /// system trust roots, 30 s steps, 2 sessions. Tests and tools start from
    /// this and set what they need, so a new setting never breaks them.
    pub fn new(name: &str, host: &str, port: u16) -> Server {
        Server {
            name: name.to_string(),
            host: host.to_string(),
            port,
            tls: TlsMode::Explicit,
            user: "anonymous".to_string(),
            password: None,
            ca_file: None,
            pin_sha256: None,
            client_cert: None,
            client_key: None,
            tls_versions: None,
            passive_nat_workaround: false,
            trust_pasv_address: false,
            timeout: Duration::from_secs(30),
            max_connections: 2,
            consumes: false,
            max_listing: 100_000,
            environment: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub timeout: Duration,
    /// PEM CAs for the SMTP server's certificate; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    /// At most one alert per job and cause within this window.
    pub repeat_after: Duration,
    /// `digest: daily at HH:MM`: a summary of the previous day, at this local time.
    pub digest: Option<chrono::NaiveTime>,
    /// The zone `digest` is read in (`defaults.timezone`).
    pub timezone: Tz,
}

/// What happens to a remote file once its download is verified and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPull {
    Delete,
    Keep,
    /// Move to this remote folder.
    Move(String),
}

/// How a push job's folder is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub mode: WatchMode,
    /// For `poll`: how often the folder is listed.
    pub poll_interval: Duration,
    /// Events are hints: the folder is also rescanned this often.
    pub rescan_interval: Duration,
}

/// Direction-specific settings; the type makes a push job with `after_pull`
/// impossible to represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Push {
        /// `None` unless `watch: true`.
        watch: Option<Watch>,
        upload: Upload,
        /// Ends every temp name on the server (`.part` by default).
        temp_suffix: String,
        after: AfterPush,
    },
    Pull {
        after: AfterPull,
    },
}

/// Include/exclude patterns, compiled once.
#[derive(Debug, Clone)]
pub struct FileFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    include_set: GlobSet,
    exclude_set: GlobSet,
}

impl FileFilter {
    pub fn new(
        include: Vec<String>,
        exclude: Vec<String>,
        include_set: GlobSet,
        exclude_set: GlobSet,
    ) -> Self {
        FileFilter {
            include,
            exclude,
            include_set,
            exclude_set,
        }
    }

    /// Whether a plain file name is picked up: included, not excluded, and
    /// never a dot-file or a `*.part` temp file.
    pub fn matches(&self, name: &str) -> bool {
        !name.starts_with('.')
            && !name.ends_with(".part")
            && self.include_set.is_match(name)
            && !self.exclude_set.is_match(name)
    }
}

/// One transfer job, from `jobs/<name>.yaml`.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub file: PathBuf,
    pub direction: Direction,
    pub server: Arc<Server>,
    pub local_dir: PathBuf,
    pub remote_dir: String,
    pub filter: FileFilter,
    pub schedule: Option<Schedule>,
    pub timezone: Tz,
    pub flow: Flow,
    /// A local file is ready once size and mtime hold still this long.
    pub stable_for: Duration,
    pub verify: Verify,
    pub retry: RetryPolicy,
    pub alert_to: Vec<String>,
    /// Runs missed while the agent was down: one catch-up run at start, or none.
    pub catch_up: CatchUp,
    /// Alerts name files by number and hash only (names can carry member identifiers).
    pub redact_file_names: bool,
    /// Claims awareness (`edi:`); `None` when the job treats files as bytes.
    pub edi: Option<Edi>,
    /// Pull: a file should arrive in a window after each tick of this schedule.
    pub expect: Option<Expect>,
}

/// Deadlines for the acknowledgements of an interchange a push job sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckDeadlines {
    /// TA1, expected only when the interchange asked for one (ISA14 = 1).
    pub ta1: Option<Duration>,
    pub ack999: Option<Duration>,
    /// 277CA, for 837 claim sets.
    pub ca277: Option<Duration>,
}

/// A job's `edi:` settings; the push-only and pull-only keys are checked at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edi {
    /// Push: block a file that fails the structural checks.
    pub validate: bool,
    /// Push: ISA06 must be this.
    pub sender_id: Option<String>,
    /// Push: ISA08 must be this.
    pub receiver_id: Option<String>,
    /// Push: an interchange or group control number sent to this partner
    /// within this window is not sent again.
    pub duplicate_window: Duration,
    pub acks: AckDeadlines,
    /// Pull: the push jobs whose interchanges this job's files acknowledge.
    pub acks_for: Vec<String>,
    /// Pull: those push jobs' deadlines (filled in once every job is read),
    /// so a run of this job can tell what is overdue.
    pub deadlines_for: Vec<(String, AckDeadlines)>,
}

/// `expect:` on a pull job.
#[derive(Debug, Clone)]
pub struct Expect {
    pub schedule: Schedule,
    pub within: Duration,
}

impl Job {
    pub fn watch(&self) -> bool {
        self.watch_settings().is_some()
    }

    pub fn watch_settings(&self) -> Option<Watch> {
        match self.flow {
            Flow::Push { watch, .. } => watch,
            Flow::Pull { .. } => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Push => "push",
            Direction::Pull => "pull",
        }
    }
}

impl Verify {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verify::Auto => "auto",
            Verify::Hash => "hash",
            Verify::Size => "size",
            Verify::None => "none",
        }
    }
}

/// Parses `500ms`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let expected = "expected a number and a unit: 500ms, 30s, 10m, 2h, 1d or 6y";
    if num.is_empty() {
        return Err(format!("invalid duration '{s}': {expected}"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': number too large"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "y" => 365 * 86_400_000,
        "" => return Err(format!("invalid duration '{s}': missing unit; {expected}")),
        _ => {
            return Err(format!(
                "invalid duration '{s}': unknown unit '{unit}'; {expected}"
            ));
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration '{s}': too large"))
}

/// Renders a duration the way it is written in the configuration.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in [
            "",
            "s",
            "10",
            "10 minutes",
            "1.5h",
            "-1s",
            "99999999999999999999s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .contains("unknown unit 'x'")
        );
    }

    #[test]
    fn durations_print_as_written() {
        for s in ["500ms", "30s", "10m", "2h", "1d", "90s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }
}
