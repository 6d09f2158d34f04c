//! TLS for FTPS: one rustls `ClientConfig` and session store per control
//! connection, certificate pinning, and TLS 1.3 ticket accounting.
//!
//! Why each control connection gets its own config and store: strict servers
//! (vsftpd `require_ssl_reuse`, ProFTPD `TLSRequired`) refuse a data
//! connection that does not resume *this* control session; a store shared
//! between sessions makes ProFTPD refuse whole sessions.
//!
//! Why TLS 1.2 is preferred: rustls hands each TLS 1.3 ticket out once and
//! cannot copy one, and ProFTPD sends no new ticket on upload connections,
//! so a TLS 1.3 session runs out of tickets after a few uploads. We count
//! tickets ([`TicketStore`]) and the session opens a fresh control
//! connection before a data connection would go without one; with TLS 1.2
//! the session resumes indefinitely and none of that is needed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
    WebPkiServerVerifier,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind, NamedGroup,
    ProtocolVersion, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};
use suppaftp::tokio::{AsyncTlsConnector, TokioTlsStream};
use suppaftp::{FtpError, FtpResult};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{Server, TlsVersion};

/// The one crypto provider in ferry: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `AB:CD:...`, the form `pin_sha256` accepts.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a handshake failed, as far as we could tell.
#[derive(Debug, Clone)]
pub enum TlsProblem {
    UnknownIssuer,
    WrongHostName,
    Expired,
    NotYetValid,
    PinMismatch {
        expected: String,
    },
    /// The server does not speak a version we offered.
    VersionRefused,
    Other(String),
}

/// What one control session learned about its TLS connections.
#[derive(Debug, Default, Clone)]
pub struct TlsState {
    /// The server's certificate chain, end-entity first, as last presented.
    pub peer_chain: Vec<CertificateDer<'static>>,
    /// Negotiated on the control connection.
    pub version: Option<ProtocolVersion>,
    pub cipher: Option<String>,
    /// Data connections opened, and how many of them resumed the session.
    pub data_connections: u64,
    pub data_resumed: u64,
    /// The last handshake failure, classified.
    pub last_problem: Option<TlsProblem>,
}

/// Shared between the connector, the verifier and the session that owns them.
pub type SharedTlsState = Arc<Mutex<TlsState>>;

/// A TLS 1.3 ticket cache that knows how many tickets it holds. Everything
/// else (TLS 1.2 sessions, key-exchange hints) is rustls's own cache.
pub struct TicketStore {
    inner: ClientSessionMemoryCache,
    tickets: Mutex<VecDeque<Tls13ClientSessionValue>>,
}

/// rustls keeps at most 8 per server; so do we.
const MAX_TICKETS: usize = 8;

impl TicketStore {
    pub fn new() -> Self {
        TicketStore {
            inner: ClientSessionMemoryCache::new(4),
            tickets: Mutex::new(VecDeque::new()),
        }
    }

    /// TLS 1.3 tickets available for the next data connections.
    pub fn tls13_tickets(&self) -> usize {
        self.tickets.lock().map(|t| t.len()).unwrap_or(0)
    }
}

impl Default for TicketStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketStore({} tickets)", self.tls13_tickets())
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group)
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value)
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name)
    }
    fn insert_tls13_ticket(
        &self,
        _server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        if let Ok(mut t) = self.tickets.lock() {
            if t.len() == MAX_TICKETS {
                t.pop_front();
            }
            t.push_back(value);
        }
    }
    fn take_tls13_ticket(
        &self,
        _server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first: the most recently issued ticket is the least likely to have expired.
        self.tickets.lock().ok().and_then(|mut t| t.pop_back())
    }
}

