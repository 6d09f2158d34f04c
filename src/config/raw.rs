//! The YAML documents exactly as written, with the position of every value.
//!
//! Nothing here is interpreted: `super::validate` turns these into the typed
//! configuration and reports every problem with its `file:line:column`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value together with where it was written.
pub type At<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub state_dir: Option<At<String>>,
    pub jobs_dir: Option<At<String>>,
    pub log: Option<Log>,
    pub defaults: Option<Defaults>,
    #[serde(default)]
    pub servers: BTreeMap<String, Server>,
    pub mail: Option<Mail>,
    pub max_parallel_jobs: Option<At<u32>>,
    pub shutdown_grace: Option<At<String>>,
    pub retention: Option<Retention>,
    pub metrics: Option<Metrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub ledger: Option<At<String>>,
    pub archive: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: Option<At<String>>,
    pub allow_remote: Option<At<bool>>,
    pub stall_after: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: Option<At<LogFormat>>,
    pub level: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub timezone: Option<At<String>>,
    pub retry: Option<Retry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub attempts: Option<At<u32>>,
    pub initial_delay: Option<At<String>>,
    pub max_delay: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: At<String>,
    pub port: Option<At<u16>>,
    pub tls: Option<At<TlsMode>>,
    pub allow_insecure: Option<At<bool>>,
    pub user: Option<At<String>>,
    pub password: Option<At<String>>,
    pub password_file: Option<At<String>>,
    pub ca_file: Option<At<String>>,
    pub pin_sha256: Option<At<String>>,
    pub client_cert: Option<At<String>>,
    pub client_key: Option<At<String>>,
    pub tls_versions: Option<At<Vec<At<String>>>>,
    pub passive_nat_workaround: Option<At<bool>>,
    pub trust_pasv_address: Option<At<bool>>,
    pub timeout: Option<At<String>>,
    pub max_connections: Option<At<u32>>,
    pub consumes: Option<At<bool>>,
    pub max_listing: Option<At<u64>>,
    pub environment: Option<At<Environment>>,
}

/// `servers.<name>.environment`: whether the partner's server takes test or production data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Production,
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Explicit,
    Implicit,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    pub smtp: Smtp,
    pub from: At<String>,
    pub to: At<Vec<At<String>>>,
    pub repeat_after: Option<At<String>>,
    pub digest: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: At<String>,
    pub port: Option<At<u16>>,
    pub security: Option<At<SmtpSecurity>>,
    pub user: Option<At<String>>,
    pub password: Option<At<String>>,
    pub password_file: Option<At<String>>,
    pub timeout: Option<At<String>>,
    pub ca_file: Option<At<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub direction: At<Direction>,
    pub server: At<String>,
    pub local_dir: At<String>,
    pub remote_dir: At<String>,
    pub include: Option<At<Vec<At<String>>>>,
    pub exclude: Option<At<Vec<At<String>>>>,
    pub schedule: Option<At<String>>,
    pub timezone: Option<At<String>>,
    pub watch: Option<At<bool>>,
    pub stable_for: Option<At<String>>,
    pub verify: Option<At<Verify>>,
    pub upload: Option<At<Upload>>,
    pub temp_suffix: Option<At<String>>,
    pub retry: Option<Retry>,
    pub after_push: Option<At<AfterPush>>,
    pub after_pull: Option<At<String>>,
    pub alert_to: Option<At<Vec<At<String>>>>,
    pub catch_up: Option<At<CatchUp>>,
    pub watch_mode: Option<At<WatchMode>>,
    pub poll_interval: Option<At<String>>,
    pub rescan_interval: Option<At<String>>,
    pub redact_file_names: Option<At<bool>>,
    pub edi: Option<At<Edi>>,
    pub expect: Option<At<Expect>>,
}

/// `edi:` on a job: the envelope gate and duplicate control (push), the
/// acknowledgement deadlines (push) and which pushes a pull's files answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edi {
    pub validate: Option<At<bool>>,
    pub sender_id: Option<At<String>>,
    pub receiver_id: Option<At<String>>,
    pub duplicate_window: Option<At<String>>,
    /// `{ ta1: 2h, "999": 24h, 277ca: 2d }`: keys are checked in `load`.
    pub acks: Option<At<BTreeMap<String, At<String>>>>,
    pub acks_for: Option<At<Vec<At<String>>>>,
}

/// `expect:` on a pull job: a file should arrive within `within` of each `schedule` tick.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub schedule: At<String>,
    pub within: At<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    One,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    Events,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Push,
    Pull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    Auto,
    Hash,
    Size,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upload {
    TempRename,
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterPush {
    Archive,
    Delete,
    Keep,
}
