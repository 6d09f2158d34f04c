//! Real FTPS servers for the interop tier, started through
//! `scripts/ftp-server.sh` on ports this test picks and stopped by process id
//! when dropped: Debian's vsftpd, ProFTPD (as configured for ferry, or with
//! its stock upload defaults), Pure-FTPd, and `scripts/quirk-ftp-server.py`
//! (pyftpdlib) whose replies are bent on purpose. Quirk variants of each are
//! chosen with the script's environment options (`RealServer::start_with`).
//! A `Mover` plays a clearinghouse that takes every delivered file away.
//! Needs root and `scripts/install-test-deps.sh`.

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry::config::{Secret, Server, TlsMode, TlsVersion};

pub const USER: &str = "ferrytest";
pub const PASSWORD: &str = "ferrytest-pw";

/// Environment options of `scripts/ftp-server.sh` (see its header). They are
/// cleared for every start, so only what a test passes applies.
pub const VSFTPD_EXTRA: &str = "FERRY_VSFTPD_EXTRA";
pub const PROFTPD_EXTRA: &str = "FERRY_PROFTPD_EXTRA";
pub const PROFTPD_DIGEST: &str = "FERRY_PROFTPD_DIGEST";
pub const PUREFTPD_EXTRA: &str = "FERRY_PUREFTPD_EXTRA";
pub const QUIRKS: &str = "FERRY_QUIRKS";
const OPTION_VARS: [&str; 5] = [
    VSFTPD_EXTRA,
    PROFTPD_EXTRA,
    PROFTPD_DIGEST,
    PUREFTPD_EXTRA,
    QUIRKS,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VsftpdExplicit,
    VsftpdImplicit,
    /// ProFTPD with `AllowOverwrite on` and `AllowStoreRestart on`, HASH/XSHA256.
    Proftpd,
    ProftpdImplicit,
    /// ProFTPD's compiled upload defaults (no AllowOverwrite, no
    /// AllowStoreRestart): STOR and REST+STOR over an existing file answer
    /// `550 NAME: Overwrite permission denied`, APPE `451 NAME: Append/Restart
    /// not permitted, try again`. With `(PROFTPD_EXTRA, "AllowOverwrite on")`
    /// REST+STOR over an existing file gets that 451 too. REST N (N > 0) +
    /// STOR of a missing file answers `554 REST: invalid NAME argument` on
    /// every ProFTPD kind, leaving an empty NAME behind.
    ProftpdStock,
    /// Pure-FTPd 1.0.50, TLS required on control and data; no session reuse check.
    PureFtpd,
    /// `scripts/quirk-ftp-server.py` (pyftpdlib), quirks from `FERRY_QUIRKS`.
    Pyftpdlib,
}

impl Kind {
    pub fn script_name(self) -> &'static str {
        match self {
            Kind::VsftpdExplicit => "vsftpd-explicit",
            Kind::VsftpdImplicit => "vsftpd-implicit",
            Kind::Proftpd => "proftpd",
            Kind::ProftpdImplicit => "proftpd-implicit",
            Kind::ProftpdStock => "proftpd-stock",
            Kind::PureFtpd => "pure-ftpd",
            Kind::Pyftpdlib => "pyftpdlib",
        }
    }

    pub fn is_implicit(self) -> bool {
        matches!(self, Kind::VsftpdImplicit | Kind::ProftpdImplicit)
    }

    /// The file whose presence says this kind is installed.
    fn installed_marker(self) -> PathBuf {
        let cache = std::env::var_os("FERRY_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/ferry-test"));
        match self {
            Kind::VsftpdExplicit | Kind::VsftpdImplicit => PathBuf::from("/usr/sbin/vsftpd"),
            Kind::Proftpd | Kind::ProftpdImplicit | Kind::ProftpdStock => {
                cache.join("proftpd/root/usr/sbin/proftpd")
            }
            Kind::PureFtpd => cache.join("pure-ftpd/root/usr/sbin/pure-ftpd"),
            Kind::Pyftpdlib => {
                PathBuf::from("/usr/lib/python3/dist-packages/pyftpdlib/handlers.py")
            }
        }
    }
}