/// Checks the server certificate: against `pin_sha256` when set (WinSCP's
/// model: a matching pin is trusted even if self-signed, a mismatch refused
/// even if CA-signed), otherwise against the trust roots. Records the chain
/// it saw either way, for `ferry ping` and for error messages.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    state: SharedTlsState,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.state.lock() {
            s.peer_chain = std::iter::once(end_entity.clone().into_owned())
                .chain(intermediates.iter().map(|c| c.clone().into_owned()))
                .collect();
        }
        match self.pin {
            Some(pin) => {
                if Sha256::digest(end_entity.as_ref()).as_slice() == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    if let Ok(mut s) = self.state.lock() {
                        s.last_problem = Some(TlsProblem::PinMismatch {
                            expected: fingerprint_of_pin(&pin),
                        });
                    }
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
            None => self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn fingerprint_of_pin(pin: &[u8; 32]) -> String {
    pin.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Trust roots and client identity for a server, read once per session.
pub struct TlsMaterial {
    roots: Arc<RootCertStore>,
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl TlsMaterial {
    /// Loads `ca_file` (or the system roots) and the client certificate.
    pub fn load(server: &Server) -> Result<TlsMaterial, String> {
        use crate::config::files;
        let mut roots = RootCertStore::empty();
        match &server.ca_file {
            Some(path) => {
                let bytes = files::read_bounded(path, "ca_file", files::MAX_PEM_BYTES)?;
                for c in files::certificates(&bytes, "ca_file", path)? {
                    roots.add(c).map_err(|e| {
                        format!("ca_file {}: unusable certificate: {e}", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() && server.pin_sha256.is_none() {
                    return Err(
                        "no system trust roots found: set ca_file or pin_sha256".to_string()
                    );
                }
            }
        }
        let client = match (&server.client_cert, &server.client_key) {
            (Some(cert), Some(key)) => {
                let bytes = files::read_bounded(cert, "client_cert", files::MAX_PEM_BYTES)?;
                let chain = files::certificates(&bytes, "client_cert", cert)?;
                let bytes = files::read_bounded(key, "client_key", files::MAX_PEM_BYTES)?;
                let der = files::private_key(&bytes, "client_key", key)?;
                files::key_matches(&chain, &der, key)?;
                Some((chain, Arc::new(der)))
            }
            _ => None,
        };
        Ok(TlsMaterial {
            roots: Arc::new(roots),
            client,
        })
    }
}

/// Builds the config for one control session offering exactly `versions`.
pub fn client_config(
    server: &Server,
    material: &TlsMaterial,
    versions: &[TlsVersion],
    store: Arc<TicketStore>,
    state: SharedTlsState,
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let webpki =
        WebPkiServerVerifier::builder_with_provider(material.roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("cannot build certificate verifier: {e}"))?;
    let verifier = Arc::new(Verifier {
        webpki,
        pin: server.pin_sha256,
        provider: provider.clone(),
        state,
    });
    let proto: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&proto)
        .map_err(|e| format!("TLS versions {versions:?}: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &material.client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("client certificate and key do not fit together: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::store(store);
    Ok(Arc::new(config))
}

/// suppaftp's TLS hook: the same config (so the same session store) for the
/// control connection and every data connection of one session, with each
/// handshake observed.
pub struct Connector {
    inner: tokio_rustls::TlsConnector,
    state: SharedTlsState,
    /// Bound on one handshake.
    timeout: Duration,
}

impl Connector {
    pub fn new(config: Arc<ClientConfig>, state: SharedTlsState, timeout: Duration) -> Self {
        Connector {
            inner: tokio_rustls::TlsConnector::from(config),
            state,
            timeout,
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ferry::transport::tls::Connector")
    }
}

#[async_trait::async_trait]
impl AsyncTlsConnector for Connector {
    type Stream = TlsStream;

    async fn connect(&self, domain: &str, stream: TcpStream) -> FtpResult<TlsStream> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| FtpError::SecureError(format!("invalid host name '{domain}': {e}")))?;
        let first = self
            .state
            .lock()
            .map(|s| s.version.is_none())
            .unwrap_or(true);
        let connect = self.inner.connect(name, stream);
        let tls = match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => {
                return Err(FtpError::ConnectionError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )));
            }
            Ok(Err(e)) => {
                let problem = classify(&e);
                if let Ok(mut s) = self.state.lock() {
                    // A pin mismatch was recorded by the verifier with more detail.
                    if !matches!(s.last_problem, Some(TlsProblem::PinMismatch { .. })) {
                        s.last_problem = Some(problem);
                    }
                }
                return Err(FtpError::SecureError(e.to_string()));
            }
            Ok(Ok(tls)) => tls,
        };
        let (_, conn) = tls.get_ref();
        if let Ok(mut s) = self.state.lock() {
            if first {
                s.version = conn.protocol_version();
                s.cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()));
            } else {
                s.data_connections += 1;
                if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
                    s.data_resumed += 1;
                } else {
                    tracing::warn!(
                        "a data connection did not resume the control session's TLS session; strict servers refuse such connections"
                    );
                }
            }
        }
        Ok(TlsStream { inner: tls })
    }
}

fn classify(e: &std::io::Error) -> TlsProblem {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TlsProblem::Other(e.to_string());
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            // A different CA with the same name shows up as a bad signature.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsProblem::UnknownIssuer
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::WrongHostName
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsProblem::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsProblem::NotYetValid
            }
            other => TlsProblem::Other(format!("invalid certificate: {other:?}")),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
        | rustls::Error::PeerIncompatible(_) => TlsProblem::VersionRefused,
        rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure) => {
            TlsProblem::VersionRefused
        }
        other => TlsProblem::Other(other.to_string()),
    }
}

/// A TLS connection over TCP as suppaftp wants it.
///
/// suppaftp writes a command with `write_all` and then only reads the
/// reply; it never flushes. tokio-rustls accepts the bytes into rustls and
/// reports them written even when the socket write was deferred (tokio's
/// cooperative budget ran out, or the send buffer was full), and its reads
/// never send what is still buffered. The command would then sit in rustls
/// while both ends wait for each other until the step times out. So every
/// write tries to flush at once, and every read first sends whatever is
/// still buffered.
#[derive(Debug)]
pub struct TlsStream {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
}

impl TlsStream {
    /// Sends buffered TLS records if there are any. `Pending` only means the
    /// socket is not ready; the waker is registered for when it is.
    fn poll_send_buffered(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.inner.get_ref().1.wants_write() {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        } else {
            std::task::Poll::Ready(Ok(()))
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let std::task::Poll::Ready(Err(e)) = self.poll_send_buffered(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        // Read even when the send is still pending, so neither direction
        // can block the other.
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(_)) = written
            && let std::task::Poll::Ready(Err(e)) = self.poll_send_buffered(cx)
        {
            return std::task::Poll::Ready(Err(e));
        }
        written
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TokioTlsStream for TlsStream {
    type InnerStream = tokio_rustls::client::TlsStream<TcpStream>;

    fn tcp_stream(self) -> FtpResult<TcpStream> {
        Ok(self.inner.into_inner().0)
    }
    fn get_ref(&self) -> &TcpStream {
        self.inner.get_ref().0
    }
    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        &mut self.inner
    }
}
