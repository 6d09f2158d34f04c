//! Reading and validating `ferry.yaml` and `jobs/*.yaml`.
//!
//! Each file is parsed strictly (unknown fields, duplicate keys and YAML 1.1
//! booleans are errors), then every value is checked and converted; all
//! problems of all files are collected before the load fails.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::de::DeserializeOwned;
use serde_saphyr::{DuplicateKeyPolicy, Location};

use super::error::{ConfigError, ConfigErrors, from_yaml};
use super::files;
use super::raw::{self, At};
use super::types::*;
use crate::schedule::Schedule;
use rustls::pki_types::CertificateDer;

/// Configuration files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Loads and validates the configuration at `path` and every job beside it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let config = load_into(path, &mut errors);
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(errors)),
    }
}

fn load_into(path: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let (doc, digest): (raw::AgentFile, String) = parse_file(path, true, errors)?;
    let mut sources = vec![(path.to_path_buf(), digest)];
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut cx = Cx {
        file: path,
        dir: &dir,
        errors,
    };

    let state_dir = match &doc.state_dir {
        Some(v) => cx.path(v).and_then(|p| match dir_usable(&p, "state_dir") {
            Ok(()) => Some(p),
            Err(m) => {
                cx.err(&v.referenced, m);
                None
            }
        }),
        None => {
            let p = normalize(&dir.join("state"));
            match dir_usable(&p, "state_dir") {
                Ok(()) => Some(p),
                Err(m) => {
                    cx.errors.push(ConfigError::new(path, 0, 0, m));
                    None
                }
            }
        }
    };
    let jobs_dir = match &doc.jobs_dir {
        Some(v) => cx.path(v),
        None => Some(normalize(&dir.join("jobs"))),
    };
    let log = cx.log(doc.log.as_ref());
    let defaults = cx.defaults(doc.defaults.as_ref());
    let mut servers = BTreeMap::new();
    for (name, s) in &doc.servers {
        if let Some(server) = cx.server(name, s) {
            servers.insert(name.clone(), Arc::new(server));
        }
    }
    let mail = doc.mail.as_ref().and_then(|m| cx.mail(m));
    let max_parallel_jobs = match &doc.max_parallel_jobs {
        Some(v) if v.value == 0 => {
            cx.err(&v.referenced, "max_parallel_jobs must be at least 1");
            None
        }
        Some(v) => Some(v.value),
        None => Some(doc.servers.len().max(1) as u32),
    };
    let shutdown_grace = match &doc.shutdown_grace {
        Some(v) => cx.duration(v),
        None => Some(Duration::from_secs(30)),
    };
    let mut metrics_notice = None;
    let metrics = match &doc.metrics {
        Some(m) => cx.metrics(m, &mut metrics_notice).map(Some),
        None => Some(None),
    };

    let retention = cx.retention(doc.retention.as_ref());
    // A server that is declared but invalid was reported already; jobs that
    // use it must not add a misleading "unknown server".
    let declared: Vec<&str> = doc.servers.keys().map(String::as_str).collect();
    // Jobs are checked even when the defaults are invalid, against stand-in
    // defaults, so one run reports every error; the load fails regardless.
    let job_defaults = defaults.clone().unwrap_or(Defaults {
        timezone: Tz::UTC,
        retry: RetryPolicy::default(),
    });
    let loaded = match &jobs_dir {
        Some(jobs_dir) => load_jobs(
            jobs_dir,
            doc.jobs_dir.as_ref(),
            path,
            &servers,
            &declared,
            &job_defaults,
            errors,
        ),
        None => (BTreeMap::new(), Vec::new(), Vec::new()),
    };
    let (jobs, mut notices, job_sources) = loaded;
    sources.extend(job_sources);
    notices.extend(inline_password_notice(path, &doc));
    let mail = mail.map(|mut m| {
        m.timezone = job_defaults.timezone;
        m
    });
    notices.extend(metrics_notice);
    Some(Config {
        file: path.to_path_buf(),
        state_dir: state_dir?,
        jobs_dir: jobs_dir?,
        log: log?,
        defaults: defaults?,
        servers,
        mail,
        jobs,
        max_parallel_jobs: max_parallel_jobs?,
        shutdown_grace: shutdown_grace?,
        metrics: metrics?,
        notices,
        sources,
        retention: retention?,
    })
}

/// A warning when `ferry.yaml` holds a password itself (not `${VAR}`, not
/// `password_file`) and users other than its owner may read it.
fn inline_password_notice(path: &Path, doc: &raw::AgentFile) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let inline = |p: &Option<At<String>>| {
        p.as_ref()
            .filter(|p| !p.value.contains("${"))
            .map(|p| p.referenced.line())
    };
    let mut lines: Vec<u64> = doc
        .servers
        .values()
        .filter_map(|s| inline(&s.password))
        .collect();
    if let Some(m) = &doc.mail {
        lines.extend(inline(&m.smtp.password));
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    if lines.is_empty() || mode & 0o044 == 0 {
        return None;
    }
    lines.sort_unstable();
    Some(format!(
        "{}: holds a password inline (line{} {}) and is readable by {} (mode {mode:04o}): run `chmod 600 {}`, or use password_file or ${{VAR}}",
        path.display(),
        if lines.len() == 1 { "" } else { "s" },
        lines
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        match (mode & 0o040 != 0, mode & 0o004 != 0) {
            (true, true) => "its group and all users",
            (true, false) => "its group",
            _ => "all users",
        },
        path.display()
    ))
}

/// The jobs, the notices about the folder, and each job file's SHA-256.
type LoadedJobs = (BTreeMap<String, Job>, Vec<String>, Vec<(PathBuf, String)>);

