//! TLS for FTPS: one TLS context and session store per control
//! connection, certificate pinning, and the choice of TLS library.
//!
//! Why each control connection gets its own context and store: strict
//! servers (vsftpd `require_ssl_reuse`, ProFTPD `TLSRequired`) refuse a data
//! connection that does not resume *this* control session; a store shared
//! between sessions makes ProFTPD refuse whole sessions.
//!
//! Why two libraries: TLS 1.2 runs on rustls, which resumes the control
//! session on every data connection with every server. Under TLS 1.3 a
//! data connection resumes with a session ticket; rustls hands each ticket
//! out once and cannot copy one, and ProFTPD issues no ticket on data
//! connections, so rustls ran out after the control connection's two and
//! had to log in again every two transfers (22x slower). OpenSSL presents
//! the control connection's ticket again on every data connection, as lftp
//! and curl do, so a session that may negotiate TLS 1.3 runs on OpenSSL.
//! Both libraries trust exactly the same certificates: OpenSSL's check is
//! replaced by the same [`Verifier`] (pin, `ca_file` or system roots, host
//! name) that rustls uses.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind, ProtocolVersion,
    RootCertStore, SignatureScheme,
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
    /// The TLS library carrying the session (`rustls` or `OpenSSL ...`).
    pub library: Option<String>,
    /// Data connections opened, and how many of them resumed the session.
    pub data_connections: u64,
    pub data_resumed: u64,
    /// The last handshake failure, classified.
    pub last_problem: Option<TlsProblem>,
}

/// Shared between the connector, the verifier and the session that owns them.
pub type SharedTlsState = Arc<Mutex<TlsState>>;

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

/// Which TLS library carries a session offering `versions`: OpenSSL when
/// TLS 1.3 may be negotiated (it re-presents the control session's ticket
/// on every data connection), rustls otherwise.
fn uses_openssl(versions: &[TlsVersion]) -> bool {
    versions.contains(&TlsVersion::V1_3)
}

fn verifier(
    server: &Server,
    material: &TlsMaterial,
    state: SharedTlsState,
) -> Result<Arc<Verifier>, String> {
    let provider = provider();
    let webpki =
        WebPkiServerVerifier::builder_with_provider(material.roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("cannot build certificate verifier: {e}"))?;
    Ok(Arc::new(Verifier {
        webpki,
        pin: server.pin_sha256,
        provider,
        state,
    }))
}

/// Builds the rustls config for one control session offering exactly `versions`.
fn client_config(
    server: &Server,
    material: &TlsMaterial,
    versions: &[TlsVersion],
    state: SharedTlsState,
) -> Result<Arc<ClientConfig>, String> {
    let verifier = verifier(server, material, state)?;
    let proto: Vec<&'static rustls::SupportedProtocolVersion> = versions
        .iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ClientConfig::builder_with_provider(provider())
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
    config.resumption =
        rustls::client::Resumption::store(Arc::new(ClientSessionMemoryCache::new(4)));
    Ok(Arc::new(config))
}

/// The OpenSSL side of one control session: its context, and the session
/// (ticket) its control connection was given, presented again by every
/// data connection. It is kept encoded: OpenSSL marks a TLS 1.3 session
/// object used once it has resumed a connection, so each data connection
/// decodes a copy of its own.
struct OpenSsl {
    ctx: openssl::ssl::SslContext,
    session: Arc<Mutex<Option<Vec<u8>>>>,
}

fn openssl_error(what: &str, e: openssl::error::ErrorStack) -> String {
    format!("OpenSSL: {what}: {e}")
}

/// The key exchange groups of a data connection on OpenSSL.
const DATA_GROUPS: &std::ffi::CStr = c"X25519:P-256:P-384";

/// A data connection resumes the control connection's session, whose
/// secret came from the control handshake with OpenSSL's default groups
/// (the X25519 + ML-KEM-768 hybrid first, where the server has it). Its
/// traffic keys mix that secret with its own exchange, so X25519 alone
/// keeps it as safe as the control connection, without generating an
/// ML-KEM key for every file (measured: 0.17 s of ferry's 2.1 s of CPU for
/// 1000 uploads to ProFTPD under TLS 1.3).
fn data_groups(ssl: &mut openssl::ssl::SslRef) -> Result<(), openssl::error::ErrorStack> {
    use foreign_types::ForeignTypeRef;
    // SAFETY: `ssl` is a live SSL object and the list a static
    // NUL-terminated string (OpenSSL copies it).
    let ok = unsafe { openssl_sys::SSL_set1_groups_list(ssl.as_ptr(), DATA_GROUPS.as_ptr()) };
    if ok == 1 {
        Ok(())
    } else {
        Err(openssl::error::ErrorStack::get())
    }
}

