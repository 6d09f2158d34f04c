//! FTPS over suppaftp: explicit (`AUTH TLS`) and implicit TLS, `PBSZ 0` +
//! `PROT P`, binary type, EPSV or PASV, every step under the server's
//! timeout, TLS session reuse on every data connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use suppaftp::tokio::ImplAsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::error::TransportError;
use super::listing::{self, RemoteEntry};
use super::tls::{self, Connector, SharedTlsState, TlsMaterial, TlsState};
use super::{Capabilities, HashCommand, Quirks, Remote, Result};
use crate::config::{Server, TlsMode, TlsVersion};

type Ftp = ImplAsyncFtpStream<tls::TlsStream>;

/// Copy buffer for streaming; memory per transfer stays at this size.
const CHUNK: usize = 64 * 1024;

/// What a session can tell about itself, for `ferry ping` and the logs.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub tls: Option<TlsState>,
    /// Why this TLS version was offered.
    pub tls_reason: String,
    pub welcome: Option<String>,
}

/// One logged-in FTPS session with one server.
pub struct FtpsSession {
    server: Arc<Server>,
    /// `None` once the connection is known to be broken.
    ftp: Option<Ftp>,
    material: Arc<Option<TlsMaterial>>,
    /// The TLS versions this session offers (settled at first connect).
    versions: Vec<TlsVersion>,
    tls_reason: String,
    tls: SharedTlsState,
    caps: Capabilities,
    welcome: Option<String>,
    /// What the server was found to refuse, by this session or earlier ones.
    quirks: Quirks,
    /// The folder the login started in (PWD), to come back to after a listing.
    home: String,
    /// Lines of the last listing that could not be read.
    unparsed: u64,
}

impl FtpsSession {
    /// Connects, negotiates TLS, logs in and reads FEAT.
    pub async fn connect(server: Arc<Server>) -> Result<FtpsSession> {
        let material = match server.tls {
            TlsMode::None => None,
            _ => Some(TlsMaterial::load(&server).map_err(TransportError::Local)?),
        };
        let material = Arc::new(material);
        let (versions, reason) = match &server.tls_versions {
            Some(v) => (
                v.clone(),
                format!("tls_versions allows {}", list_versions(v)),
            ),
            None => (
                vec![TlsVersion::V1_2],
                "TLS 1.2 is preferred: it resumes on every data connection with every server"
                    .to_string(),
            ),
        };
        let mut session = FtpsSession {
            server,
            ftp: None,
            material,
            versions,
            tls_reason: reason,
            tls: Arc::new(Mutex::new(TlsState::default())),
            caps: Capabilities::default(),
            welcome: None,
            quirks: Quirks::default(),
            home: "/".to_string(),
            unparsed: 0,
        };
        match session.open().await {
            Err(e)
                if session.server.tls_versions.is_none()
                    && e.kind() == super::ErrorKind::TlsVersion =>
            {
                session.versions = vec![TlsVersion::V1_3];
                session.tls_reason = "the server refused TLS 1.2, so TLS 1.3 is used".to_string();
                session.open().await?;
            }
            r => r?,
        }
        Ok(session)
    }

    pub fn report(&self) -> SessionReport {
        SessionReport {
            tls: (self.server.tls != TlsMode::None)
                .then(|| self.tls.lock().map(|s| s.clone()).unwrap_or_default()),
            tls_reason: self.tls_reason.clone(),
            welcome: self.welcome.clone(),
        }
    }

    fn timeout(&self) -> Duration {
        self.server.timeout
    }

