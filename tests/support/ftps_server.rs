//! An in-process explicit-FTPS server for the fast test tier: libunftp 0.24
//! with the unftp-sbe-fs filesystem backend rooted in a tempdir, TLS by
//! rustls with ring.
//!
//! We bind our own `127.0.0.1:0` listener and hand every accepted connection
//! to `Server::service`. `service` consumes the `Server`, so a fresh one is
//! built per control connection (cheap: it reads two small PEM files). As a
//! consequence the TLS session cache and ticket key are per control
//! connection, which is what a client that resumes the control session on its
//! data connections needs anyway.
//!
//! Passive data ports: libunftp's own allocator draws a random port from a
//! range and retries a few times, which can collide between tests running in
//! parallel (and with anything else on the machine). Instead we install a
//! `Binder` that binds port 0, so the kernel hands out a free ephemeral port
//! for every PASV/EPSV: no range to coordinate, no collisions.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libunftp::options::{Binder, FtpsClientAuth, TlsFlags};
use libunftp::{ServerBuilder, ServerError};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};
use unftp_sbe_fs::Filesystem;

use super::certs::{Leaf, LeafPaths, TestPki};

/// The user every test server accepts unless told otherwise.
pub const USER: &str = "ferry";
/// Its password.
pub const PASSWORD: &str = "ferry-pw";

/// TLS protocol versions the server offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    /// libunftp's default.
    #[default]
    Tls12,
    Tls13,
    Tls12And13,
}

/// Whether the server asks for a client certificate (verified against the
/// test CA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCerts {
    #[default]
    Off,
    /// Asked for, but a client without one is still let in.
    Request,
    /// A client without a certificate signed by the CA fails the handshake.
    Require,
}

/// How to start a [`TestServer`]. `ServerOptions::default()` makes a fresh
/// CA and presents a leaf for `localhost` and `127.0.0.1` signed by it.
pub struct ServerOptions {
    /// The CA that signed `leaf` (and that verifies client certificates).
    pub pki: Arc<TestPki>,
    /// The certificate the server presents. `None`: a leaf from `pki` for
    /// `localhost` and `127.0.0.1`.
    pub leaf: Option<Leaf>,
    /// The only account the server accepts; anything else gets 530.
    pub user: String,
    pub password: String,
    /// TLS required on both the control and the data connections
    /// (default `true`). `false`: plain FTP is accepted too.
    pub ftps_required: bool,
    pub tls_versions: TlsVersions,
    pub client_certs: ClientCerts,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            pki: Arc::new(TestPki::new()),
            leaf: None,
            user: USER.to_string(),
            password: PASSWORD.to_string(),
            ftps_required: true,
            tls_versions: TlsVersions::default(),
            client_certs: ClientCerts::default(),
        }
    }
}

/// A running server. Dropping it (or [`TestServer::stop`]) stops accepting
/// and closes every open session.
pub struct TestServer {
    /// Where the control connection listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The CA a client must trust.
    pub pki: Arc<TestPki>,
    /// The certificate the server presents.
    pub leaf: Leaf,
    pub user: String,
    pub password: String,
    root: tempfile::TempDir,
    tls_dir: tempfile::TempDir,
    ca_file: PathBuf,
    connections: Arc<AtomicUsize>,
    accept_task: Option<JoinHandle<()>>,
}

/// Starts a server on the current tokio runtime (tests should use
/// `#[tokio::test(flavor = "multi_thread")]`).
pub async fn start(opts: ServerOptions) -> TestServer {
    let root = tempfile::Builder::new()
        .prefix("ferry-ftp-root-")
        .tempdir()
        .expect("server root tempdir");
    // Certificates live outside the FTP root so clients cannot fetch the key.
    let tls_dir = tempfile::Builder::new()
        .prefix("ferry-ftp-tls-")
        .tempdir()
        .expect("server tls tempdir");
    let leaf = opts
        .leaf
        .clone()
        .unwrap_or_else(|| opts.pki.leaf(&["localhost", "127.0.0.1"]));
    let leaf_paths = leaf.write_to(tls_dir.path(), "server");
    let ca_file = opts.pki.write_ca_to(tls_dir.path());

    let config = Arc::new(PerConnection {
        auth: Arc::new(PasswordAuthenticator {
            user: opts.user.clone(),
            password: opts.password.clone(),
        }),
        root: root.path().to_path_buf(),
        leaf_paths,
        ca_file: ca_file.clone(),
        ftps_required: opts.ftps_required,
        tls_versions: opts.tls_versions,
        client_certs: opts.client_certs,
    });
    // Fail here, not on the first connection, if the configuration is bad.
    if let Err(e) = config.build() {
        panic!("cannot build the libunftp server: {e}");
    }

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind control listener");
    let addr = listener.local_addr().expect("control listener address");
    let connections = Arc::new(AtomicUsize::new(0));
    let accept_task = tokio::spawn(accept_loop(listener, config, connections.clone()));

    TestServer {
        addr,
        pki: opts.pki,
        leaf,
        user: opts.user,
        password: opts.password,
        root,
        tls_dir,
        ca_file,
        connections,
        accept_task: Some(accept_task),
    }
}

