//! Guarantee 6 at every level: a full push, pull and failure email with
//! `RUST_LOG=trace` against real servers (vsftpd, aiosmtpd with AUTH), and
//! no password in any output.

mod support;

use std::process::Command;
use std::time::Duration;

use support::real_servers::{Kind, PASSWORD, RealServer, SmtpServer, USER, available};

const SMTP_PASSWORD: &str = "smtp-Trace-Secret-3";

#[test]
fn no_password_appears_at_trace_level_in_a_push_a_pull_and_an_alert() {
    if !available() {
        return;
    }
    let srv = RealServer::start(Kind::VsftpdExplicit);
    for d in ["inbound", "outbound"] {
        std::fs::create_dir_all(srv.root().join(d)).unwrap();
    }
    std::fs::write(srv.root().join("outbound/ack.999"), b"ISA*00*ack~").unwrap();
    let _ = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(srv.root())
        .status();
    let smtp = SmtpServer::start_with_login("ferry", SMTP_PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("jobs")).unwrap();
    std::fs::create_dir_all(p.join("outbox")).unwrap();
    std::fs::write(
        p.join("ferry.yaml"),
        format!(
            "servers:\n  srv:\n    host: 127.0.0.1\n    port: {}\n    user: {USER}\n    password: {PASSWORD}\n    ca_file: {}\n    timeout: 15s\nmail:\n  smtp: {{ host: localhost, port: {}, security: starttls, ca_file: \"{}\", timeout: 5s, user: ferry, password: \"{SMTP_PASSWORD}\" }}\n  from: \"ferry <ferry@example.org>\"\n  to: [edi-ops@example.org]\n",
            srv.port,
            srv.ca_file().display(),
            smtp.port,
            smtp.ca_file().display()
        ),
    )
    .unwrap();
    let retry = "retry: { attempts: 1 }\n";
    std::fs::write(
        p.join("jobs/out.yaml"),
        format!("direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n{retry}"),
    )
    .unwrap();
    // A folder that does not exist on the server: this job fails, so an email goes out.
    std::fs::write(
        p.join("jobs/broken.yaml"),
        format!("direction: push\nserver: srv\nlocal_dir: ../outbox2\nremote_dir: /missing\nstable_for: 0s\n{retry}"),
    )
    .unwrap();
    std::fs::write(
        p.join("jobs/in.yaml"),
        "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\nafter_pull: delete\n",
    )
    .unwrap();
    std::fs::write(p.join("outbox/claims.837"), b"ISA*00*claims~").unwrap();
    std::fs::create_dir_all(p.join("outbox2")).unwrap();
    std::fs::write(p.join("outbox2/lost.837"), b"ISA*00*lost~").unwrap();
    let out = Command::new(support::ferry_bin())
        .arg("--config")
        .arg(p.join("ferry.yaml"))
        .args(["once", "out", "in", "broken"])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stdout = support::stdout(&out);
    let log = support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("delivered  claims.837"), "{stdout}");
    assert!(stdout.contains("delivered  ack.999"), "{stdout}");
    assert!(log.contains("TRACE"), "trace logging was on");
    assert!(
        log.contains("CC IN") || log.contains("STREAM") || log.contains("suppaftp"),
        "the FTP library logged at all"
    );
    // The failure email (and the test certificates' expiry warnings) went out through AUTH.
    let msgs = smtp.wait_for(4, Duration::from_secs(10));
    assert!(msgs.iter().any(|m| m.contains("FAILED broken")), "{msgs:?}");
    for secret in [PASSWORD, SMTP_PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the trace log");
        assert!(!stdout.contains(secret), "{secret} on stdout");
        assert!(
            msgs.iter().all(|m| !m.contains(secret)),
            "{secret} in an email"
        );
    }
    // AUTH PLAIN carries the password base64-encoded: not that either.
    let plain = format!("\0ferry\0{SMTP_PASSWORD}");
    let b64 = base64_encode(plain.as_bytes());
    assert!(
        !log.contains(&b64),
        "the SMTP password, base64-encoded, in the log"
    );
}

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
