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
//!
//! Control connections pass through a small relay in this module (see
//! `relay_control`) that works around a race in libunftp's AUTH TLS.
//!
//! Faults: storage goes through [`FaultyFs`] (see `faults.rs`), which does
//! nothing unusual until `ServerOptions::faults` or [`TestServer::set_faults`]
//! asks it to.
//!
//! Data connections through a proxy: a [`DataFront`] (the cut proxy in
//! `cut_proxy.rs`) can be attached with [`TestServer::attach_data_front`].
//! For sessions whose control connection the front owns, the real passive
//! listener is bound on 127.0.0.2 and the front listens on 127.0.0.1 with the
//! same port, so the port in the EPSV/PASV reply (which is inside TLS and
//! cannot be rewritten) leads the client to the front.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libunftp::options::{Binder, FtpsClientAuth, TlsFlags};
use libunftp::{ServerBuilder, ServerError};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};

use super::certs::{Leaf, LeafPaths, TestPki};
use super::faults::{FaultCounts, FaultState, Faults, FaultyFs, StorageStats};

/// The loopback address the real passive listeners of proxied sessions bind
/// to; the front takes the same port on 127.0.0.1.
pub const HIDDEN_DATA_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Something that fronts passive data listeners: the cut proxy.
pub trait DataFront: Send + Sync + std::fmt::Debug {
    /// Whether the server's control connection from `control_peer` (the
    /// address the server saw) came through this front.
    fn owns(&self, control_peer: SocketAddr) -> bool;
    /// The session of `control_peer` has a passive listener at `real`
    /// (on [`HIDDEN_DATA_IP`]). Listen on `127.0.0.1:<real port>` and forward
    /// one connection to `real`; `Err` when that port is taken (the server
    /// then tries another).
    fn front(&self, control_peer: SocketAddr, real: SocketAddr) -> io::Result<()>;
}

type SharedFront = Arc<Mutex<Option<Arc<dyn DataFront>>>>;

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
    /// Storage faults (none by default).
    pub faults: Faults,
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
            faults: Faults::default(),
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
    faults: Arc<FaultState>,
    front: SharedFront,
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

    let faults = Arc::new(FaultState::new(&opts.faults));
    let front: SharedFront = Arc::new(Mutex::new(None));
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
        faults: faults.clone(),
        front: front.clone(),
    });
    // Fail here, not on the first connection, if the configuration is bad.
    if let Err(e) = config.build(None) {
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
        faults,
        front,
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

    /// Replaces the storage faults (their counts start again from zero).
    pub fn set_faults(&self, faults: Faults) {
        self.faults.set(&faults);
    }

    /// How often each fault fired since the faults were last set.
    pub fn fault_counts(&self) -> FaultCounts {
        self.faults.counts()
    }

    /// What the server's storage has done so far (STOR/RETR outcomes).
    pub fn storage_stats(&self) -> StorageStats {
        self.faults.stats()
    }

    /// Waits until the server's storage stats satisfy `pred` (for example
    /// until the server, too, has seen a cut upload fail); panics after
    /// `timeout`.
    pub async fn wait_for_storage(
        &self,
        pred: impl Fn(&StorageStats) -> bool,
        timeout: Duration,
    ) -> StorageStats {
        self.faults.wait_for(pred, timeout).await
    }

    /// Routes the passive data connections of sessions that `front` owns
    /// through it (see the module docs). Replaces any earlier front.
    pub fn attach_data_front(&self, front: Arc<dyn DataFront>) {
        *self.front.lock().unwrap() = Some(front);
    }

    /// Data connections go straight to the server again.
    pub fn detach_data_front(&self) {
        *self.front.lock().unwrap() = None;
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
    faults: Arc<FaultState>,
    front: SharedFront,
}

/// A boxed session future, so the libunftp `Server` type never has to be
/// named.
type Session = Pin<Box<dyn Future<Output = ()> + Send>>;

impl PerConnection {
    /// Builds a `Server` and returns what serves one control connection
    /// (from `peer`, as the server sees it).
    fn build(
        &self,
        peer: Option<SocketAddr>,
    ) -> Result<impl FnOnce(TcpStream) -> Session + use<>, ServerError> {
        let root = self.root.clone();
        let faults = self.faults.clone();
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
            FaultyFs::new(root.clone(), faults.clone()).expect("open server root")
        }))
        .authenticator(self.auth.clone())
        .ftps(self.leaf_paths.cert.clone(), self.leaf_paths.key.clone())
        .ftps_tls_flags(tls_flags)
        .ftps_client_auth(client_auth)
        .ftps_trust_store(self.ca_file.clone())
        .ftps_required(self.ftps_required, self.ftps_required)
        .passive_host(Ipv4Addr::LOCALHOST)
        .binder(EphemeralPortBinder {
            peer,
            front: self.front.clone(),
        })
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
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("test FTPS server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::SeqCst);
        match config.build(Some(peer)) {
            Ok(serve) => {
                sessions.spawn(async move {
                    match loopback_pair().await {
                        Ok((inner, outer)) => {
                            tokio::join!(serve(inner), relay_control(stream, outer));
                        }
                        Err(e) => eprintln!("test FTPS server: no loopback pair: {e}"),
                    }
                });
            }
            Err(e) => eprintln!("test FTPS server: cannot build server: {e}"),
        }
        while sessions.try_join_next().is_some() {}
    }
}

