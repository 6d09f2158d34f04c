//! `ferry ping SERVER`: connect, negotiate TLS, log in, list the remote root
//! (which proves a data connection resumed the TLS session) and print what
//! an operator needs to trust, pin or troubleshoot the partner.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Outcome, write_all};
use crate::config::{Server, TlsMode};
use crate::transport::{FtpsSession, HashCommand, Remote, TransportError, tls};

/// Certificates expiring sooner than this get a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// A ping that failed: exit 1, with the error's kind in the message.
#[derive(Debug, thiserror::Error)]
#[error("ping {server} failed ({kind:?}): {source}")]
pub struct PingFailed {
    pub server: String,
    pub kind: crate::transport::ErrorKind,
    #[source]
    pub source: TransportError,
}

/// `quirks`: what the ledger remembers of this server (`(quirk, value, reply)`).
pub fn ping(
    server: Arc<Server>,
    quirks: Vec<(String, u64, Option<String>)>,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(probe(server.clone()));
    match report {
        Ok(mut text) => {
            text.push_str(&describe_quirks(&quirks));
            write_all(out, &text)?;
            Ok(Outcome::Success)
        }
        Err(e) => Err(PingFailed {
            server: server.name.clone(),
            kind: e.kind(),
            source: e,
        }
        .into()),
    }
}

async fn probe(server: Arc<Server>) -> Result<String, TransportError> {
    let mut session = FtpsSession::connect(server.clone()).await?;
    let listed = session.list("/").await;
    let report = session.report();
    let caps = session.capabilities().clone();
    session.close().await;
    let entries = listed?;

    let mut s = String::new();
    let mode = match server.tls {
        TlsMode::Explicit => "explicit TLS (AUTH TLS)",
        TlsMode::Implicit => "implicit TLS",
        TlsMode::None => "NO TLS: passwords and files travel in clear text",
    };
    let _ = writeln!(
        s,
        "server       {} ({}:{}, {mode})",
        server.name, server.host, server.port
    );
    let _ = writeln!(s, "login        {} accepted", server.user);
    if let Some(tls) = &report.tls {
        let version = match tls.version {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
            _ => "unknown",
        };
        let _ = writeln!(
            s,
            "tls          {version}, {} ({})",
            tls.cipher.as_deref().unwrap_or("?"),
            tls.library.as_deref().unwrap_or("?")
        );
        let _ = writeln!(s, "             ({})", report.tls_reason);
        if let Some(cert) = tls.peer_chain.first() {
            describe_certificate(&mut s, cert.as_ref());
        }
        let _ = writeln!(
            s,
            "data         {} of {} data connection(s) resumed the TLS session",
            tls.data_resumed, tls.data_connections
        );
    }
    if let Some(w) = &report.welcome {
        let _ = writeln!(s, "greeting     {}", w.lines().next().unwrap_or(""));
    }
    let _ = writeln!(
        s,
        "server hash  {}",
        match caps.hash {
            Some(HashCommand::Hash) =>
                "SHA-256 via HASH: uploads and downloads are verified by hash",
            Some(HashCommand::XSha256) =>
                "SHA-256 via XSHA256: uploads and downloads are verified by hash",
            None => "not offered: verify: auto compares sizes",
        }
    );
    let _ = writeln!(
        s,
        "resume       {}",
        if caps.resume {
            "REST STREAM offered"
        } else {
            "not offered"
        }
    );
    let _ = writeln!(
        s,
        "listing      / holds {} entr{} ({})",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        if caps.mlsd { "MLSD" } else { "LIST" }
    );
    let _ = writeln!(s, "features     {}", caps.feat.join(", "));
    Ok(s)
}

/// The quirks ferry met on earlier runs, as the ledger remembers them.
fn describe_quirks(rows: &[(String, u64, Option<String>)]) -> String {
    let q = crate::transport::Quirks::from_rows(rows);
    let lines = q.describe();
    if lines.is_empty() {
        return "quirks       none met so far\n".to_string();
    }
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        let label = if i == 0 { "quirks" } else { "" };
        let _ = writeln!(s, "{label:<12} {l}");
    }
    s
}

fn describe_certificate(s: &mut String, der: &[u8]) {
    let _ = writeln!(s, "fingerprint  {}", tls::fingerprint(der));
    let _ = writeln!(s, "             (the form pin_sha256 accepts)");
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let _ = writeln!(s, "subject      {}", cert.subject());
            let _ = writeln!(s, "issuer       {}", cert.issuer());
            let not_after = cert.validity().not_after.timestamp();
            if let Some(exp) = DateTime::<Utc>::from_timestamp(not_after, 0) {
                let days = (exp - Utc::now()).num_days();
                let warn = if days < 0 {
                    "  EXPIRED".to_string()
                } else if days < EXPIRY_WARNING_DAYS {
                    format!("  WARNING: expires in {days} days")
                } else {
                    format!("  (in {days} days)")
                };
                let _ = writeln!(
                    s,
                    "expires      {}{warn}",
                    exp.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        Err(e) => {
            let _ = writeln!(s, "certificate  cannot be parsed: {e}");
        }
    }
}