fn openssl_context(
    server: &Server,
    material: &TlsMaterial,
    versions: &[TlsVersion],
    state: SharedTlsState,
) -> Result<OpenSsl, String> {
    use openssl::ssl::{
        SslContextBuilder, SslMethod, SslSessionCacheMode, SslVerifyMode, SslVersion,
    };
    let verifier = verifier(server, material, state.clone())?;
    let mut b = SslContextBuilder::new(SslMethod::tls_client())
        .map_err(|e| openssl_error("cannot create a TLS context", e))?;
    let version = |v: &TlsVersion| match v {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    };
    let lowest = versions.iter().min().map(version);
    let highest = versions.iter().max().map(version);
    b.set_min_proto_version(lowest)
        .and_then(|_| b.set_max_proto_version(highest))
        .map_err(|e| openssl_error("cannot limit the TLS versions", e))?;
    // The certificate is judged by the same verifier rustls uses; OpenSSL's
    // own verdict (it has no trust roots loaded) is ignored. A resumed data
    // connection presents no certificate: it proves the control session's.
    let host = ServerName::try_from(server.host.clone())
        .map_err(|e| format!("invalid host name '{}': {e}", server.host))?;
    let problem_state = state.clone();
    b.set_verify_callback(SslVerifyMode::PEER, move |_openssl_verdict, store| {
        let chain: Vec<CertificateDer<'static>> = openssl::x509::X509StoreContext::ssl_idx()
            .ok()
            .and_then(|idx| store.ex_data(idx))
            .and_then(|ssl| ssl.peer_cert_chain())
            .map(|chain| {
                chain
                    .iter()
                    .filter_map(|c| c.to_der().ok())
                    .map(CertificateDer::from)
                    .collect()
            })
            .unwrap_or_default();
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        match verifier.verify_server_cert(leaf, rest, &host, &[], UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                if let Ok(mut s) = problem_state.lock()
                    && !matches!(s.last_problem, Some(TlsProblem::PinMismatch { .. }))
                {
                    s.last_problem = Some(classify_rustls(&e));
                }
                false
            }
        }
    });
    if let Some((chain, key)) = &material.client {
        let key = openssl::pkey::PKey::private_key_from_der(key.secret_der())
            .or_else(|_| openssl::pkey::PKey::private_key_from_pkcs8(key.secret_der()))
            .map_err(|e| openssl_error("cannot read client_key", e))?;
        let mut certs = chain.iter().map(|c| openssl::x509::X509::from_der(c));
        let leaf = certs
            .next()
            .transpose()
            .map_err(|e| openssl_error("cannot read client_cert", e))?
            .ok_or("client_cert holds no certificate")?;
        b.set_certificate(&leaf)
            .and_then(|_| b.set_private_key(&key))
            .and_then(|_| b.check_private_key())
            .map_err(|e| openssl_error("client certificate and key do not fit together", e))?;
        for c in certs {
            let c = c.map_err(|e| openssl_error("cannot read client_cert", e))?;
            b.add_extra_chain_cert(c)
                .map_err(|e| openssl_error("cannot use client_cert's chain", e))?;
        }
    }
    // Sessions handed out by the control connection (not by a resumed data
    // connection) are kept; the newest is presented by every data connection.
    let session = Arc::new(Mutex::new(None));
    let slot = session.clone();
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
    b.set_new_session_callback(move |ssl, s| {
        if !ssl.session_reused()
            && let Ok(der) = s.to_der()
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(der);
        }
    });
    Ok(OpenSsl {
        ctx: b.build(),
        session,
    })
}

/// suppaftp's TLS hook: the same context (so the same session store) for
/// the control connection and every data connection of one session, with
/// each handshake observed.
pub struct Connector {
    library: Library,
    state: SharedTlsState,
    /// Bound on one handshake.
    timeout: Duration,
}

enum Library {
    Rustls(tokio_rustls::TlsConnector),
    OpenSsl(OpenSsl),
}

impl Connector {
    /// The connector for one control session offering exactly `versions`
    /// (see [`uses_openssl`]).
    pub fn new(
        server: &Server,
        material: &TlsMaterial,
        versions: &[TlsVersion],
        state: SharedTlsState,
        timeout: Duration,
    ) -> Result<Connector, String> {
        let library = if uses_openssl(versions) {
            Library::OpenSsl(openssl_context(server, material, versions, state.clone())?)
        } else {
            let config = client_config(server, material, versions, state.clone())?;
            Library::Rustls(tokio_rustls::TlsConnector::from(config))
        };
        Ok(Connector {
            library,
            state,
            timeout,
        })
    }