/// How long the client's first bytes after `234` (its TLS ClientHello) are
/// held back; see [`relay_control`].
const AUTH_TLS_HOLD: Duration = Duration::from_millis(25);

/// Two ends of a fresh loopback TCP connection: (accepted, connected).
async fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(addr));
    Ok((accepted?.0, connected?))
}

/// Relays a control connection between the client and libunftp, to work
/// around a race in libunftp 0.24's AUTH TLS: it answers `234` and only then
/// (from a spawned task) tells its control loop to start TLS. A client whose
/// ClientHello arrives before that message is read by the plaintext command
/// parser, answered in plaintext, and fails with "received corrupt message
/// of type InvalidContentType" (seen in about 1 run in 5 of a test binary on
/// a loaded 2-core machine). The relay watches the plaintext replies for a
/// line starting `234 ` and holds the client's next bytes back for
/// [`AUTH_TLS_HOLD`]. After that it only copies bytes; a reset on one side
/// is passed on as a reset.
async fn relay_control(client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (auth_tx, auth_rx) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    let (reset_tx, _) = tokio::sync::watch::channel(false);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = async {
        let mut gate = Some(auth_rx);
        relay_one_way(cr, sw, &reset_tx, |_| {
            let until = gate.as_ref().and_then(|rx| *rx.borrow());
            if until.is_some() {
                gate = None;
            }
            until
        })
        .await
    };
    let down = async {
        let mut line = Vec::new();
        let mut scanning = true;
        relay_one_way(sr, cw, &reset_tx, |chunk| {
            if scanning {
                for &b in chunk {
                    if line.len() < 4 {
                        line.push(b);
                    }
                    if line == b"234 " {
                        scanning = false;
                        auth_tx.send_replace(Some(tokio::time::Instant::now() + AUTH_TLS_HOLD));
                        break;
                    }
                    if b == b'\n' {
                        line.clear();
                    }
                }
            }
            None
        })
        .await
    };
    tokio::join!(up, down);
}

/// Copies `from` to `to` until end of stream (passed on as a shutdown) or an
/// error on either side (both sockets are then reset). `before` sees each
/// chunk before it is written and may return an instant to wait for first.
async fn relay_one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    reset: &tokio::sync::watch::Sender<bool>,
    mut before: impl FnMut(&[u8]) -> Option<tokio::time::Instant>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut reset_rx = reset.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = reset_rx.wait_for(|r| *r) => break,
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
            Err(_) => break,
        };
        if let Some(until) = before(&buf[..n]) {
            tokio::time::sleep_until(until).await;
        }
        let written = tokio::select! {
            w = to.write_all(&buf[..n]) => w,
            _ = reset_rx.wait_for(|r| *r) => break,
        };
        if written.is_err() {
            break;
        }
    }
    reset.send_replace(true);
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}

/// Binds every passive data listener to port 0 on the control connection's
/// address: the kernel picks a free port, so parallel tests never collide.
/// When an attached [`DataFront`] owns the session, the listener goes on
/// [`HIDDEN_DATA_IP`] instead and the front takes the port on 127.0.0.1.
#[derive(Debug)]
struct EphemeralPortBinder {
    /// The control connection's peer, as the server saw it.
    peer: Option<SocketAddr>,
    front: SharedFront,
}

#[async_trait::async_trait]
impl Binder for EphemeralPortBinder {
    async fn bind(
        &mut self,
        local_addr: IpAddr,
        _passive_ports: RangeInclusive<u16>,
    ) -> io::Result<TcpSocket> {
        let front = self.front.lock().unwrap().clone();
        if let (Some(front), Some(peer)) = (front, self.peer)
            && front.owns(peer)
        {
            let mut last = None;
            for _ in 0..20 {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(IpAddr::V4(HIDDEN_DATA_IP), 0))?;
                match front.front(peer, socket.local_addr()?) {
                    Ok(()) => return Ok(socket),
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.unwrap_or_else(|| io::Error::other("no port for the data front")));
        }
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
