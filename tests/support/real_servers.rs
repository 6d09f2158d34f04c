//! Real Debian FTPS servers (vsftpd, ProFTPD) for the interop tier, started
//! through `scripts/ftp-server.sh` on ports this test picks and stopped by
//! process id when dropped. Needs root and `scripts/install-test-deps.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ferry::config::{Secret, Server, TlsMode, TlsVersion};

pub const USER: &str = "ferrytest";
pub const PASSWORD: &str = "ferrytest-pw";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VsftpdExplicit,
    VsftpdImplicit,
    Proftpd,
}

impl Kind {
    fn script_name(self) -> &'static str {
        match self {
            Kind::VsftpdExplicit => "vsftpd-explicit",
            Kind::VsftpdImplicit => "vsftpd-implicit",
            Kind::Proftpd => "proftpd",
        }
    }
}

pub struct RealServer {
    pub kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
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

impl RealServer {
    pub fn start(kind: Kind) -> RealServer {
        let dir = tempfile::Builder::new()
            .prefix("ferry-interop-")
            .tempdir()
            .unwrap();
        for attempt in 0..5 {
            let port = free_port_block();
            let out = Command::new("bash")
                .arg(repo().join("scripts/ftp-server.sh"))
                .args(["start", kind.script_name()])
                .arg(dir.path())
                .arg(port.to_string())
                .output()
                .expect("run scripts/ftp-server.sh");
            if out.status.success() {
                return RealServer { kind, port, dir };
            }
            eprintln!(
                "starting {} on {port} failed (attempt {attempt}): {}",
                kind.script_name(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("could not start {}", kind.script_name());
    }

    /// The folder the FTP user sees as `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn server(&self, name: &str, versions: Option<Vec<TlsVersion>>) -> Arc<Server> {
        Arc::new(Server {
            name: name.to_string(),
            host: "127.0.0.1".to_string(),
            port: self.port,
            tls: if self.kind == Kind::VsftpdImplicit {
                TlsMode::Implicit
            } else {
                TlsMode::Explicit
            },
            user: USER.to_string(),
            password: Some(Secret::new(PASSWORD.to_string())),
            ca_file: Some(self.ca_file()),
            pin_sha256: None,
            client_cert: None,
            client_key: None,
            tls_versions: versions,
            passive_nat_workaround: false,
            timeout: Duration::from_secs(20),
            max_connections: 2,
        })
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // A failing test shows what the server saw: the tail of each log.
        if std::thread::panicking() {
            dump_logs(self.dir.path());
        }
        let _ = Command::new("bash")
            .arg(repo().join("scripts/ftp-server.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
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
        use std::io::BufRead;
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