fn load_jobs(
    jobs_dir: &Path,
    jobs_dir_at: Option<&At<String>>,
    agent_file: &Path,
    servers: &BTreeMap<String, Arc<Server>>,
    declared: &[&str],
    defaults: &Defaults,
    errors: &mut Vec<ConfigError>,
) -> LoadedJobs {
    let mut notices = Vec::new();
    let mut sources = Vec::new();
    let mut jobs = BTreeMap::new();
    let entries = match std::fs::read_dir(jobs_dir) {
        Ok(e) => e,
        Err(e) => {
            let (line, col) = jobs_dir_at
                .map(|v| (v.referenced.line().max(1), v.referenced.column().max(1)))
                .unwrap_or((0, 0));
            errors.push(ConfigError::new(
                agent_file,
                line,
                col,
                format!(
                    "cannot read the jobs folder '{}': {e} (set jobs_dir, or create it)",
                    jobs_dir.display()
                ),
            ));
            return (jobs, notices, sources);
        }
    };
    let all: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    for p in &all {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_job = p.extension().is_some_and(|x| x == "yaml") && p.is_file();
        if !is_job && !name.starts_with('.') {
            notices.push(format!(
                "{}: not a job (job files end in .yaml){}",
                p.display(),
                if name.ends_with(".yml") {
                    "; rename it to .yaml to use it"
                } else {
                    ""
                }
            ));
        }
    }
    let mut files: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
        .collect();
    files.sort();
    let job_files: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let mut acks_for: Vec<(PathBuf, String, Location)> = Vec::new();
    for file in files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_job_name(&stem) {
            errors.push(ConfigError::new(
                &file,
                0,
                0,
                format!(
                    "job name '{stem}' (the file name) must match [a-z0-9][a-z0-9_-]*: lowercase letters, digits, '-' and '_'"
                ),
            ));
            continue;
        }
        let Some((doc, digest)) = parse_file::<raw::JobFile>(&file, false, errors) else {
            continue;
        };
        sources.push((file.clone(), digest));
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut cx = Cx {
            file: &file,
            dir: &dir,
            errors,
        };
        if let Some(list) = doc.edi.as_ref().and_then(|e| e.value.acks_for.as_ref()) {
            for v in &list.value {
                acks_for.push((file.clone(), v.value.clone(), v.referenced));
            }
        }
        if let Some(job) = cx.job(&stem, &doc, servers, declared, defaults) {
            jobs.insert(stem, job);
        }
    }
    // A pull job's edi.acks_for names push jobs (checked once every job is read).
    for (file, name, loc) in acks_for {
        let problem = match jobs.get(&name) {
            Some(j) if j.direction == Direction::Push => continue,
            Some(_) => format!("edi.acks_for names '{name}', a pull job; expected a push job"),
            None if job_files.contains(&name) => continue, // invalid, reported already
            None => format!("edi.acks_for names '{name}', which is not a job"),
        };
        errors.push(ConfigError::at(&file, &loc, problem));
    }
    let deadlines: BTreeMap<String, AckDeadlines> = jobs
        .iter()
        .filter_map(|(n, j)| j.edi.as_ref().map(|e| (n.clone(), e.acks)))
        .collect();
    for job in jobs.values_mut() {
        if let Some(e) = job.edi.as_mut() {
            e.deadlines_for = e
                .acks_for
                .iter()
                .map(|n| (n.clone(), deadlines.get(n).copied().unwrap_or_default()))
                .collect();
        }
    }
    (jobs, notices, sources)
}

/// Job names are file stems, used in paths and commands.
pub fn valid_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Reads one YAML file strictly. Problems with the bytes themselves (too
/// large, not UTF-8, tabs in indentation) are reported before parsing.
fn parse_file<T: DeserializeOwned>(
    file: &Path,
    empty_ok: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(T, String)> {
    // One byte past the limit is enough to know it is too large.
    let bytes = match std::fs::File::open(file).and_then(|f| {
        let mut b = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(f, MAX_FILE_BYTES as u64 + 1),
            &mut b,
        )
        .map(|_| b)
    }) {
        Ok(b) => b,
        Err(e) => {
            errors.push(ConfigError::new(file, 0, 0, format!("cannot read: {e}")));
            return None;
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        errors.push(ConfigError::new(
            file,
            1,
            1,
            format!(
                "file is {} bytes; a configuration file may be at most {} bytes",
                bytes.len(),
                MAX_FILE_BYTES
            ),
        ));
        return None;
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
            errors.push(ConfigError::new(
                file,
                line,
                column,
                format!(
                    "invalid UTF-8 byte 0x{:02x}: configuration files must be UTF-8 text",
                    bytes[e.valid_up_to()]
                ),
            ));
            return None;
        }
    };
    if let Some((line, column)) = tab_in_indentation(text) {
        errors.push(ConfigError::new(
            file,
            line,
            column,
            "tab character in indentation: YAML indents with spaces only",
        ));
        return None;
    }
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    let text = match (blank, empty_ok) {
        (false, _) => text,
        // An empty ferry.yaml means "all defaults".
        (true, true) => "{}",
        (true, false) => {
            errors.push(ConfigError::new(
                file,
                1,
                1,
                "file is empty: expected a job (direction, server, local_dir, remote_dir, ...)",
            ));
            return None;
        }
    };
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_str_with_options::<T>(text, options) {
        Ok(v) => Some((
            v,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        )),
        Err(e) => {
            errors.push(from_yaml(file, &e));
            None
        }
    }
}

fn tab_in_indentation(text: &str) -> Option<(u64, u64)> {
    for (i, line) in text.lines().enumerate() {
        let indent: &str = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
        if let Some(col) = indent.find('\t')
            && !line.trim().is_empty()
        {
            return Some((i as u64 + 1, col as u64 + 1));
        }
    }
    None
}

/// Validation context for one file: where values come from, where errors go.
struct Cx<'a> {
    file: &'a Path,
    /// The folder relative paths in this file are resolved against.
    dir: &'a Path,
    errors: &'a mut Vec<ConfigError>,
}