    /// Opens a fresh control connection and logs in, replacing any old one.
    async fn open(&mut self) -> Result<()> {
        let server = self.server.clone();
        // Counters span the whole session, across fresh control connections.
        let (data_connections, data_resumed) = self
            .tls
            .lock()
            .map(|s| (s.data_connections, s.data_resumed))
            .unwrap_or_default();
        self.tls = Arc::new(Mutex::new(TlsState {
            data_connections,
            data_resumed,
            ..TlsState::default()
        }));
        let t = self.timeout();
        let addr = resolve(&server, t).await?;
        let connector = match self.material.as_ref() {
            Some(m) => Some(
                Connector::new(&server, m, &self.versions, self.tls.clone(), t)
                    .map_err(TransportError::Local)?,
            ),
            None => None,
        };
        let mut ftp = match (server.tls, connector) {
            (TlsMode::Implicit, Some(connector)) => {
                let mut ftp = within(
                    t,
                    "connecting with implicit TLS",
                    Ftp::connect_secure_implicit(addr, connector, &server.host),
                )
                .await?
                .map_err(|e| self.map(e, "connecting with implicit TLS", None))?;
                // suppaftp leaves these to us in implicit mode.
                for cmd in ["PBSZ 0", "PROT P"] {
                    within(t, cmd, ftp.custom_command(cmd, &[Status::CommandOk]))
                        .await?
                        .map_err(|e| self.map(e, cmd, None))?;
                }
                ftp
            }
            (mode, connector) => {
                let tcp = tcp_connect(addr, t).await?;
                let ftp = within(
                    t,
                    "reading the server greeting",
                    Ftp::connect_with_stream(tcp),
                )
                .await?
                .map_err(|e| self.map(e, "reading the server greeting", None))?;
                match (mode, connector) {
                    (TlsMode::Explicit, Some(connector)) => within(
                        t,
                        "starting TLS (AUTH TLS)",
                        ftp.into_secure(connector, &server.host),
                    )
                    .await?
                    .map_err(|e| {
                        // suppaftp sends PBSZ 0 and PROT P once the handshake
                        // is done: a refusal then is theirs, not AUTH TLS's.
                        let handshaken = self.tls.lock().is_ok_and(|s| s.version.is_some());
                        let step = if handshaken {
                            "protecting data connections (PBSZ 0, PROT P)"
                        } else {
                            "starting TLS (AUTH TLS)"
                        };
                        self.map(e, step, None)
                    })?,
                    _ => ftp,
                }
            }
        };
        keepalive(&*ftp.get_ref().await);
        self.welcome = ftp.get_welcome_msg().map(str::to_string);
        let password = server.password.as_ref().map(|p| p.expose()).unwrap_or("");
        within(t, "logging in", ftp.login(server.user.as_str(), password))
            .await?
            .map_err(|e| match e {
                // 421 (too many sessions, shutting down) is transient; any other
                // refusal is the server's verdict on these credentials.
                FtpError::UnexpectedResponse(r) if r.status.code() != 421 => {
                    TransportError::LoginRefused {
                        user: server.user.clone(),
                        reply: reply_text(&r),
                    }
                }
                e => self.map(e, "logging in", None),
            })?;
        within(
            t,
            "setting binary type",
            ftp.transfer_type(FileType::Binary),
        )
        .await?
        .map_err(|e| self.map(e, "setting binary type (TYPE I)", None))?;
        if let Ok(Ok(home)) = within(t, "PWD", ftp.pwd()).await {
            self.home = home;
        }
        let feat = within(t, "reading FEAT", ftp.feat())
            .await?
            .unwrap_or_default();
        self.caps = capabilities(&feat);
        if self.caps.epsv {
            ftp.set_mode(Mode::ExtendedPassive);
        } else {
            ftp.set_mode(Mode::Passive);
        }
        // A PASV reply naming another host than the control connection's
        // would let a server point ferry anywhere: unless the operator trusts
        // it, the data connection goes to the control peer (as curl does).
        let control_ip = addr.ip();
        let follow = server.trust_pasv_address && !server.passive_nat_workaround;
        let warned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let name = server.name.clone();
        ftp = ftp.passive_stream_builder(move |pasv: SocketAddr| {
            let mut addr = pasv;
            if pasv.ip() != control_ip && !follow {
                addr = SocketAddr::new(control_ip, pasv.port());
                if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    warn!(server = %name, pasv = %pasv.ip(), control = %control_ip, "the server's PASV reply names another address than the control connection; connecting to the control connection's address (set trust_pasv_address: true to follow it)");
                }
            }
            Box::pin(async move {
                match tokio::time::timeout(t, TcpStream::connect(addr)).await {
                    Ok(r) => r.map_err(FtpError::ConnectionError),
                    Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("data connection to {addr} timed out"),
                    ))),
                }
            })
        });
        if feat.contains_key("UTF8") {
            let _ = within(
                t,
                "OPTS UTF8",
                ftp.custom_command("OPTS UTF8 ON", &[Status::CommandOk]),
            )
            .await;
        }
        if self.caps.hash == Some(HashCommand::Hash) {
            let ok = within(
                t,
                "OPTS HASH",
                ftp.custom_command("OPTS HASH SHA-256", &[Status::CommandOk]),
            )
            .await;
            if !matches!(ok, Ok(Ok(_))) {
                debug!(server = %server.name, "OPTS HASH SHA-256 refused; HASH is not used");
                self.caps.hash = feat.contains_key("XSHA256").then_some(HashCommand::XSha256);
            }
        }
        if let Ok(s) = self.tls.lock()
            && let Some(v) = s.version
        {
            info!(
                server = %server.name,
                tls_version = version_name(v),
                cipher = s.cipher.as_deref().unwrap_or("?"),
                reason = %self.tls_reason,
                "logged in over TLS {}",
                version_name(v)
            );
        }
        if let Some(mut old) = self.ftp.replace(ftp) {
            let _ = tokio::time::timeout(t, old.quit()).await;
        }
        Ok(())
    }

    fn ftp(&mut self) -> Result<&mut Ftp> {
        self.ftp.as_mut().ok_or_else(|| TransportError::Connection {
            step: "using the session".to_string(),
            detail: "the connection was closed after an earlier error".to_string(),
        })
    }

    /// Marks the session broken when `e` leaves the control connection in an unknown state.
    fn fail<T>(&mut self, e: TransportError) -> Result<T> {
        if matches!(
            e,
            TransportError::Timeout { .. } | TransportError::Connection { .. }
        ) {
            self.ftp = None;
        }
        Err(e)
    }

    fn map(&self, e: FtpError, step: &str, path: Option<&str>) -> TransportError {
        map_error(&self.server, &self.tls, &self.versions, e, step, path)
    }

    async fn step<T, F>(&mut self, step: &str, path: Option<&str>, f: F) -> Result<T>
    where
        F: for<'a> FnOnce(
            &'a mut Ftp,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = suppaftp::FtpResult<T>> + Send + 'a>,
        >,
    {
        let t = self.timeout();
        let ftp = self.ftp()?;
        let r = within(t, step, f(ftp)).await;
        match r {
            Err(e) => self.fail(e),
            Ok(Err(e)) => {
                let e = self.map(e, step, path);
                self.fail(e)
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Closes a transfer's data connection and reads the server's verdict.
    async fn finish(
        &mut self,
        stream: suppaftp::tokio::TransferStream<tls::TlsStream>,
        step: &str,
        path: &str,
    ) -> Result<()> {
        let t = self.timeout();
        match within(t, step, stream.finish()).await {
            Err(e) => self.fail(e),
            Ok(Err(e)) => {
                let e = self.map(e, step, Some(path));
                self.fail(e)
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    /// After a data connection failed its TLS handshake on upload, the server
    /// may have created an empty file; a fresh session removes it.
    async fn remove_empty_leftover(&mut self, path: &str) {
        if self.open().await.is_err() {
            return;
        }
        if let Ok(Some(0)) = self.size(path).await
            && self.delete(path).await.is_ok()
        {
            warn!(server = %self.server.name, path, "removed the empty file a refused data connection left behind");
        }
    }
}

#[async_trait]
impl Remote for FtpsSession {
    async fn list(&mut self, dir: &str) -> Result<Vec<RemoteEntry>> {
        let t = self.timeout();
        let mlsd = self.caps.mlsd;
        // Into the folder first: a missing or unreadable folder is an error on
        // every server (vsftpd lists one as empty, with a success reply).
        let d = dir.to_string();
        self.step(&format!("entering {dir}"), Some(dir), move |f| {
            Box::pin(async move { f.cwd(&d).await })
        })
        .await?;
        let step = format!("listing {dir}");
        let cmd = if mlsd { "MLSD" } else { "LIST" };
        let (_, mut stream) = self
            .step(&step, Some(dir), move |f| {
                Box::pin(async move {
                    f.custom_data_command(cmd, &[Status::AboutToSend, Status::AlreadyOpen])
                        .await
                })
            })
            .await?;
        let max = self.server.max_listing;
        let mut collected = listing::Collector::default();
        let mut lines = 0u64;
        let mut reader = LineReader::default();
        let read: Result<()> = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = within(t, &step, stream.read(&mut buf))
                    .await?
                    .map_err(|e| TransportError::Connection {
                        step: step.clone(),
                        detail: e.to_string(),
                    })?;
                let done = n == 0;
                for line in reader.feed(&buf[..n], done) {
                    lines += 1;
                    if lines > max {
                        return Err(TransportError::Local(format!(
                            "the listing of {dir} has more than {max} entries; ferry stopped reading it (raise max_listing for this server if the folder really holds that many)"
                        )));
                    }
                    collected.push(line.as_deref(), mlsd, dir);
                }
                if done {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(e) = read {
            // The data connection is abandoned mid-listing: the session is done.
            drop(stream);
            self.ftp = None;
            return Err(e);
        }
        self.finish(stream, &format!("finishing the listing of {dir}"), dir)
            .await?;
        let home = self.home.clone();
        self.step("returning to the login folder", None, move |f| {
            Box::pin(async move { f.cwd(&home).await })
        })
        .await?;
        self.unparsed = collected.unparsed;
        Ok(collected.entries)
    }

    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64> {
        let t = self.timeout();
        let step = format!("uploading {path}");
        let p = path.to_string();
        let opened = self
            .step(&step, Some(path), move |f| {
                Box::pin(async move {
                    if offset > 0 {
                        f.resume_transfer(offset as usize).await?;
                    }
                    f.put_with_stream(&p).await
                })
            })
            .await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                if offset == 0 && matches!(e, TransportError::Tls { .. }) {
                    self.remove_empty_leftover(path).await;
                }
                return Err(e);
            }
        };
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        let copied: Result<()> = async {
            loop {
                let n = src.read(&mut buf).await.map_err(|e| {
                    TransportError::Local(format!("reading the local file for {path}: {e}"))
                })?;
                if n == 0 {
                    return Ok(());
                }
                within(t, &step, stream.write_all(&buf[..n]))
                    .await?
                    .map_err(|e| TransportError::Connection {
                        step: step.clone(),
                        detail: e.to_string(),
                    })?;
                sent += n as u64;
            }
        }
        .await;
        if let Err(e) = copied {
            // The data connection is abandoned mid-file; the control
            // connection's state is unknown, so this session is done.
            drop(stream);
            self.ftp = None;
            return Err(e);
        }
        self.finish(stream, &format!("finishing the upload of {path}"), path)
            .await
            .map(|()| sent)
    }

    async fn download(
        &mut self,
        path: &str,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        let t = self.timeout();
        let step = format!("downloading {path}");
        let p = path.to_string();
        let mut stream = self
            .step(&step, Some(path), move |f| {
                Box::pin(async move {
                    if offset > 0 {
                        f.resume_transfer(offset as usize).await?;
                    }
                    f.retr_as_stream(&p).await
                })
            })
            .await?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        let copied: Result<()> = async {
            loop {
                let n = within(t, &step, stream.read(&mut buf))
                    .await?
                    .map_err(|e| TransportError::Connection {
                        step: step.clone(),
                        detail: e.to_string(),
                    })?;
                if n == 0 {
                    return Ok(());
                }
                dst.write_all(&buf[..n]).await.map_err(|e| {
                    TransportError::Local(format!("writing the local copy of {path}: {e}"))
                })?;
                got += n as u64;
            }
        }
        .await;
        if let Err(e) = copied {
            drop(stream);
            self.ftp = None;
            return Err(e);
        }
        self.finish(stream, &format!("finishing the download of {path}"), path)
            .await
            .map(|()| got)
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (from.to_string(), to.to_string());
        self.step(&format!("renaming {from} to {to}"), Some(from), move |f| {
            Box::pin(async move { f.rename(&a, &b).await })
        })
        .await
    }

    async fn delete(&mut self, path: &str) -> Result<()> {
        let p = path.to_string();
        self.step(&format!("deleting {path}"), Some(path), move |f| {
            Box::pin(async move { f.rm(&p).await })
        })
        .await
    }

    async fn mkdir(&mut self, path: &str) -> Result<()> {
        let p = path.to_string();
        self.step(&format!("creating folder {path}"), Some(path), move |f| {
            Box::pin(async move { f.mkdir(&p).await })
        })
        .await
    }

    async fn size(&mut self, path: &str) -> Result<Option<u64>> {
        if self.quirks.size_refused {
            return Ok(self.stat(path).await?.map(|e| e.size));
        }
        let p = path.to_string();
        match self
            .step(
                &format!("asking the size of {path}"),
                Some(path),
                move |f| Box::pin(async move { f.size(&p).await }),
            )
            .await
        {
            Ok(n) => Ok(Some(n as u64)),
            // 500/502/504: SIZE is not there at all (vsftpd `cmds_denied`).
            Err(e) if matches!(e.refusal_code(), Some(500 | 502 | 504)) => {
                warn!(server = %self.server.name, error = %e, "the server refuses SIZE; sizes come from listings");
                self.quirks.size_refused = true;
                Ok(self.stat(path).await?.map(|e| e.size))
            }
            // Any other refusal: missing or forbidden, no reply wording tells
            // which. The folder's listing decides; a listed file whose SIZE is
            // refused (vsftpd `cmds_denied=SIZE` answers 550) is sized from listings.
            Err(e) if e.refusal_code().is_some() => match self.stat(path).await? {
                None => Ok(None),
                Some(entry) => {
                    warn!(server = %self.server.name, error = %e, "the server refuses SIZE of a listed file; sizes come from listings");
                    self.quirks.size_refused = true;
                    Ok(Some(entry.size))
                }
            },
            Err(e) => Err(e),
        }
    }

    /// MLST where the server has it (one round trip, facts to the second);
    /// a refusal, or no MLST, asks the folder's listing.
    async fn stat(&mut self, path: &str) -> Result<Option<RemoteEntry>> {
        if self.caps.mlsd {
            let p = path.to_string();
            let got = self
                .step(&format!("asking about {path}"), Some(path), move |f| {
                    Box::pin(async move { f.mlst(Some(&p)).await })
                })
                .await;
            match got {
                Ok(line) => {
                    if let Ok(file) = suppaftp::list::ListParser::parse_mlst(&line) {
                        let (_, name) = super::split_path(path);
                        let mtime: chrono::DateTime<chrono::Utc> = file.modified().into();
                        return Ok(Some(RemoteEntry {
                            name: name.to_string(),
                            size: file.size() as u64,
                            mtime: (mtime.timestamp() > 0).then_some(mtime),
                            is_file: file.is_file(),
                        }));
                    }
                }
                Err(e) if e.refusal_code().is_some() => {}
                Err(e) => return Err(e),
            }
        }
        let (dir, name) = super::split_path(path);
        Ok(self.list(dir).await?.into_iter().find(|e| e.name == name))
    }

    async fn mdtm(&mut self, path: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        if !self
            .caps
            .feat
            .iter()
            .any(|f| f.eq_ignore_ascii_case("MDTM"))
        {
            return Ok(None);
        }
        let p = path.to_string();
        match self
            .step(
                &format!("asking the time of {path}"),
                Some(path),
                move |f| Box::pin(async move { f.mdtm(&p).await }),
            )
            .await
        {
            Ok(t) => Ok(Some(t.and_utc())),
            Err(e) if e.refusal_code().is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn sha256(&mut self, path: &str) -> Result<Option<[u8; 32]>> {
        let Some(cmd) = self.caps.hash else {
            return Ok(None);
        };
        let line = match cmd {
            HashCommand::Hash => format!("HASH {path}"),
            HashCommand::XSha256 => format!("XSHA256 {path}"),
        };
        let l = line.clone();
        let reply = self
            .step(
                &format!("asking the SHA-256 of {path}"),
                Some(path),
                move |f| {
                    Box::pin(async move {
                        f.custom_command(&l, &[Status::File, Status::RequestedFileActionOk])
                            .await
                    })
                },
            )
            .await?;
        let text = reply_text(&reply);
        parse_hash_reply(&text, cmd)
            .map(Some)
            .map_err(|why| TransportError::Server {
                step: line,
                code: reply_code(&reply),
                text: format!("{why}: {text}"),
            })
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn quirks(&self) -> Quirks {
        self.quirks.clone()
    }

    fn listing_unparsed(&self) -> u64 {
        self.unparsed
    }

    fn set_quirks(&mut self, quirks: Quirks) {
        self.quirks = quirks;
    }

    fn is_open(&self) -> bool {
        self.ftp.is_some()
    }

    fn certificate_expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let chain = self.tls.lock().ok()?.peer_chain.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
        chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
    }

    fn certificate_fingerprint(&self) -> Option<String> {
        let chain = self.tls.lock().ok()?.peer_chain.clone();
        chain.first().map(|c| tls::fingerprint(c))
    }

    async fn close(&mut self) {
        if let Some(mut ftp) = self.ftp.take() {
            let _ = tokio::time::timeout(self.server.timeout, ftp.quit()).await;
        }
    }
}

/// Splits a listing's bytes into lines (CRLF or LF), at most 8 KiB each: a
/// longer line is reported as `None` and skipped to its end, so a hostile
/// server cannot grow memory with one endless line.
#[derive(Default)]
struct LineReader {
    line: Vec<u8>,
    too_long: bool,
}

impl LineReader {
    const MAX: usize = 8 * 1024;

    fn feed(&mut self, data: &[u8], end: bool) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.extend(self.take());
            } else if self.line.len() < Self::MAX {
                self.line.push(b);
            } else {
                self.too_long = true;
            }
        }
        if end {
            out.extend(self.take());
        }
        out
    }

    fn take(&mut self) -> Option<Option<String>> {
        let too_long = std::mem::take(&mut self.too_long);
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if too_long {
            return Some(None);
        }
        if line.is_empty() {
            return None;
        }
        Some(Some(String::from_utf8_lossy(&line).into_owned()))
    }
}

/// Runs one protocol step under the server's timeout.
async fn within<T>(t: Duration, step: &str, f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(t, f)
        .await
        .map_err(|_| TransportError::Timeout {
            step: step.to_string(),
            after: t,
        })
}

async fn resolve(server: &Server, t: Duration) -> Result<SocketAddr> {
    let host = server.host.clone();
    let found = within(
        t,
        &format!("resolving {host}"),
        tokio::net::lookup_host((host.as_str(), server.port)),
    )
    .await?
    .map_err(|e| TransportError::Resolve {
        host: host.clone(),
        detail: e.to_string(),
    })?;
    let mut addrs: Vec<SocketAddr> = found.collect();
    // Prefer IPv4: FTP's PASV cannot express IPv6 and many partners' firewalls only know v4.
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| TransportError::Resolve {
            host,
            detail: "no addresses".to_string(),
        })
}

async fn tcp_connect(addr: SocketAddr, t: Duration) -> Result<TcpStream> {
    match within(
        t,
        &format!("connecting to {addr}"),
        TcpStream::connect(addr),
    )
    .await?
    {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(TransportError::Refused {
                addr: addr.to_string(),
            })
        }
        Err(e) => Err(TransportError::Connection {
            step: format!("connecting to {addr}"),
            detail: e.to_string(),
        }),
    }
}

/// TCP keepalive on the control connection, so an idle NAT does not drop it
/// silently during a long transfer.
fn keepalive(sock: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(sock).set_tcp_keepalive(&ka) {
        debug!("cannot enable TCP keepalive: {e}");
    }
}

fn capabilities(feat: &suppaftp::types::Features) -> Capabilities {
    let has = |k: &str| feat.contains_key(k);
    let hash = match feat.get("HASH") {
        Some(Some(algs))
            if algs
                .to_ascii_uppercase()
                .split(';')
                .any(|a| a.trim_end_matches('*') == "SHA-256") =>
        {
            Some(HashCommand::Hash)
        }
        _ if has("XSHA256") => Some(HashCommand::XSha256),
        _ => None,
    };
    let mut lines: Vec<String> = feat
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} {v}"),
            None => k.clone(),
        })
        .collect();
    lines.sort();
    Capabilities {
        hash,
        resume: feat.get("REST").is_some_and(|v| {
            v.as_deref()
                .unwrap_or("")
                .to_ascii_uppercase()
                .contains("STREAM")
        }),
        mlsd: has("MLST") || has("MLSD"),
        epsv: has("EPSV"),
        feat: lines,
    }
}