    async fn handshake(
        &self,
        domain: &str,
        stream: TcpStream,
        first: bool,
    ) -> Result<Handshaken, (TlsProblem, String)> {
        match &self.library {
            Library::Rustls(inner) => {
                let name = ServerName::try_from(domain.to_string()).map_err(|e| {
                    (
                        TlsProblem::Other(e.to_string()),
                        format!("invalid host name '{domain}': {e}"),
                    )
                })?;
                let stream = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, stream);
                let tls = inner
                    .connect(name, stream)
                    .await
                    .map_err(|e| (classify(&e), e.to_string()))?;
                let (_, conn) = tls.get_ref();
                Ok(Handshaken {
                    version: conn.protocol_version(),
                    cipher: conn
                        .negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite())),
                    resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
                    library: "rustls".to_string(),
                    stream: TlsStream::Rustls(Box::new(tls)),
                })
            }
            Library::OpenSsl(o) => {
                let setup = |e: openssl::error::ErrorStack| {
                    let msg = openssl_error("cannot start a TLS connection", e);
                    (TlsProblem::Other(msg.clone()), msg)
                };
                let mut ssl = openssl::ssl::Ssl::new(&o.ctx).map_err(setup)?;
                if domain.parse::<std::net::IpAddr>().is_err() {
                    ssl.set_hostname(domain).map_err(setup)?;
                }
                if !first {
                    data_groups(&mut ssl).map_err(setup)?;
                    let der = o.session.lock().ok().and_then(|s| s.clone());
                    if let Some(der) = der {
                        let session = openssl::ssl::SslSession::from_der(&der).map_err(setup)?;
                        // SAFETY: the session was made by this very context
                        // (its new-session callback), as set_session requires.
                        unsafe { ssl.set_session(&session) }.map_err(setup)?;
                    }
                }
                let mut tls = tokio_openssl::SslStream::new(ssl, stream).map_err(setup)?;
                std::pin::Pin::new(&mut tls)
                    .connect()
                    .await
                    .map_err(|e| (classify_openssl(&e), format!("OpenSSL: {e}")))?;
                let ssl = tls.ssl();
                Ok(Handshaken {
                    version: ssl.version2().and_then(|v| match v {
                        openssl::ssl::SslVersion::TLS1_2 => Some(ProtocolVersion::TLSv1_2),
                        openssl::ssl::SslVersion::TLS1_3 => Some(ProtocolVersion::TLSv1_3),
                        _ => None,
                    }),
                    cipher: ssl
                        .current_cipher()
                        .map(|c| c.standard_name().unwrap_or(c.name()).to_string()),
                    resumed: ssl.session_reused(),
                    // "OpenSSL 3.6.3 9 Jun 2026" -> "OpenSSL 3.6.3"
                    library: openssl::version::version()
                        .split(' ')
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                    stream: TlsStream::OpenSsl(tls),
                })
            }
        }
    }
}

/// What one handshake gave.
struct Handshaken {
    version: Option<ProtocolVersion>,
    cipher: Option<String>,
    resumed: bool,
    library: String,
    stream: TlsStream,
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
        let first = self
            .state
            .lock()
            .map(|s| s.version.is_none())
            .unwrap_or(true);
        let connect = self.handshake(domain, stream, first);
        let done = match tokio::time::timeout(self.timeout, connect).await {
            Err(_) => {
                return Err(FtpError::ConnectionError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )));
            }
            Ok(Err((problem, msg))) => {
                if let Ok(mut s) = self.state.lock() {
                    // What the verifier recorded (a pin mismatch; on OpenSSL,
                    // every certificate problem) says more than a generic error.
                    if !matches!(problem, TlsProblem::Other(_)) || s.last_problem.is_none() {
                        s.last_problem = Some(problem);
                    }
                }
                return Err(FtpError::SecureError(msg));
            }
            Ok(Ok(done)) => done,
        };
        if let Ok(mut s) = self.state.lock() {
            if first {
                s.version = done.version;
                s.cipher = done.cipher;
                s.library = Some(done.library);
            } else {
                s.data_connections += 1;
                if done.resumed {
                    s.data_resumed += 1;
                } else {
                    tracing::warn!(
                        "a data connection did not resume the control session's TLS session; strict servers refuse such connections"
                    );
                }
            }
        }
        Ok(done.stream)
    }
}

fn classify(e: &std::io::Error) -> TlsProblem {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(err) => classify_rustls(err),
        None => TlsProblem::Other(e.to_string()),
    }
}

