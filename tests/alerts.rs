//! Failure emails against a real SMTP server (Debian's aiosmtpd, started by
//! scripts/smtp-server.sh): headers and body, throttling, recovery,
//! STARTTLS required, SMTP down, and no secret in any email or log line.

mod support;

use std::time::{Duration, Instant};

use ferry::alert::Alerter;
use ferry::transfer::{FileStatus, RunOptions, Trigger};
use support::engine::{Setup, inprocess_yaml, signal, spawn_agent, wait_for};
use support::faults::{Faults, Rule};
use support::ftps_server::{self, ServerOptions, TestServer};
use support::real_servers::{SmtpServer, available};

const FAST: &str = "retry: { attempts: 2, initial_delay: 5ms, max_delay: 10ms }\n";

fn mail_yaml(smtp_port: u16, security: &str, ca: Option<&std::path::Path>, repeat: &str) -> String {
    let ca = ca
        .map(|c| format!(", ca_file: \"{}\"", c.display()))
        .unwrap_or_default();
    format!(
        "mail:\n  smtp: {{ host: localhost, port: {smtp_port}, security: {security}{ca}, timeout: 3s }}\n  from: \"ferry <ferry@example.org>\"\n  to: [edi-ops@example.org]\n  repeat_after: {repeat}\n"
    )
}