/// Reads the SHA-256 out of a `HASH` (`213 SHA-256 0-49 <hex> name`) or
/// `XSHA256` (`213 <hex>`) reply. A HASH reply naming another algorithm is
/// refused: it must never pass for a SHA-256.
pub fn parse_hash_reply(text: &str, cmd: HashCommand) -> std::result::Result<[u8; 32], String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let hex = match cmd {
        HashCommand::Hash => {
            // `SHA-256 <range> <hex>`; ProFTPD first says "Computing SHA-256 digest".
            let mut named = false;
            let mut found = "";
            for (i, t) in tokens.iter().enumerate() {
                if t.eq_ignore_ascii_case("SHA-256") {
                    named = true;
                    if let Some(h) = tokens.get(i + 2).filter(|h| h.len() == 64) {
                        found = h;
                    }
                }
            }
            if !named {
                return Err("the HASH reply does not name SHA-256".to_string());
            }
            found
        }
        HashCommand::XSha256 => tokens
            .iter()
            .copied()
            .find(|t| t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or(""),
    };
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out)
        .map_err(|_| "the reply carries no SHA-256 digest".to_string())?;
    Ok(out)
}

/// The reply's code. suppaftp knows only the codes RFC 959 lists and gives 0
/// for others (ProFTPD's `556` for HASH), so those are read from the reply itself.
fn reply_code(r: &suppaftp::types::Response) -> u32 {
    match r.status.code() {
        0 => r
            .body
            .get(..3)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
        c => c,
    }
}