fn classify_rustls(err: &rustls::Error) -> TlsProblem {
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

/// OpenSSL's reason codes for a server that speaks none of the offered
/// versions (its alert, or no common version at all).
fn classify_openssl(e: &openssl::ssl::Error) -> TlsProblem {
    const VERSION_REASONS: [&str; 4] = [
        "tlsv1 alert protocol version",
        "unsupported protocol",
        "no protocols available",
        "sslv3 alert handshake failure",
    ];
    let refused = e.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|x| x.reason().is_some_and(|r| VERSION_REASONS.contains(&r)))
    });
    if refused {
        TlsProblem::VersionRefused
    } else {
        TlsProblem::Other(e.to_string())
    }
}

/// What a rustls stream reads from its socket at once, at most.
const TLS_READ_BUFFER: usize = 128 * 1024;

/// A TLS connection over TCP as suppaftp wants it, on either library.
///
/// suppaftp writes a command with `write_all` and then only reads the
/// reply; it never flushes. tokio-rustls accepts the bytes into rustls and
/// reports them written even when the socket write was deferred (tokio's
/// cooperative budget ran out, or the send buffer was full), and its reads
/// never send what is still buffered. The command would then sit in rustls
/// while both ends wait for each other until the step times out. So every
/// write tries to flush at once, and every read first sends whatever is
/// still buffered. OpenSSL writes each record to the socket before it
/// reports it written, so it needs none of that.
///
/// rustls asks its socket for little at a time (its deframer grows its
/// buffer by `READ_SIZE`, 4 KiB, per read): measured, 4,348 `recvfrom`
/// calls for a 64 MiB download, about one per TLS record. Its socket is
/// read through a [`TLS_READ_BUFFER`] buffer instead: 573 calls.
#[derive(Debug)]
pub enum TlsStream {
    Rustls(Box<tokio_rustls::client::TlsStream<tokio::io::BufReader<TcpStream>>>),
    OpenSsl(tokio_openssl::SslStream<TcpStream>),
}

impl TlsStream {
    /// Sends buffered TLS records if there are any. `Pending` only means the
    /// socket is not ready; the waker is registered for when it is.
    fn poll_send_buffered(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self {
            TlsStream::Rustls(inner) if inner.get_ref().1.wants_write() => {
                std::pin::Pin::new(inner.as_mut()).poll_flush(cx)
            }
            _ => std::task::Poll::Ready(Ok(())),
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
        match self.get_mut() {
            TlsStream::Rustls(inner) => std::pin::Pin::new(inner.as_mut()).poll_read(cx, buf),
            TlsStream::OpenSsl(inner) => std::pin::Pin::new(inner).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = match self.as_mut().get_mut() {
            TlsStream::Rustls(inner) => std::pin::Pin::new(inner.as_mut()).poll_write(cx, buf),
            TlsStream::OpenSsl(inner) => return std::pin::Pin::new(inner).poll_write(cx, buf),
        };
        if let std::task::Poll::Ready(Ok(_)) = written
            && let std::task::Poll::Ready(Err(e)) = self.poll_send_buffered(cx)
        {
            return std::task::Poll::Ready(Err(e));
        }
        written
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(inner) => std::pin::Pin::new(inner.as_mut()).poll_flush(cx),
            TlsStream::OpenSsl(inner) => std::pin::Pin::new(inner).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(inner) => std::pin::Pin::new(inner.as_mut()).poll_shutdown(cx),
            TlsStream::OpenSsl(inner) => std::pin::Pin::new(inner).poll_shutdown(cx),
        }
    }
}

impl TokioTlsStream for TlsStream {
    type InnerStream = TlsStream;

    fn tcp_stream(self) -> FtpResult<TcpStream> {
        match self {
            TlsStream::Rustls(inner) => {
                let buffered = inner.into_inner().0;
                if !buffered.buffer().is_empty() {
                    // Plain bytes read ahead would be lost with the buffer.
                    return Err(FtpError::SecureError(
                        "the server sent more after the end of TLS".to_string(),
                    ));
                }
                Ok(buffered.into_inner())
            }
            TlsStream::OpenSsl(_) => Err(FtpError::SecureError(
                "an OpenSSL stream cannot be turned back into plain TCP".to_string(),
            )),
        }
    }
    fn get_ref(&self) -> &TcpStream {
        match self {
            TlsStream::Rustls(inner) => inner.get_ref().0.get_ref(),
            TlsStream::OpenSsl(inner) => inner.get_ref(),
        }
    }
    fn mut_ref(&mut self) -> &mut Self::InnerStream {
        self
    }
}