/// An FTPS server that refuses writes to /inbound/denied*, and a push job.
async fn failing_setup(mail: &str) -> (TestServer, Setup) {
    let srv = ftps_server::start(ServerOptions {
        faults: Faults {
            deny_writes_to: Rule::matching(["/inbound/denied*"]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(s.path().join("ferry.yaml"), format!("{cfg}{mail}")).unwrap();
    s.job(
        "acme-837-out",
        &format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nschedule: \"*/15 * * * *\"\nalert_to: [acme-desk@example.org]\n{FAST}"),
    );
    (srv, s)
}

/// The engine and the alerter its reports go to, as `ferry once` and the agent wire them.
struct Mailing {
    engine: ferry::transfer::Engine,
    alerter: std::sync::Arc<Alerter>,
}

impl std::ops::Deref for Mailing {
    type Target = ferry::transfer::Engine;
    fn deref(&self) -> &Self::Target {
        &self.engine
    }
}

impl Mailing {
    fn alerter(&self) -> Option<&std::sync::Arc<Alerter>> {
        Some(&self.alerter)
    }
}

async fn engine_with_mail(s: &Setup) -> Mailing {
    let cfg = s.config();
    let engine = s.engine();
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    Mailing { engine, alerter }
}

async fn run(m: &Mailing, s: &Setup) -> ferry::transfer::RunReport {
    let cfg = s.config();
    let job = &cfg.jobs["acme-837-out"];
    let report = m
        .engine
        .run_job(job, Trigger::Once, RunOptions::default())
        .await;
    m.alerter
        .after_run(job, &report, &ferry::transfer::next_run_text(job));
    report
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_sends_one_email_with_what_an_operator_needs() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("starttls");
    let (_srv, s) = failing_setup(&mail_yaml(
        smtp.port,
        "starttls",
        Some(&smtp.ca_file()),
        "1h",
    ))
    .await;
    s.drop_file("outbox/denied-claims.837", b"ISA*00*denied~");
    s.drop_file("outbox/ok.837", b"ISA*00*ok~");
    let engine = engine_with_mail(&s).await;
    let r = run(&engine, &s).await;
    assert_eq!(r.failed(), 1);
    let msgs = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    assert_eq!(
        header(m, "Subject"),
        "[ferry] FAILED acme-837-out: 1 file not delivered"
    );
    assert!(header(m, "From").contains("ferry@example.org"));
    let rcpt = header(m, "X-RcptTo");
    assert!(
        rcpt.contains("edi-ops@example.org") && rcpt.contains("acme-desk@example.org"),
        "{rcpt}"
    );
    for fact in [
        "Job:         acme-837-out",
        "Server:      srv (127.0.0.1:",
        "Direction:   push (",
        "denied-claims.837  14 bytes  sha256 ",
        "attempts 2",
        // The temp name is this delivery's own: denied-claims.837.f<id>-<tag>.part.
        "last error: the server refused '/inbound/denied-claims.837.f",
        "Permission denied",
        "Next scheduled run: ",
        "ferry history --job acme-837-out",
    ] {
        assert!(m.contains(fact), "'{fact}' missing:\n{m}");
    }
    assert!(!m.contains("ISA*00*denied"), "never file contents");
    assert!(
        !m.contains(support::ftps_server::PASSWORD),
        "never passwords"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_failures_within_repeat_after_send_one_email_then_recovery_sends_recovered() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("starttls");
    let (srv, s) = failing_setup(&mail_yaml(
        smtp.port,
        "starttls",
        Some(&smtp.ca_file()),
        "1h",
    ))
    .await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let engine = engine_with_mail(&s).await;
    for _ in 0..10 {
        assert_eq!(run(&engine, &s).await.failed(), 1);
    }
    let msgs = smtp.wait_for(2, Duration::from_secs(6));
    assert_eq!(msgs.len(), 1, "one email for ten failures: {msgs:?}");
    // The partner fixes the permission: the next good run says RECOVERED.
    srv.set_faults(Faults::default());
    let r = run(&engine, &s).await;
    assert_eq!(r.files[0].status, FileStatus::Delivered);
    let msgs = smtp.wait_for(2, Duration::from_secs(15));
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let rec = &msgs[1];
    assert_eq!(header(rec, "Subject"), "[ferry] RECOVERED acme-837-out");
    assert!(
        rec.contains("It had failed (files not transferred) since"),
        "{rec}"
    );
    assert!(rec.contains("denied.837"), "says what failed: {rec}");
    assert!(rec.contains(" for "), "and for how long: {rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_against_a_server_without_starttls_fails_loudly_and_keeps_the_mail() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("none");
    let (_srv, s) = failing_setup(&mail_yaml(smtp.port, "starttls", None, "1h")).await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let engine = engine_with_mail(&s).await;
    run(&engine, &s).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(smtp.messages().is_empty(), "never sent in clear text");
    let outbox = engine.ledger.lock().unwrap().outbox().unwrap();
    assert_eq!(outbox.len(), 1, "the mail stays queued");
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    let err: String = conn
        .query_row("SELECT last_error FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(
        err.to_ascii_lowercase().contains("starttls") || err.to_ascii_lowercase().contains("tls"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_does_not_slow_a_run_and_the_mail_goes_out_once_smtp_is_back() {
    if !available() {
        return;
    }
    let port = SmtpServer::free_port();
    let dir = tempfile::Builder::new()
        .prefix("ferry-smtp-")
        .tempdir()
        .unwrap();
    // Certificates first (the server is not started yet), so the config can name the CA.
    let ca_dir = dir.path().join("certs");
    std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-test-certs.sh"))
        .arg(&ca_dir)
        .output()
        .unwrap();
    let (_srv, s) = failing_setup(&mail_yaml(
        port,
        "starttls",
        Some(&ca_dir.join("ca.pem")),
        "1h",
    ))
    .await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let engine = engine_with_mail(&s).await;
    let t = Instant::now();
    let r = run(&engine, &s).await;
    let took = t.elapsed();
    assert_eq!(r.failed(), 1);
    assert!(
        took < Duration::from_secs(3),
        "the run took {took:?}: SMTP must not slow it"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let smtp = SmtpServer::start_on(dir, port, "starttls");
    let msgs = smtp.wait_for(1, Duration::from_secs(20));
    assert_eq!(msgs.len(), 1, "sent once SMTP came back");
    // The server has the message before ferry records it as sent.
    wait_for("the outbox to clear", Duration::from_secs(5), || {
        engine.ledger.lock().unwrap().outbox().unwrap().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_appears_in_any_email_or_debug_log_line_and_names_can_be_redacted() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("starttls");
    let (_srv, s) = failing_setup(&mail_yaml(
        smtp.port,
        "starttls",
        Some(&smtp.ca_file()),
        "1h",
    ))
    .await;
    let job = std::fs::read_to_string(s.path().join("jobs/acme-837-out.yaml")).unwrap();
    std::fs::write(
        s.path().join("jobs/acme-837-out.yaml"),
        format!("{job}redact_file_names: true\n"),
    )
    .unwrap();
    s.drop_file("outbox/denied-MEMBER-123456789.837", b"ISA~");
    let out = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["once", "acme-837-out"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = support::stderr(&out);
    assert!(log.contains("DEBUG"), "debug logging was on");
    assert!(
        !log.contains(support::ftps_server::PASSWORD),
        "a password in the log"
    );
    let msgs = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "once flushes queued mail before it exits");
    let m = &msgs[0];
    assert!(!m.contains(support::ftps_server::PASSWORD));
    assert!(!m.contains("MEMBER-123456789"), "redacted: {m}");
    assert!(m.contains("file #1 (sha256 "), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_within_30_days_gets_one_warning_a_day() {
    if !available() {
        return;
    }
    use support::real_servers::{Kind, RealServer};
    let smtp = SmtpServer::start("starttls");
    // The interop servers' certificates are valid for 30 days: under the threshold.
    let vs = RealServer::start(Kind::VsftpdExplicit);
    std::fs::create_dir_all(vs.root().join("inbound")).unwrap();
    let _ = std::process::Command::new("chown")
        .args(["-R", "ferrytest:"])
        .arg(vs.root())
        .status();
    let s = Setup::new(&format!(
        "    host: 127.0.0.1\n    port: {}\n    user: {}\n    password: {}\n    ca_file: {}\n",
        vs.port,
        support::real_servers::USER,
        support::real_servers::PASSWORD,
        vs.ca_file().display()
    ));
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!(
            "{cfg}{}",
            mail_yaml(smtp.port, "starttls", Some(&smtp.ca_file()), "1h")
        ),
    )
    .unwrap();
    s.job("acme-837-out", &format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n{FAST}"));
    let engine = engine_with_mail(&s).await;
    for i in 0..2 {
        s.drop_file(&format!("outbox/c{i}.837"), b"ISA~");
        assert_eq!(run(&engine, &s).await.delivered(), 1);
    }
    let msgs = smtp.wait_for(2, Duration::from_secs(8));
    assert_eq!(msgs.len(), 1, "one warning, not one per session: {msgs:?}");
    let subject = header(&msgs[0], "Subject");
    assert!(
        subject.starts_with("[ferry] WARNING acme-837-out: certificate of srv expires in"),
        "{subject}"
    );
    assert!(msgs[0].contains("ferry ping srv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_digest_counts_files_bytes_and_failures_per_job() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("starttls");
    let mail = mail_yaml(smtp.port, "starttls", Some(&smtp.ca_file()), "1h").replace(
        "  repeat_after: 1h\n",
        "  repeat_after: 1h\n  digest: daily at 07:00\n",
    );
    let (_srv, s) = failing_setup(&mail).await;
    s.drop_file("outbox/denied.837", b"ISA~");
    s.drop_file("outbox/fine.837", b"ISA*1234567~");
    let engine = engine_with_mail(&s).await;
    run(&engine, &s).await;
    smtp.wait_for(1, Duration::from_secs(10)); // the failure email
    let alerter = engine.alerter().unwrap().clone();
    alerter.start_digest(vec!["acme-837-out".to_string()]);
    let today = chrono::Utc::now().date_naive();
    alerter.queue_digest(today);
    let msgs = smtp.wait_for(2, Duration::from_secs(10));
    let digest = msgs
        .iter()
        .find(|m| header(m, "Subject").starts_with("[ferry] DIGEST"))
        .expect("a digest");
    assert_eq!(
        header(digest, "Subject"),
        format!("[ferry] DIGEST {today}: 1 file, 12 bytes, 1 failure")
    );
    assert!(digest.contains("acme-837-out"), "{digest}");
    // A copy of the audit trail's head leaves the machine with the digest.
    let head = engine
        .engine
        .ledger
        .lock()
        .unwrap()
        .audit_head()
        .unwrap()
        .unwrap();
    assert!(digest.contains(&head.hash), "the audit head in: {digest}");

    // A reload that adds a job: the next digest lists it too.
    let cfg = s.config();
    alerter.reconfigure(
        cfg.mail.clone(),
        vec!["acme-837-out".to_string(), "payer-837-out".to_string()],
    );
    alerter.queue_digest(today);
    let msgs = smtp.wait_for(3, Duration::from_secs(10));
    let second = msgs
        .iter()
        .filter(|m| header(m, "Subject").starts_with("[ferry] DIGEST"))
        .nth(1)
        .expect("a second digest");
    assert!(second.contains("payer-837-out"), "{second}");
    assert!(second.contains("acme-837-out"), "{second}");
}

/// `ferry run`, then SIGHUP with `mail` pointing at another SMTP server and
/// recipient: the next failure email goes there, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_sends_later_failure_emails_through_the_new_smtp_server_to_the_new_recipients() {
    if !available() {
        return;
    }
    let old = SmtpServer::start("starttls");
    let new = SmtpServer::start("starttls");
    let (_srv, s) =
        failing_setup(&mail_yaml(old.port, "starttls", Some(&old.ca_file()), "1h")).await;
    let watched = |outbox: &str| {
        format!(
            "direction: push\nserver: srv\nlocal_dir: ../{outbox}\nremote_dir: /inbound\nwatch: true\nstable_for: 100ms\n{FAST}"
        )
    };
    s.job("acme-837-out", &watched("outbox"));
    std::fs::create_dir_all(s.local("outbox")).unwrap();
    let log_path = s.path().join("agent.log");
    let mut agent = spawn_agent(&s, "agent.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.drop_file("outbox/denied-1.837", b"ISA~");
    let before = old.wait_for(1, Duration::from_secs(15));
    assert_eq!(before.len(), 1, "{}", log());
    assert!(header(&before[0], "To").contains("edi-ops@example.org"));

    // New SMTP server, new recipient, and a job added by the same reload.
    let yaml = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    let cut = yaml.find("mail:").unwrap();
    let moved = mail_yaml(new.port, "starttls", Some(&new.ca_file()), "1h")
        .replace("edi-ops@example.org", "night-desk@example.org");
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("{}{moved}", &yaml[..cut]),
    )
    .unwrap();
    s.job("payer-837-out", &watched("outbox2"));
    std::fs::create_dir_all(s.local("outbox2")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(10), || {
        log().contains("configuration reloaded")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.drop_file("outbox2/denied-2.837", b"ISA~");
    let after = new.wait_for(1, Duration::from_secs(15));
    assert_eq!(after.len(), 1, "{}", log());
    assert!(
        header(&after[0], "Subject").starts_with("[ferry] FAILED payer-837-out"),
        "{}",
        after[0]
    );
    let to = header(&after[0], "To");
    assert!(to.contains("night-desk@example.org"), "{to}");
    assert!(!to.contains("edi-ops@example.org"), "{to}");
    assert_eq!(
        old.messages().len(),
        1,
        "nothing more through the old server"
    );
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0), "{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_login_is_used_when_user_is_set_and_a_wrong_password_is_reported_not_leaked() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start_with_login("ferry", "smtp-Secret-7");
    let login = |pw: &str| {
        mail_yaml(smtp.port, "starttls", Some(&smtp.ca_file()), "1h").replace(
            "timeout: 3s }",
            &format!("timeout: 3s, user: ferry, password: \"{pw}\" }}"),
        )
    };
    // Right password: delivered through STARTTLS + AUTH.
    let (_srv, s) = failing_setup(&login("smtp-Secret-7")).await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let engine = engine_with_mail(&s).await;
    run(&engine, &s).await;
    let msgs = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "sent after logging in");
    assert!(!msgs[0].contains("smtp-Secret-7"));
    // Wrong password: not sent, queued with an error that names no secret.
    let (_srv2, s2) = failing_setup(&login("Wrong-Secret-9")).await;
    s2.drop_file("outbox/denied.837", b"ISA~");
    let engine2 = engine_with_mail(&s2).await;
    run(&engine2, &s2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.messages().len(), 1, "nothing more arrived");
    let conn = rusqlite::Connection::open(s2.path().join("state/ferry.db")).unwrap();
    let err: String = conn
        .query_row("SELECT last_error FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(
        err.contains("535") || err.to_ascii_lowercase().contains("auth"),
        "{err}"
    );
    assert!(!err.contains("Wrong-Secret-9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_smtp_delivers_the_alert() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("tls");
    let (_srv, s) = failing_setup(&mail_yaml(smtp.port, "tls", Some(&smtp.ca_file()), "1h")).await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let engine = engine_with_mail(&s).await;
    run(&engine, &s).await;
    let msgs = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        header(&msgs[0], "Subject"),
        "[ferry] FAILED acme-837-out: 1 file not delivered"
    );
}

/// Push scenario 9: an error of the whole run (here the outbound folder is a
/// regular file) is alerted like an unreachable server, and `once` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_as_a_whole_is_emailed_like_an_unreachable_server() {
    if !available() {
        return;
    }
    let smtp = SmtpServer::start("starttls");
    let (_srv, s) = failing_setup(&mail_yaml(
        smtp.port,
        "starttls",
        Some(&smtp.ca_file()),
        "1h",
    ))
    .await;
    let engine = engine_with_mail(&s).await;
    // Valid when loaded; then the folder is replaced by a file under the agent.
    let cfg = s.config();
    let job = &cfg.jobs["acme-837-out"];
    std::fs::remove_dir_all(s.local("outbox")).ok();
    std::fs::write(s.local("outbox"), b"not a folder").unwrap();
    let r = engine
        .run_job(job, Trigger::Once, RunOptions::default())
        .await;
    engine
        .alerter
        .after_run(job, &r, &ferry::transfer::next_run_text(job));
    let err = r
        .connection_error
        .clone()
        .expect("the run failed as a whole");
    assert!(err.contains("cannot create local_dir"), "{err}");
    let msgs = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(header(&msgs[0], "Subject").starts_with("[ferry] FAILED acme-837-out"));
    assert!(msgs[0].contains("cannot create local_dir"), "{}", msgs[0]);
}

/// Hardening 4: an SMTP server that drops every connection is not hammered:
/// the outbox honours its backoff, and `once` stops waiting for mail at the
/// first failed attempt, leaving the mail queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_drops_connections_gets_one_try_and_once_exits_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let (_srv, s) =
        failing_setup(&mail_yaml(port, "none", None, "1h").replace("timeout: 3s", "timeout: 10s"))
            .await;
    s.drop_file("outbox/denied.837", b"ISA~");
    let t = std::time::Instant::now();
    let out = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["once", "acme-837-out"])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
    assert!(
        took < Duration::from_secs(5),
        "once waited {took:?} for mail it cannot send"
    );
    std::thread::sleep(Duration::from_millis(500));
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} SMTP connections for one alert");
    let conn = rusqlite::Connection::open(s.path().join("state/ferry.db")).unwrap();
    let queued: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(queued, 1, "the mail stays queued for the next run");
}

/// A held file reaches a person: one HELD email naming the file, why it is
/// held and the two commands that decide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_file_sends_one_email_with_the_commands_that_decide_it() {
    if !available() {
        return;
    }
    use support::real_servers::{PASSWORD, RealServer, USER};
    let ftp = RealServer::quirky("consume");
    std::fs::create_dir_all(ftp.root().join("inbound")).unwrap();
    let _ = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(ftp.root())
        .status();
    let smtp = SmtpServer::start("starttls");
    let s = Setup::new(&format!(
        "    host: 127.0.0.1\n    port: {}\n    user: {USER}\n    password: {PASSWORD}\n    ca_file: {}\n{}",
        ftp.port,
        ftp.ca_file().display(),
        mail_yaml(smtp.port, "starttls", Some(&smtp.ca_file()), "1h")
    ));
    s.job(
        "acme-837-out",
        &format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nupload: direct\n{FAST}"),
    );
    s.drop_file("outbox/taken.837", b"ISA*00*taken~");
    let engine = engine_with_mail(&s).await;
    let r = run(&engine, &s).await;
    assert_eq!(r.held(), 1, "{r:?}");
    let msgs = smtp.wait_for(2, Duration::from_secs(10));
    let held: Vec<&String> = msgs
        .iter()
        .filter(|m| header(m, "Subject").starts_with("[ferry] HELD acme-837-out"))
        .collect();
    assert_eq!(held.len(), 1, "{msgs:?}");
    let m = held[0];
    assert_eq!(
        header(m, "Subject"),
        "[ferry] HELD acme-837-out: 1 file needs a decision"
    );
    for fact in [
        "taken.837",
        "why: the server confirmed the whole upload",
        "ferry confirm acme-837-out FILE",
        "ferry resend acme-837-out FILE",
    ] {
        assert!(m.contains(fact), "'{fact}' missing:\n{m}");
    }
    assert!(!m.contains("ISA*00*taken"), "never file contents");
}