impl TestServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1".
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The folder the FTP root `/` maps to.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The test CA as a PEM file (for a client's `ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A folder outside the FTP root that lives as long as the server, for
    /// tests that need more certificate files (client certificates, ...).
    pub fn tls_dir(&self) -> &Path {
        self.tls_dir.path()
    }

    /// How many control connections the server has accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every open session; returns once the
    /// accept task (and with it every session task) is gone.
    pub async fn stop(mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
    }
}

/// Everything needed to build a fresh `Server` for one control connection.
struct PerConnection {
    auth: Arc<PasswordAuthenticator>,
    root: PathBuf,
    leaf_paths: LeafPaths,
    ca_file: PathBuf,
    ftps_required: bool,
    tls_versions: TlsVersions,
    client_certs: ClientCerts,
}

/// A boxed session future, so the libunftp user type (which lives in
/// unftp-core, not a dependency of ours) never has to be named.
type Session = Pin<Box<dyn Future<Output = ()> + Send>>;

impl PerConnection {
    /// Builds a `Server` and returns what serves one control connection.
    fn build(&self) -> Result<impl FnOnce(TcpStream) -> Session + use<>, ServerError> {
        let root = self.root.clone();
        let tls_flags = match self.tls_versions {
            TlsVersions::Tls12 => TlsFlags::V1_2,
            TlsVersions::Tls13 => TlsFlags::V1_3,
            TlsVersions::Tls12And13 => TlsFlags::V1_2 | TlsFlags::V1_3,
        } | TlsFlags::RESUMPTION_SESS_ID
            | TlsFlags::RESUMPTION_TICKETS;
        let client_auth = match self.client_certs {
            ClientCerts::Off => FtpsClientAuth::Off,
            ClientCerts::Request => FtpsClientAuth::Request,
            ClientCerts::Require => FtpsClientAuth::Require,
        };
        let server = ServerBuilder::new(Box::new(move || {
            Filesystem::new(root.clone()).expect("open server root")
        }))
        .authenticator(self.auth.clone())
        .ftps(self.leaf_paths.cert.clone(), self.leaf_paths.key.clone())
        .ftps_tls_flags(tls_flags)
        .ftps_client_auth(client_auth)
        .ftps_trust_store(self.ca_file.clone())
        .ftps_required(self.ftps_required, self.ftps_required)
        .passive_host(Ipv4Addr::LOCALHOST)
        .binder(EphemeralPortBinder)
        .idle_session_timeout(60)
        .build()?;
        Ok(move |stream: TcpStream| -> Session {
            Box::pin(async move {
                if let Err(e) = server.service(stream).await {
                    eprintln!("test FTPS server: session ended with error: {e:?}");
                }
            })
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<PerConnection>,
    connections: Arc<AtomicUsize>,
) {
    // Dropping the JoinSet (when this task is aborted) aborts every session;
    // each session's shutdown notifier then drops and libunftp closes the
    // control loop.
    let mut sessions = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                eprintln!("test FTPS server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::SeqCst);
        match config.build() {
            Ok(serve) => {
                sessions.spawn(serve(stream));
            }
            Err(e) => eprintln!("test FTPS server: cannot build server: {e}"),
        }
        while sessions.try_join_next().is_some() {}
    }
}

/// Binds every passive data listener to port 0 on the control connection's
/// address: the kernel picks a free port, so parallel tests never collide.
#[derive(Debug)]
struct EphemeralPortBinder;

#[async_trait::async_trait]
impl Binder for EphemeralPortBinder {
    async fn bind(
        &mut self,
        local_addr: IpAddr,
        _passive_ports: RangeInclusive<u16>,
    ) -> io::Result<TcpSocket> {
        let socket = match local_addr {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local_addr, 0))?;
        Ok(socket)
    }
}

/// One user, one password. A client certificate alone never logs anyone in,
/// so USER always answers 331 (libunftp answers 232 when the authenticator
/// says a certificate is enough, and suppaftp's `login()` rejects 232).
#[derive(Debug)]
struct PasswordAuthenticator {
    user: String,
    password: String,
}

#[async_trait::async_trait]
impl Authenticator for PasswordAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        if username != self.user {
            return Err(AuthenticationError::BadUser);
        }
        if creds.password.as_deref() != Some(self.password.as_str()) {
            return Err(AuthenticationError::BadPassword);
        }
        Ok(Principal {
            username: username.to_string(),
        })
    }
}