pub struct RealServer {
    pub kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
    /// The options it was started with, for `restart`.
    env: Vec<(String, String)>,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fails loudly (not silently skipped) when the interop tier cannot run, so
/// CI never reports green without it. `FERRY_SKIP_INTEROP=1` skips on purpose.
pub fn available() -> bool {
    if std::env::var_os("FERRY_SKIP_INTEROP").is_some() {
        eprintln!("FERRY_SKIP_INTEROP is set: skipping the real-server tier");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let installed = Path::new("/usr/sbin/vsftpd").exists()
        && Path::new("/opt/ferry-test/proftpd/root/usr/sbin/proftpd").exists();
    assert!(
        root && installed,
        "the real-server tier needs root and the servers: run `bash scripts/test.sh` as root (or set FERRY_SKIP_INTEROP=1)"
    );
    true
}

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A port P such that P..=P+20 are free now (control port plus passive
/// range), outside the kernel's ephemeral range and not handed out before
/// in this process.
///
/// Outside the ephemeral range because every client socket on this machine
/// takes its local port from there: an ephemeral port inside a server's
/// passive range (a live connection, or one in TIME_WAIT for 60 s after
/// thousands of transfers) makes the server's `bind` of that passive port
/// fail, and a block search inside that range can find nothing free at all.
fn free_port_block() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (lo, hi) = ephemeral_range();
    // Below the ephemeral range when there is room, else above it.
    let (from, to) = if lo > 12_000 {
        (10_000, lo - 22)
    } else {
        (hi.saturating_add(1).max(10_000), 65_000)
    };
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2000 {
        let p = fastrand::u16(from..to);
        if given.iter().any(|&g| p.abs_diff(g) <= 20) {
            continue;
        }
        let all_free = (p..=p + 20).all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok());
        if all_free {
            given.push(p);
            return p;
        }
    }
    panic!("no free block of 21 ports on 127.0.0.1 in {from}..{to}");
}

/// Runs `scripts/ftp-server.sh ARGS` with exactly the options in `env`.
fn ftp_server_sh(
    args: &[&str],
    dir: &Path,
    port: Option<u16>,
    env: &[(String, String)],
) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/ftp-server.sh"))
        .arg(args[0])
        .args(&args[1..])
        .arg(dir);
    if let Some(p) = port {
        cmd.arg(p.to_string());
    }
    for var in OPTION_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = cmd.output().expect("run scripts/ftp-server.sh");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl RealServer {
    pub fn start(kind: Kind) -> RealServer {
        RealServer::start_with(kind, &[])
    }

    /// Starts `kind` with environment options of `scripts/ftp-server.sh`,
    /// e.g. `&[(VSFTPD_EXTRA, "cmds_denied=SIZE")]`,
    /// `&[(PROFTPD_EXTRA, "MaxClientsPerUser 1")]` or
    /// `&[(QUIRKS, "iis-size,no-feat")]` for `Kind::Pyftpdlib`.
    pub fn start_with(kind: Kind, env: &[(&str, &str)]) -> RealServer {
        let marker = kind.installed_marker();
        assert!(
            marker.exists(),
            "{} is not installed ({} missing): run `bash scripts/install-test-deps.sh` as root",
            kind.script_name(),
            marker.display()
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("ferry-interop-")
            .tempdir()
            .unwrap();
        for attempt in 0..5 {
            let port = free_port_block();
            match ftp_server_sh(&["start", kind.script_name()], dir.path(), Some(port), &env) {
                Ok(_) => {
                    return RealServer {
                        kind,
                        port,
                        dir,
                        env,
                    };
                }
                Err(e) => eprintln!(
                    "starting {} on {port} failed (attempt {attempt}): {e}",
                    kind.script_name()
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("could not start {}", kind.script_name());
    }

    /// The quirk server (pyftpdlib) with `quirks`, comma-separated
    /// (`scripts/quirk-ftp-server.py` lists them).
    pub fn quirky(quirks: &str) -> RealServer {
        RealServer::start_with(Kind::Pyftpdlib, &[(QUIRKS, quirks)])
    }

    /// Stops the server and starts it again on the same port and folder, with
    /// the same options; the files under `root()` stay.
    pub fn restart(&mut self) {
        let _ = ftp_server_sh(&["stop"], self.dir.path(), None, &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ftp_server_sh(
                &["start", self.kind.script_name()],
                self.dir.path(),
                Some(self.port),
                &self.env,
            ) {
                Ok(_) => return,
                // The old listener or a passive port may still be held for a moment.
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "restarting {} on {}: {e}",
                        self.kind.script_name(),
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "could not restart {} on {}: {e}",
                    self.kind.script_name(),
                    self.port
                ),
            }
        }
    }

    /// Kills every session now, as a crash of the per-session process would:
    /// SIGKILL to the session processes of vsftpd, ProFTPD and Pure-FTPd (the
    /// master keeps accepting), all connections dropped without a reply for
    /// pyftpdlib. Returns once they are gone.
    pub fn kill_sessions(&self) {
        if let Err(e) = ftp_server_sh(&["kill-sessions"], self.dir.path(), None, &[]) {
            panic!("kill-sessions on {}: {e}", self.kind.script_name());
        }
    }

    /// The folder the FTP user sees as `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The server's working folder (configuration, logs, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// A `Mover` taking every final file out of `/<folder>` on this server
    /// into `dest`; its log is shown with the server's when a test fails.
    pub fn mover(&self, folder: &str, dest: &Path) -> Mover {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("mover-{n}.log"));
        Mover::start(
            &self.root().join(folder.trim_start_matches('/')),
            dest,
            Some(&log),
        )
    }

    pub fn server(&self, name: &str, versions: Option<Vec<TlsVersion>>) -> Arc<Server> {
        Arc::new(Server {
            tls: if self.kind.is_implicit() {
                TlsMode::Implicit
            } else {
                TlsMode::Explicit
            },
            user: USER.to_string(),
            password: Some(Secret::new(PASSWORD.to_string())),
            ca_file: Some(self.ca_file()),
            tls_versions: versions,
            timeout: Duration::from_secs(20),
            max_connections: 2,
            ..Server::new(name, "127.0.0.1", self.port)
        })
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // Stop first: printing can fail too, and the server must not outlive the test.
        let _ = ftp_server_sh(&["stop"], self.dir.path(), None, &[]);
        // A failing test shows what the server saw: the tail of each log.
        if std::thread::panicking() {
            dump_logs(self.dir.path());
        }
    }
}

/// `scripts/consume-inbox.py` as a child process: a clearinghouse inbox that
/// moves every file not ending in `.part` (and not a dot-file) out of the
/// watched folder into `dest` as soon as it appears. A name already in
/// `dest` gets a counter (`NAME`, `NAME.1`, `NAME.2`, ...), so duplicate
/// deliveries stay countable. Stopped (SIGTERM) when dropped.
pub struct Mover {
    child: Child,
    /// Kept open so the child never writes into a closed pipe.
    _stdout: std::io::BufReader<ChildStdout>,
    pub dest: PathBuf,
}

impl Mover {
    /// Watches `watch` (created if missing, owned like its parent) and moves
    /// into `dest` (created if missing); logs each move to `log`, if given.
    /// Returns once it is watching.
    pub fn start(watch: &Path, dest: &Path, log: Option<&Path>) -> Mover {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo().join("scripts/consume-inbox.py"));
        if let Some(l) = log {
            cmd.arg("--log").arg(l);
        }
        let mut child = cmd
            .arg(watch)
            .arg(dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("run python3 scripts/consume-inbox.py");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            panic!("consume-inbox.py did not start (said {line:?})");
        }
        Mover {
            child,
            _stdout: stdout,
            dest: dest.to_path_buf(),
        }
    }

    /// Names of the files moved so far (dot-files excluded), sorted.
    pub fn moved(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dest)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// How many copies of `name` arrived: `name` itself plus `name.1`, `name.2`, ...
    pub fn copies(&self, name: &str) -> usize {
        self.moved()
            .iter()
            .filter(|n| {
                n.as_str() == name
                    || n.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    }

    /// Waits until at least `n` files were moved (or `timeout` passed); returns their names.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.moved();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mover {
    fn drop(&mut self) {
        // SIGTERM lets it finish the move at hand; KILL if it does not stop.
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server (Debian's aiosmtpd) started by `scripts/smtp-server.sh`
/// (or, with a login required, `scripts/smtp-auth-server.py`).
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The AUTH server runs as our child; the others are stopped by the script.
    child: Option<std::process::Child>,
}

impl SmtpServer {
    /// `mode`: `starttls` (required before MAIL), `tls` or `none`.
    pub fn start(mode: &str) -> SmtpServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-smtp-")
            .tempdir()
            .unwrap();
        let port = free_port_block();
        SmtpServer::start_on(dir, port, mode)
    }

    pub fn start_on(dir: tempfile::TempDir, port: u16, mode: &str) -> SmtpServer {
        let out = Command::new("bash")
            .arg(repo().join("scripts/smtp-server.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .arg(mode)
            .output()
            .expect("run scripts/smtp-server.sh");
        assert!(
            out.status.success(),
            "smtp server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmtpServer {
            port,
            dir,
            child: None,
        }
    }

    /// STARTTLS and AUTH (LOGIN/PLAIN) required; only `user`/`password` get in.
    pub fn start_with_login(user: &str, password: &str) -> SmtpServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-smtp-auth-")
            .tempdir()
            .unwrap();
        let certs = dir.path().join("certs");
        let ok = Command::new("bash")
            .arg(repo().join("scripts/gen-test-certs.sh"))
            .arg(&certs)
            .output()
            .unwrap();
        assert!(ok.status.success());
        let port = free_port_block();
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo().join("scripts/smtp-auth-server.py"))
            .arg(port.to_string())
            .arg(dir.path().join("maildir"))
            .arg(certs.join("server.pem"))
            .arg(certs.join("server.key"))
            .args([user, password])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        SmtpServer {
            port,
            dir,
            child: Some(child),
        }
    }

    /// A port nobody listens on now, for an SMTP server started later.
    pub fn free_port() -> u16 {
        free_port_block()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// Every message received so far, raw (headers and body).
    pub fn messages(&self) -> Vec<String> {
        let mut out: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(self.dir.path().join("maildir/new"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            (
                                e.metadata()
                                    .and_then(|m| m.modified())
                                    .unwrap_or(std::time::UNIX_EPOCH),
                                std::fs::read_to_string(e.path()).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        out.sort();
        out.into_iter().map(|(_, m)| m).collect()
    }

    /// Waits until `n` messages have arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || std::time::Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        let _ = Command::new("bash")
            .arg(repo().join("scripts/smtp-server.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Prints the last 60 lines of every `*.log` in `dir` to stderr.
fn dump_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") || p.ends_with("server.out") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            eprintln!("---- last lines of {} ----", p.display());
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }
}

impl RealServer {
    /// The body of a `srv:` entry in `ferry.yaml` for this server, with `extra` keys.
    pub fn yaml(&self, extra: &str) -> String {
        format!(
            "    host: 127.0.0.1\n    port: {}\n    user: {USER}\n    password: {PASSWORD}\n    ca_file: {}\n    timeout: 15s\n{extra}",
            self.port,
            self.ca_file().display()
        )
    }
}

/// Gives `path` (recursively) to the FTP test user, as a partner's files are.
pub fn chown_to_test_user(path: &Path) {
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(path)
        .status();
}

/// The names in `dir`, sorted (none when it does not exist).
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