impl Cx<'_> {
    fn err(&mut self, loc: &Location, msg: impl Into<String>) {
        self.errors.push(ConfigError::at(self.file, loc, msg));
    }

    /// A string with `${VAR}` references replaced from the environment.
    fn text(&mut self, v: &At<String>) -> Option<String> {
        match expand_env(&v.value) {
            Ok(s) => Some(s),
            Err(msg) => {
                self.err(&v.referenced, msg);
                None
            }
        }
    }

    fn non_empty(&mut self, v: &At<String>, what: &str) -> Option<String> {
        let s = self.text(v)?;
        if s.trim().is_empty() {
            self.err(&v.referenced, format!("{what} is empty"));
            return None;
        }
        Some(s)
    }

    fn path(&mut self, v: &At<String>) -> Option<PathBuf> {
        let s = self.non_empty(v, "path")?;
        Some(normalize(&self.dir.join(s)))
    }

    fn retention(&mut self, r: Option<&raw::Retention>) -> Option<Retention> {
        let Some(r) = r else {
            return Some(Retention::default());
        };
        // The ledger remembers what was delivered; a short retention would
        // let a kept file be taken for new.
        let ledger = self.at_least(
            r.ledger.as_ref(),
            Duration::from_secs(30 * 86_400),
            "retention.ledger",
        )?;
        let archive = self.at_least(
            r.archive.as_ref(),
            Duration::from_secs(86_400),
            "retention.archive",
        )?;
        Some(Retention { ledger, archive })
    }

    /// An optional duration no shorter than `min`.
    fn at_least(
        &mut self,
        v: Option<&At<String>>,
        min: Duration,
        key: &str,
    ) -> Option<Option<Duration>> {
        let Some(v) = v else { return Some(None) };
        let d = self.duration(v)?;
        if d < min {
            self.err(
                &v.referenced,
                format!(
                    "{key} is {}; it must be at least {}",
                    format_duration(d),
                    format_duration(min)
                ),
            );
            return None;
        }
        Some(Some(d))
    }

    fn duration(&mut self, v: &At<String>) -> Option<Duration> {
        match parse_duration(&v.value) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.err(&v.referenced, msg);
                None
            }
        }
    }

    fn positive_duration(&mut self, v: &At<String>, what: &str) -> Option<Duration> {
        let d = self.duration(v)?;
        if d.is_zero() {
            self.err(&v.referenced, format!("{what} must be longer than 0"));
            return None;
        }
        Some(d)
    }

    fn timezone(&mut self, v: &At<String>) -> Option<Tz> {
        match v.value.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.err(
                    &v.referenced,
                    format!(
                        "unknown time zone '{}', expected an IANA name such as UTC or America/New_York",
                        v.value
                    ),
                );
                None
            }
        }
    }

    /// A PEM file of certificates (`ca_file`, `client_cert`): readable, small,
    /// and holding at least one certificate that parses.
    fn certificate_file(
        &mut self,
        v: &At<String>,
        what: &str,
    ) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
        let p = self.path(v)?;
        let read = files::read_bounded(&p, what, files::MAX_PEM_BYTES)
            .and_then(|b| files::certificates(&b, what, &p));
        match read {
            Ok(certs) => Some((p, certs)),
            Err(m) => {
                self.err(&v.referenced, m);
                None
            }
        }
    }

    /// `client_cert` and `client_key`: both readable PEM, and the key the certificate's.
    fn client_identity(
        &mut self,
        c: &At<String>,
        k: &At<String>,
    ) -> (Option<PathBuf>, Option<PathBuf>) {
        let cert = self.certificate_file(c, "client_cert");
        let Some(key_path) = self.path(k) else {
            return (cert.map(|c| c.0), None);
        };
        let key = files::read_bounded(&key_path, "client_key", files::MAX_PEM_BYTES)
            .and_then(|b| files::private_key(&b, "client_key", &key_path));
        let key = match key {
            Ok(key) => key,
            Err(m) => {
                self.err(&k.referenced, m);
                return (cert.map(|c| c.0), None);
            }
        };
        let Some((cert_path, chain)) = cert else {
            return (None, Some(key_path));
        };
        if let Err(m) = files::key_matches(&chain, &key, &key_path) {
            self.err(&k.referenced, m);
            return (Some(cert_path), None);
        }
        (Some(cert_path), Some(key_path))
    }

    /// `password` (with `${VAR}`) or `password_file` (trailing newline trimmed).
    fn secret(
        &mut self,
        password: Option<&At<String>>,
        password_file: Option<&At<String>>,
    ) -> Result<Option<Secret>, ()> {
        match (password, password_file) {
            (Some(_), Some(f)) => {
                self.err(
                    &f.referenced,
                    "set either password or password_file, not both",
                );
                Err(())
            }
            (Some(p), None) => self.text(p).map(|s| Some(Secret::new(s))).ok_or(()),
            (None, Some(f)) => {
                let path = self.path(f).ok_or(())?;
                let read = files::read_bounded(&path, "password_file", files::MAX_PASSWORD_BYTES)
                    .and_then(|b| {
                        String::from_utf8(b).map_err(|_| {
                            format!("password_file '{}' is not UTF-8 text", path.display())
                        })
                    });
                match read {
                    Ok(read) => {
                        let read = zeroize::Zeroizing::new(read);
                        let s = read.strip_suffix('\n').unwrap_or(&read);
                        let s = s.strip_suffix('\r').unwrap_or(s);
                        Ok(Some(Secret::new(s.to_string())))
                    }
                    Err(m) => {
                        self.err(&f.referenced, m);
                        Err(())
                    }
                }
            }
            (None, None) => Ok(None),
        }
    }

    fn mailboxes(&mut self, list: &At<Vec<At<String>>>, what: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for v in &list.value {
            let Some(s) = self.text(v) else {
                ok = false;
                continue;
            };
            if s.parse::<lettre::message::Mailbox>().is_err() {
                self.err(
                    &v.referenced,
                    format!("invalid email address '{s}' in {what}, expected name@example.org"),
                );
                ok = false;
            } else {
                out.push(s);
            }
        }
        ok.then_some(out)
    }

    fn globs(&mut self, list: &At<Vec<At<String>>>, key: &str) -> Option<(Vec<String>, GlobSet)> {
        let mut builder = GlobSetBuilder::new();
        let mut pats = Vec::new();
        let mut ok = true;
        for v in &list.value {
            if v.value.contains('/') {
                self.err(
                    &v.referenced,
                    format!(
                        "{key} pattern '{}' contains '/': patterns match file names only",
                        v.value
                    ),
                );
                ok = false;
                continue;
            }
            match Glob::new(&v.value) {
                Ok(g) => {
                    builder.add(g);
                    pats.push(v.value.clone());
                }
                Err(e) => {
                    self.err(
                        &v.referenced,
                        format!("invalid {key} pattern '{}': {}", v.value, e.kind()),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some((pats, set)),
            Err(e) => {
                self.err(&list.referenced, format!("invalid {key} patterns: {e}"));
                None
            }
        }
    }

    fn log(&mut self, log: Option<&raw::Log>) -> Option<LogSettings> {
        let format = log
            .and_then(|l| l.format.as_ref())
            .map_or(LogFormat::Text, |f| f.value);
        let level = match log.and_then(|l| l.level.as_ref()) {
            None => "info".to_string(),
            Some(v) => {
                if tracing_subscriber::EnvFilter::try_new(&v.value).is_err()
                    || v.value.trim().is_empty()
                {
                    self.err(
                        &v.referenced,
                        format!(
                            "invalid log level '{}', expected one of error, warn, info, debug, trace",
                            v.value
                        ),
                    );
                    return None;
                }
                v.value.clone()
            }
        };
        Some(LogSettings { format, level })
    }

    fn retry(&mut self, r: Option<&raw::Retry>, base: RetryPolicy) -> Option<RetryPolicy> {
        let Some(r) = r else { return Some(base) };
        let mut out = base;
        let mut ok = true;
        if let Some(a) = &r.attempts {
            if a.value == 0 {
                self.err(
                    &a.referenced,
                    "retry attempts must be at least 1 (the first attempt counts)",
                );
                ok = false;
            }
            out.attempts = a.value;
        }
        if let Some(d) = &r.initial_delay {
            match self.duration(d) {
                Some(d) => out.initial_delay = d,
                None => ok = false,
            }
        }
        if let Some(d) = &r.max_delay {
            match self.duration(d) {
                Some(d) => out.max_delay = d,
                None => ok = false,
            }
        }
        if ok && out.max_delay < out.initial_delay {
            let loc = r
                .max_delay
                .as_ref()
                .or(r.initial_delay.as_ref())
                .map(|v| v.referenced)
                .unwrap_or(Location::UNKNOWN);
            self.err(
                &loc,
                format!(
                    "retry max_delay ({}) is shorter than initial_delay ({})",
                    format_duration(out.max_delay),
                    format_duration(out.initial_delay)
                ),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    fn defaults(&mut self, d: Option<&raw::Defaults>) -> Option<Defaults> {
        let timezone = match d.and_then(|d| d.timezone.as_ref()) {
            Some(v) => self.timezone(v),
            None => Some(Tz::UTC),
        };
        let retry = self.retry(d.and_then(|d| d.retry.as_ref()), RetryPolicy::default());
        Some(Defaults {
            timezone: timezone?,
            retry: retry?,
        })
    }

    fn server(&mut self, name: &str, s: &raw::Server) -> Option<Server> {
        let here = s.host.referenced;
        let mut ok = true;
        if !valid_server_name(name) {
            self.err(
                &here,
                format!("server name '{name}' must match [A-Za-z0-9][A-Za-z0-9_.-]*"),
            );
            ok = false;
        }
        let host = self.non_empty(&s.host, "host");
        let tls = s.tls.as_ref().map_or(TlsMode::Explicit, |t| t.value);
        let insecure = s.allow_insecure.as_ref().is_some_and(|v| v.value);
        if tls == TlsMode::None {
            let at = s.tls.as_ref().map(|t| t.referenced).unwrap_or(here);
            if !insecure {
                self.err(
                    &at,
                    "tls: none sends passwords and claim files in clear text; it needs allow_insecure: true",
                );
                ok = false;
            }
            for (key, set) in [
                ("pin_sha256", s.pin_sha256.as_ref().map(|v| v.referenced)),
                ("ca_file", s.ca_file.as_ref().map(|v| v.referenced)),
                ("client_cert", s.client_cert.as_ref().map(|v| v.referenced)),
                (
                    "tls_versions",
                    s.tls_versions.as_ref().map(|v| v.referenced),
                ),
            ] {
                if let Some(loc) = set {
                    self.err(&loc, format!("{key} has no effect with tls: none"));
                    ok = false;
                }
            }
        }
        let port = match &s.port {
            Some(p) if p.value == 0 => {
                self.err(
                    &p.referenced,
                    "port 0 is not a valid port, expected 1 to 65535",
                );
                ok = false;
                0
            }
            Some(p) => p.value,
            None if tls == TlsMode::Implicit => 990,
            None => 21,
        };
        let user = match &s.user {
            Some(u) => self.text(u),
            None => Some("anonymous".to_string()),
        };
        let password = self
            .secret(s.password.as_ref(), s.password_file.as_ref())
            .map_err(|_| ok = false)
            .ok()
            .flatten();
        let ca_file = s
            .ca_file
            .as_ref()
            .map(|v| self.certificate_file(v, "ca_file").map(|c| c.0).ok_or(()))
            .transpose();
        let pin = s
            .pin_sha256
            .as_ref()
            .map(|v| match parse_fingerprint(&v.value) {
                Ok(p) => Ok(p),
                Err(m) => {
                    self.err(&v.referenced, m);
                    Err(())
                }
            });
        let pin = pin.transpose();
        let (client_cert, client_key) = match (&s.client_cert, &s.client_key) {
            (Some(c), Some(k)) => self.client_identity(c, k),
            (None, None) => (None, None),
            (Some(v), None) | (None, Some(v)) => {
                self.err(
                    &v.referenced,
                    "client_cert and client_key go together: set both or neither",
                );
                ok = false;
                (None, None)
            }
        };
        let mut tls_versions = None;
        if let Some(list) = &s.tls_versions {
            let mut versions = Vec::new();
            for v in &list.value {
                match v.value.as_str() {
                    "1.2" => versions.push(TlsVersion::V1_2),
                    "1.3" => versions.push(TlsVersion::V1_3),
                    other => {
                        self.err(
                            &v.referenced,
                            format!(
                                "unsupported TLS version '{other}', expected \"1.2\" or \"1.3\""
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if list.value.is_empty() {
                self.err(
                    &list.referenced,
                    "tls_versions is empty, expected [\"1.2\", \"1.3\"] or a subset",
                );
                ok = false;
            }
            versions.sort();
            versions.dedup();
            tls_versions = Some(versions);
        }
        let timeout = match &s.timeout {
            Some(v) => self.positive_duration(v, "timeout"),
            None => Some(Duration::from_secs(30)),
        };
        let max_connections = match &s.max_connections {
            Some(v) if v.value == 0 => {
                self.err(&v.referenced, "max_connections must be at least 1");
                ok = false;
                1
            }
            Some(v) => v.value,
            None => 2,
        };
        let max_listing = match &s.max_listing {
            Some(v) if v.value == 0 => {
                self.err(&v.referenced, "max_listing must be at least 1");
                ok = false;
                1
            }
            Some(v) => v.value,
            None => 100_000,
        };
        let cert_ok = ca_file.is_ok()
            && pin.is_ok()
            && (s.client_cert.is_none() || (client_cert.is_some() && client_key.is_some()));
        if !(ok && cert_ok) {
            return None;
        }
        Some(Server {
            name: name.to_string(),
            host: host?,
            port,
            tls,
            user: user?,
            password,
            ca_file: ca_file.ok()?,
            pin_sha256: pin.ok()?,
            client_cert,
            client_key,
            tls_versions,
            passive_nat_workaround: s.passive_nat_workaround.as_ref().is_some_and(|v| v.value),
            trust_pasv_address: s.trust_pasv_address.as_ref().is_some_and(|v| v.value),
            consumes: s.consumes.as_ref().is_some_and(|v| v.value),
            environment: s.environment.as_ref().map(|e| match e.value {
                raw::Environment::Production => Environment::Production,
                raw::Environment::Test => Environment::Test,
            }),
            max_listing,
            timeout: timeout?,
            max_connections,
        })
    }

    /// `metrics`: an IP address and port, loopback unless `allow_remote: true`
    /// says otherwise (the page names jobs and servers: not for everyone).
    fn metrics(
        &mut self,
        m: &raw::Metrics,
        notice: &mut Option<String>,
    ) -> Option<MetricsSettings> {
        let listen = match &m.listen {
            None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some(v) => match v.value.trim().parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(
                        &v.referenced,
                        format!(
                            "'{}' is not an address and port, expected one such as 127.0.0.1:9464 or [::1]:9464",
                            v.value
                        ),
                    );
                    None
                }
            },
        };
        let allow_remote = m.allow_remote.as_ref().is_some_and(|v| v.value);
        if let Some(a) = listen
            && !a.ip().is_loopback()
        {
            if allow_remote {
                *notice = Some(format!(
                    "metrics.listen {a} is reachable from other hosts: /metrics names every job and server"
                ));
            } else if let Some(v) = &m.listen {
                self.err(
                    &v.referenced,
                    format!(
                        "metrics.listen {a} is not a loopback address; set allow_remote: true to serve metrics to other hosts"
                    ),
                );
                return None;
            }
        }
        let stall_after = match &m.stall_after {
            Some(v) => self.positive_duration(v, "stall_after")?,
            None => Duration::from_secs(10),
        };
        Some(MetricsSettings {
            listen: listen?,
            stall_after,
        })
    }

    fn mail(&mut self, m: &raw::Mail) -> Option<Mail> {
        let security = m
            .smtp
            .security
            .as_ref()
            .map_or(SmtpSecurity::Starttls, |s| s.value);
        let port = match &m.smtp.port {
            Some(p) if p.value == 0 => {
                self.err(
                    &p.referenced,
                    "port 0 is not a valid port, expected 1 to 65535",
                );
                return None;
            }
            Some(p) => p.value,
            None => match security {
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::None => 25,
            },
        };
        let host = self.non_empty(&m.smtp.host, "smtp host");
        let user = m.smtp.user.as_ref().map(|u| self.text(u));
        let password = self.secret(m.smtp.password.as_ref(), m.smtp.password_file.as_ref());
        let timeout = match &m.smtp.timeout {
            Some(v) => self.positive_duration(v, "smtp timeout"),
            None => Some(Duration::from_secs(30)),
        };
        let ca_file = match &m.smtp.ca_file {
            Some(v) => self.certificate_file(v, "smtp ca_file").map(|c| Some(c.0)),
            None => Some(None),
        };
        let from = self.text(&m.from);
        if let Some(f) = &from
            && f.parse::<lettre::message::Mailbox>().is_err()
        {
            self.err(
                &m.from.referenced,
                format!("invalid from address '{f}', expected \"ferry <ferry@example.org>\""),
            );
        }
        let to = self.mailboxes(&m.to, "mail.to");
        if m.to.value.is_empty() {
            self.err(
                &m.to.referenced,
                "mail.to is empty: alerts need at least one recipient",
            );
        }
        let repeat_after = match &m.repeat_after {
            Some(v) => self.positive_duration(v, "repeat_after"),
            None => Some(Duration::from_secs(3600)),
        };
        let digest = match &m.digest {
            None => Some(None),
            Some(v) => match v
                .value
                .strip_prefix("daily at ")
                .and_then(|t| chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M").ok())
            {
                Some(t) => Some(Some(t)),
                None => {
                    self.err(
                        &v.referenced,
                        format!("invalid digest '{}', expected \"daily at HH:MM\" (24-hour, defaults.timezone)", v.value),
                    );
                    None
                }
            },
        };
        Some(Mail {
            host: host?,
            port,
            security,
            user: match user {
                Some(u) => Some(u?),
                None => None,
            },
            password: password.ok()?,
            timeout: timeout?,
            ca_file: ca_file?,
            from: from?,
            to: to?,
            repeat_after: repeat_after?,
            digest: digest?,
            timezone: Tz::UTC,
        })
    }

    fn job(
        &mut self,
        name: &str,
        j: &raw::JobFile,
        servers: &BTreeMap<String, Arc<Server>>,
        declared: &[&str],
        defaults: &Defaults,
    ) -> Option<Job> {
        let direction = j.direction.value;
        let mut ok = true;
        let server = match servers.get(&j.server.value) {
            Some(s) => Some(s.clone()),
            None if declared.contains(&j.server.value.as_str()) => None,
            None => {
                let known = declared;
                self.err(
                    &j.server.referenced,
                    if known.is_empty() {
                        format!(
                            "unknown server '{}': ferry.yaml defines no servers",
                            j.server.value
                        )
                    } else {
                        format!(
                            "unknown server '{}', expected one of {}",
                            j.server.value,
                            known.join(", ")
                        )
                    },
                );
                None
            }
        };
        let local_dir = self.path(&j.local_dir);
        if let Some(dir) = &local_dir
            && let Err(msg) = dir_usable(dir, "local_dir")
        {
            self.err(&j.local_dir.referenced, msg);
            ok = false;
        }
        let remote_dir = self.non_empty(&j.remote_dir, "remote_dir");
        if let Some(r) = &remote_dir
            && r.chars().any(char::is_control)
        {
            self.err(
                &j.remote_dir.referenced,
                "remote_dir contains control characters",
            );
            ok = false;
        }
        if let Some(r) = &remote_dir
            && has_parent_ref(r)
        {
            self.err(
                &j.remote_dir.referenced,
                format!(
                    "remote_dir '{r}' contains '..': name the folder itself, as the partner gave it"
                ),
            );
            ok = false;
        }
        let default_include = At {
            value: vec![At {
                value: "*".to_string(),
                referenced: Location::UNKNOWN,
                defined: Location::UNKNOWN,
            }],
            referenced: Location::UNKNOWN,
            defined: Location::UNKNOWN,
        };
        let include_list = j.include.as_ref().unwrap_or(&default_include);
        if include_list.value.is_empty() {
            self.err(
                &include_list.referenced,
                "include is empty: no file would ever be picked up",
            );
            ok = false;
        }
        let include = self.globs(include_list, "include");
        let empty = At {
            value: Vec::new(),
            referenced: Location::UNKNOWN,
            defined: Location::UNKNOWN,
        };
        let exclude = self.globs(j.exclude.as_ref().unwrap_or(&empty), "exclude");
        let timezone = match &j.timezone {
            Some(v) => self.timezone(v),
            None => Some(defaults.timezone),
        };
        let schedule = match (&j.schedule, timezone) {
            (Some(v), Some(tz)) => match Schedule::parse(&v.value, tz) {
                Ok(s) if s.next_after(chrono::Utc::now()).is_none() => {
                    self.err(
                        &v.referenced,
                        format!(
                            "job '{name}': schedule '{}' never fires (no such date), expected a schedule with a next run",
                            v.value
                        ),
                    );
                    None
                }
                Ok(s) => Some(Some(s)),
                Err(msg) => {
                    self.err(&v.referenced, format!("job '{name}': {msg}"));
                    None
                }
            },
            (None, _) => Some(None),
            (Some(_), None) => None,
        };
        let stable_for = match &j.stable_for {
            Some(v) => self.duration(v),
            None => Some(Duration::from_secs(5)),
        };
        let retry = self.retry(j.retry.as_ref(), defaults.retry);

        let push_only =
            |k: &str| format!("{k} applies only to push jobs; this job has direction: pull");
        let flow = match direction {
            raw::Direction::Push => {
                if let Some(v) = &j.after_pull {
                    self.err(
                        &v.referenced,
                        "after_pull applies only to pull jobs; this job has direction: push (use after_push)",
                    );
                    ok = false;
                }
                let watching = j.watch.as_ref().is_some_and(|w| w.value);
                for (key, loc) in [
                    ("watch_mode", j.watch_mode.as_ref().map(|v| v.referenced)),
                    (
                        "poll_interval",
                        j.poll_interval.as_ref().map(|v| v.referenced),
                    ),
                    (
                        "rescan_interval",
                        j.rescan_interval.as_ref().map(|v| v.referenced),
                    ),
                ] {
                    if let (Some(loc), false) = (loc, watching) {
                        self.err(&loc, format!("{key} needs watch: true"));
                        ok = false;
                    }
                }
                let mut interval = |v: Option<&At<String>>, key: &str, default: u64| match v {
                    Some(v) => self.positive_duration(v, key),
                    None => Some(Duration::from_secs(default)),
                };
                let poll_interval = interval(j.poll_interval.as_ref(), "poll_interval", 10);
                let rescan_interval = interval(j.rescan_interval.as_ref(), "rescan_interval", 60);
                let watch = match (watching, poll_interval, rescan_interval) {
                    (true, Some(poll_interval), Some(rescan_interval)) => Some(Watch {
                        mode: j.watch_mode.as_ref().map_or(WatchMode::Events, |m| m.value),
                        poll_interval,
                        rescan_interval,
                    }),
                    (true, _, _) => {
                        ok = false;
                        None
                    }
                    (false, _, _) => None,
                };
                let temp_suffix = match &j.temp_suffix {
                    None => ".part".to_string(),
                    Some(v) => {
                        let x = &v.value;
                        let fine = x.len() >= 2
                            && x.len() <= 16
                            && x.starts_with('.')
                            && x[1..]
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                        if !fine {
                            self.err(
                                &v.referenced,
                                format!("temp_suffix '{x}' is not a file-name ending, expected a dot and 1 to 15 letters, digits, '.', '_' or '-' (like \".part\")"),
                            );
                            ok = false;
                        }
                        x.clone()
                    }
                };
                Flow::Push {
                    watch,
                    upload: j.upload.as_ref().map_or(Upload::TempRename, |u| u.value),
                    temp_suffix,
                    after: j
                        .after_push
                        .as_ref()
                        .map_or(AfterPush::Archive, |a| a.value),
                }
            }
            raw::Direction::Pull => {
                for (key, loc) in [
                    ("watch", j.watch.as_ref().map(|v| v.referenced)),
                    ("watch_mode", j.watch_mode.as_ref().map(|v| v.referenced)),
                    (
                        "poll_interval",
                        j.poll_interval.as_ref().map(|v| v.referenced),
                    ),
                    (
                        "rescan_interval",
                        j.rescan_interval.as_ref().map(|v| v.referenced),
                    ),
                    ("after_push", j.after_push.as_ref().map(|v| v.referenced)),
                    ("upload", j.upload.as_ref().map(|v| v.referenced)),
                    ("temp_suffix", j.temp_suffix.as_ref().map(|v| v.referenced)),
                ] {
                    if let Some(loc) = loc {
                        self.err(&loc, push_only(key));
                        ok = false;
                    }
                }
                let after = match &j.after_pull {
                    None => AfterPull::Keep,
                    Some(v) => match parse_after_pull(&v.value) {
                        Ok(a) => a,
                        Err(m) => {
                            self.err(&v.referenced, m);
                            ok = false;
                            AfterPull::Keep
                        }
                    },
                };
                Flow::Pull { after }
            }
        };
        if let (Some(v), None) = (&j.catch_up, &j.schedule) {
            self.err(&v.referenced, "catch_up needs a schedule");
            ok = false;
        }
        let alert_to = match &j.alert_to {
            Some(list) => self.mailboxes(list, "alert_to"),
            None => Some(Vec::new()),
        };
        let edi = match &j.edi {
            Some(e) => match self.edi(&e.value, direction) {
                Some(e) => Some(e),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let expect = match (&j.expect, direction, timezone) {
            (None, _, _) => None,
            (Some(e), raw::Direction::Push, _) => {
                self.err(
                    &e.referenced,
                    "expect applies only to pull jobs; this job has direction: push",
                );
                ok = false;
                None
            }
            (Some(e), raw::Direction::Pull, Some(tz)) => {
                let schedule = match Schedule::parse(&e.value.schedule.value, tz) {
                    Ok(s) => Some(s),
                    Err(msg) => {
                        self.err(
                            &e.value.schedule.referenced,
                            format!("job '{name}': expect: {msg}"),
                        );
                        None
                    }
                };
                let within = self.positive_duration(&e.value.within, "expect.within");
                match (schedule, within) {
                    (Some(schedule), Some(within)) => Some(Expect { schedule, within }),
                    _ => {
                        ok = false;
                        None
                    }
                }
            }
            (Some(_), raw::Direction::Pull, None) => None,
        };
        let (include, exclude) = (include?, exclude?);
        if !ok {
            return None;
        }
        Some(Job {
            name: name.to_string(),
            file: self.file.to_path_buf(),
            direction,
            server: server?,
            local_dir: local_dir?,
            remote_dir: remote_dir?,
            filter: FileFilter::new(include.0, exclude.0, include.1, exclude.1),
            schedule: schedule?,
            timezone: timezone?,
            flow,
            stable_for: stable_for?,
            verify: j.verify.as_ref().map_or(Verify::Auto, |v| v.value),
            retry: retry?,
            alert_to: alert_to?,
            catch_up: j.catch_up.as_ref().map_or(CatchUp::One, |c| c.value),
            redact_file_names: j.redact_file_names.as_ref().is_some_and(|v| v.value),
            edi,
            expect,
        })
    }

    /// A job's `edi:` block: the push keys on push jobs, `acks_for` on pull
    /// jobs (its names are checked against the other jobs once all are read).
    fn edi(&mut self, e: &raw::Edi, direction: raw::Direction) -> Option<Edi> {
        let mut ok = true;
        let mut out = Edi {
            duplicate_window: Duration::from_secs(365 * 86_400),
            ..Edi::default()
        };
        let push_keys = [
            ("validate", e.validate.as_ref().map(|v| v.referenced)),
            ("sender_id", e.sender_id.as_ref().map(|v| v.referenced)),
            ("receiver_id", e.receiver_id.as_ref().map(|v| v.referenced)),
            (
                "duplicate_window",
                e.duplicate_window.as_ref().map(|v| v.referenced),
            ),
            ("acks", e.acks.as_ref().map(|v| v.referenced)),
        ];
        match direction {
            raw::Direction::Pull => {
                for (key, loc) in push_keys {
                    if let Some(loc) = loc {
                        self.err(
                            &loc,
                            format!("edi.{key} applies only to push jobs; this job has direction: pull (a pull job names the pushes it acknowledges with edi.acks_for)"),
                        );
                        ok = false;
                    }
                }
                match &e.acks_for {
                    Some(list) if list.value.is_empty() => {
                        self.err(
                            &list.referenced,
                            "edi.acks_for is empty, expected the names of push jobs",
                        );
                        ok = false;
                    }
                    Some(list) => {
                        out.acks_for = list.value.iter().map(|v| v.value.clone()).collect();
                    }
                    None => {}
                }
            }
            raw::Direction::Push => {
                if let Some(v) = &e.acks_for {
                    self.err(
                        &v.referenced,
                        "edi.acks_for applies only to pull jobs; this job has direction: push",
                    );
                    ok = false;
                }
                out.validate = e.validate.as_ref().is_some_and(|v| v.value);
                for (key, v, slot) in [
                    ("sender_id", &e.sender_id, &mut out.sender_id),
                    ("receiver_id", &e.receiver_id, &mut out.receiver_id),
                ] {
                    if let Some(v) = v {
                        let t = v.value.trim();
                        if t.is_empty()
                            || t.len() > 15
                            || !t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                        {
                            self.err(
                                &v.referenced,
                                format!("edi.{key} must be 1 to 15 printable characters (an ISA06/ISA08 id)"),
                            );
                            ok = false;
                        }
                        *slot = Some(t.to_string());
                    }
                }
                if let Some(v) = &e.duplicate_window {
                    match self.positive_duration(v, "edi.duplicate_window") {
                        Some(d) => out.duplicate_window = d,
                        None => ok = false,
                    }
                }
                if let Some(acks) = &e.acks {
                    for (key, v) in &acks.value {
                        let slot = match key.as_str() {
                            "ta1" => &mut out.acks.ta1,
                            "999" => &mut out.acks.ack999,
                            "277ca" => &mut out.acks.ca277,
                            other => {
                                self.err(
                                    &v.referenced,
                                    format!("unknown acknowledgement '{other}' in edi.acks, expected one of ta1, \"999\", 277ca"),
                                );
                                ok = false;
                                continue;
                            }
                        };
                        match self.positive_duration(v, &format!("edi.acks.{key}")) {
                            Some(d) => *slot = Some(d),
                            None => ok = false,
                        }
                    }
                }
            }
        }
        ok.then_some(out)
    }
}

fn valid_server_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_after_pull(s: &str) -> Result<AfterPull, String> {
    match s {
        "delete" => Ok(AfterPull::Delete),
        "keep" => Ok(AfterPull::Keep),
        _ => match s.strip_prefix("move:") {
            Some(dir) if has_parent_ref(dir) => Err(format!(
                "after_pull '{s}' contains '..': name the folder itself"
            )),
            Some(dir) if !dir.trim().is_empty() => Ok(AfterPull::Move(dir.to_string())),
            _ => Err(format!(
                "invalid after_pull '{s}', expected one of delete, keep, move:/remote/folder"
            )),
        },
    }
}

/// Whether a remote path has a `..` component (it could leave the folder meant).
fn has_parent_ref(p: &str) -> bool {
    p.split(['/', '\\']).any(|c| c == "..")
}

/// Parses a SHA-256 fingerprint written `AB:CD:...` or as plain hex.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hexed: String = s.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    match hex::decode_to_slice(&hexed, &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(format!(
            "invalid pin_sha256 '{s}', expected 32 bytes in hex (64 digits), optionally separated by ':'"
        )),
    }
}

/// `${VAR}` references replaced from the environment; a missing one is an error.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed '${{' in '{s}', expected ${{NAME}}"));
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid variable reference '${{{name}}}', expected ${{NAME}}"
            ));
        }
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("environment variable '{name}' is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A local folder exists, or its nearest existing ancestor is a folder we may write in.
fn dir_usable(dir: &Path, key: &str) -> Result<(), String> {
    if dir.exists() {
        return if dir.is_dir() {
            if writable(dir) {
                Ok(())
            } else {
                Err(format!("{key} '{}' is not writable", dir.display()))
            }
        } else {
            Err(format!(
                "{key} '{}' exists but is not a folder",
                dir.display()
            ))
        };
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        let probe = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if probe.exists() {
            if !probe.is_dir() {
                return Err(format!(
                    "{key} '{}' cannot be created: '{}' is not a folder",
                    dir.display(),
                    probe.display()
                ));
            }
            return if writable(probe) {
                Ok(())
            } else {
                Err(format!(
                    "{key} '{}' does not exist and cannot be created: '{}' is not writable",
                    dir.display(),
                    probe.display()
                ))
            };
        }
        ancestor = a.parent();
    }
    Ok(())
}

fn writable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Folds `a/../b` into `b` without touching the file system, so paths read
/// the way the operator means them. A leading `..` is kept.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    let path: PathBuf = out.iter().collect();
    if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path
    }
}