fn reply_text(r: &suppaftp::types::Response) -> String {
    String::from_utf8_lossy(&r.body).trim().to_string()
}

fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "1.2",
        rustls::ProtocolVersion::TLSv1_3 => "1.3",
        _ => "?",
    }
}

fn list_versions(v: &[TlsVersion]) -> String {
    v.iter()
        .map(|v| format!("TLS {v}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn map_error(
    server: &Server,
    tls: &SharedTlsState,
    versions: &[TlsVersion],
    e: FtpError,
    step: &str,
    path: Option<&str>,
) -> TransportError {
    match e {
        FtpError::ConnectionError(io) => match io.kind() {
            std::io::ErrorKind::TimedOut => TransportError::Timeout {
                step: step.to_string(),
                after: server.timeout,
            },
            std::io::ErrorKind::ConnectionRefused => TransportError::Refused {
                addr: format!("{}:{}", server.host, server.port),
            },
            _ => TransportError::Connection {
                step: step.to_string(),
                detail: io.to_string(),
            },
        },
        FtpError::SecureError(raw) => {
            let (problem, presented) = match tls.lock() {
                Ok(mut s) => (
                    s.last_problem.take(),
                    s.peer_chain.first().map(|c| tls::fingerprint(c)),
                ),
                Err(_) => (None, None),
            };
            TransportError::from_tls(
                &server.host,
                problem,
                presented,
                list_versions(versions),
                raw,
            )
        }
        FtpError::UnexpectedResponse(r) => {
            // Decided by the reply code as RFC 959 defines it, never by its text.
            let code = reply_code(&r);
            let text = reply_text(&r);
            let path = path.unwrap_or("").to_string();
            match code {
                421 => TransportError::Unavailable {
                    step: step.to_string(),
                    text,
                },
                530 | 532 | 553 => TransportError::PermissionDenied {
                    path,
                    code,
                    reply: text,
                },
                450 | 550 => TransportError::FileUnavailable {
                    path,
                    code,
                    reply: text,
                },
                _ => TransportError::Server {
                    step: step.to_string(),
                    code,
                    text,
                },
            }
        }
        FtpError::BadResponse => TransportError::Connection {
            step: step.to_string(),
            detail: "the server's reply could not be read".to_string(),
        },
        FtpError::InvalidAddress(a) => TransportError::Connection {
            step: step.to_string(),
            detail: format!("invalid passive address: {a}"),
        },
        FtpError::DataConnectionAlreadyOpen => {
            TransportError::Local(format!("{step}: a data connection is already open"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn hash_reply_naming_sha256_is_read() {
        let text = format!("213 SHA-256 0-4 {HEX} test.txt");
        assert_eq!(
            hex::encode(parse_hash_reply(&text, HashCommand::Hash).unwrap()),
            HEX
        );
        // ProFTPD's multi-line form.
        let text = format!("213-Computing SHA-256 digest\r\n213 SHA-256 0-1048576 {HEX} a b.837");
        assert_eq!(
            hex::encode(parse_hash_reply(&text, HashCommand::Hash).unwrap()),
            HEX
        );
    }

    #[test]
    fn hash_reply_naming_another_algorithm_is_never_trusted() {
        let text = "213 SHA-1 0-4 a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 test.txt";
        assert!(
            parse_hash_reply(text, HashCommand::Hash)
                .unwrap_err()
                .contains("does not name SHA-256")
        );
        let text = format!("213 MD5 0-4 {HEX} test.txt");
        assert!(parse_hash_reply(&text, HashCommand::Hash).is_err());
    }

    #[test]
    fn xsha256_reply_is_read() {
        assert_eq!(
            hex::encode(parse_hash_reply(&format!("250 {HEX}"), HashCommand::XSha256).unwrap()),
            HEX
        );
        assert!(parse_hash_reply("250 nonsense", HashCommand::XSha256).is_err());
    }

    #[test]
    fn feat_with_hash_sha256_selects_hash_then_xsha256() {
        let mut f = suppaftp::types::Features::new();
        f.insert(
            "HASH".into(),
            Some("CRC32;MD5;SHA-1*;SHA-256;SHA-512;".into()),
        );
        f.insert("XSHA256".into(), None);
        f.insert("REST".into(), Some("STREAM".into()));
        f.insert("MLST".into(), Some("modify*;size*;type*;".into()));
        let c = capabilities(&f);
        assert_eq!(c.hash, Some(HashCommand::Hash));
        assert!(c.resume && c.mlsd && !c.epsv);
        f.insert("HASH".into(), Some("SHA-1*;MD5".into()));
        assert_eq!(capabilities(&f).hash, Some(HashCommand::XSha256));
        f.remove("XSHA256");
        assert_eq!(capabilities(&f).hash, None);
    }
}
