//! A TCP proxy in front of the in-process FTPS server that cuts connections
//! on purpose: after N bytes of an upload or a download, after N bytes of
//! the control connection, or just before the server's reply to a finished
//! transfer. TLS passes through untouched: the proxy never decrypts, it
//! counts bytes on the wire and drops sockets.
//!
//! ```ignore
//! let srv = ftps_server::start(ServerOptions::default()).await;
//! let proxy = CutProxy::start(&srv, CutPlan::upload_after(256 * 1024).once()).await;
//! // connect ferry to 127.0.0.1:proxy.port() instead of srv.port()
//! ```
//!
//! How data connections get here: the EPSV/PASV reply travels inside TLS and
//! cannot be rewritten, so the proxy attaches itself to the server as a
//! [`DataFront`]. For a session whose control connection came through the
//! proxy, the server binds its real passive listener on 127.0.0.2:P and the
//! proxy listens on 127.0.0.1:P (same port), forwarding to it. A client
//! connects to "the control peer's address + the EPSV port" (or to the PASV
//! address, which the server gives as 127.0.0.1) and so reaches the proxy.
//! Sessions that connect to the server directly are not affected.
//!
//! A cut drops both sockets of the connection with `SO_LINGER` 0, so both the
//! client and the server get a reset (not a clean end of stream): the server
//! fails the STOR and keeps the partial file, as a real server would.
//!
//! Byte counts are raw TCP bytes, TLS records and handshakes included: a data
//! connection carries a few hundred bytes of handshake each way before any
//! file content (more without session resumption), so pick thresholds well
//! above 4 KiB when "in the middle of the file" is meant, and files much
//! larger than the threshold.
//!
//! A data-only cut of a small upload can race the client: if the client has
//! already handed the whole file to its kernel, it may finish cleanly and
//! then read the server's `426 Connection closed` instead of seeing a reset.
//! Use files of several MiB, or [`CutPlan::with_control`] (the control
//! connection is cut at the same moment, so the client always sees a
//! connection error).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::ftps_server::{DataFront, TestServer};

/// Which connections a plan watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    Control,
    Data,
}

/// Which bytes a plan counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (an upload's content on a data connection).
    Upload,
    /// Server to client (a download's content or a listing).
    Download,
    /// Both directions added up.
    Both,
}

#[derive(Clone, Debug)]
enum Trigger {
    Never,
    After {
        kind: ConnKind,
        dir: Direction,
        bytes: u64,
    },
    ReplyLost {
        dir: Direction,
        min_bytes: u64,
    },
}

/// When to cut. Plans cut every matching connection unless limited with
/// [`CutPlan::once`] or [`CutPlan::times`].
#[derive(Clone, Debug)]
pub struct CutPlan {
    trigger: Trigger,
    limit: Option<u64>,
    with_control: bool,
}

impl CutPlan {
    /// Forward everything, cut nothing.
    pub fn none() -> CutPlan {
        CutPlan {
            trigger: Trigger::Never,
            limit: None,
            with_control: false,
        }
    }

    /// Cut a connection of `kind` once `bytes` bytes have flowed in `dir`
    /// (exactly that many are forwarded, then both sides are reset).
    pub fn after(kind: ConnKind, dir: Direction, bytes: u64) -> CutPlan {
        CutPlan {
            trigger: Trigger::After { kind, dir, bytes },
            ..CutPlan::none()
        }
    }

    /// Cut a data connection after `bytes` bytes from client to server.
    pub fn upload_after(bytes: u64) -> CutPlan {
        CutPlan::after(ConnKind::Data, Direction::Upload, bytes)
    }

    /// Cut a data connection after `bytes` bytes from server to client.
    pub fn download_after(bytes: u64) -> CutPlan {
        CutPlan::after(ConnKind::Data, Direction::Download, bytes)
    }

    /// Cut a control connection after `bytes` bytes in both directions
    /// together (greeting, AUTH TLS, handshake and commands included).
    pub fn control_after(bytes: u64) -> CutPlan {
        CutPlan::after(ConnKind::Control, Direction::Both, bytes)
    }

    /// The upload reaches the server whole and is stored, but the control
    /// connection is cut just before the server's completion reply (226)
    /// reaches the client: "did it arrive?" Armed by the first data
    /// connection that carries at least `min_bytes` from client to server
    /// (use a threshold above the TLS handshake, e.g. 4096, and a larger
    /// file, so listings do not arm it).
    pub fn upload_reply_lost(min_bytes: u64) -> CutPlan {
        CutPlan {
            trigger: Trigger::ReplyLost {
                dir: Direction::Upload,
                min_bytes,
            },
            ..CutPlan::none()
        }
    }

    /// The download reaches the client whole, but the control connection is
    /// cut just before the server's completion reply. Armed by the first
    /// data connection that carries at least `min_bytes` from server to
    /// client (listings and handshakes count: use a threshold well above
    /// them and a larger file).
    pub fn download_reply_lost(min_bytes: u64) -> CutPlan {
        CutPlan {
            trigger: Trigger::ReplyLost {
                dir: Direction::Download,
                min_bytes,
            },
            ..CutPlan::none()
        }
    }

    /// Only the first matching connection is cut; later ones behave (so a
    /// retry succeeds).
    pub fn once(self) -> CutPlan {
        self.times(1)
    }

    /// Only the first `n` matching connections are cut.
    pub fn times(mut self, n: u64) -> CutPlan {
        self.limit = Some(n);
        self
    }

    /// Every matching connection is cut (the default).
    pub fn every_time(mut self) -> CutPlan {
        self.limit = None;
        self
    }

    /// When a data connection is cut, cut its session's control connection
    /// at the same moment (a network outage rather than a dropped data
    /// connection).
    pub fn with_control(mut self) -> CutPlan {
        self.with_control = true;
        self
    }
}

/// What the proxy has seen since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Control connections accepted.
    pub control_connections: u64,
    /// Data connections accepted (listings included).
    pub data_connections: u64,
    /// Bytes forwarded client to server, all connections.
    pub bytes_up: u64,
    /// Bytes forwarded server to client, all connections.
    pub bytes_down: u64,
    /// Of `bytes_up`, on data connections.
    pub data_bytes_up: u64,
    /// Of `bytes_down`, on data connections.
    pub data_bytes_down: u64,
    /// Times the plan fired (a data cut with its control connection counts once).
    pub cuts: u64,
}

#[derive(Default)]
struct Counters {
    control_connections: AtomicU64,
    data_connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    data_bytes_up: AtomicU64,
    data_bytes_down: AtomicU64,
    cuts: AtomicU64,
}

struct PlanState {
    plan: CutPlan,
    /// Times the plan fired (or was armed) since it was set.
    spent: u64,
}

/// One proxied connection pair.
struct Link {
    kind: ConnKind,
    up: AtomicU64,
    down: AtomicU64,
    cut: watch::Sender<bool>,
    /// A data connection's control connection.
    parent: Option<Arc<Link>>,
    /// Control: cut before forwarding the next server-to-client bytes.
    drop_next_reply: AtomicBool,
    /// Data: a reply-lost plan was already armed by this connection.
    armed: AtomicBool,
}

impl Link {
    fn new(kind: ConnKind, parent: Option<Arc<Link>>) -> Arc<Link> {
        Arc::new(Link {
            kind,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cut: watch::channel(false).0,
            parent,
            drop_next_reply: AtomicBool::new(false),
            armed: AtomicBool::new(false),
        })
    }

    fn count(&self, dir: Direction) -> u64 {
        match dir {
            Direction::Upload => self.up.load(Ordering::SeqCst),
            Direction::Download => self.down.load(Ordering::SeqCst),
            Direction::Both => self.up.load(Ordering::SeqCst) + self.down.load(Ordering::SeqCst),
        }
    }

    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<PlanState>,
    counters: Counters,
    /// Control links by the local address of their connection to the
    /// server (which is the peer address the server sees).
    controls: Mutex<HashMap<SocketAddr, Weak<Link>>>,
    /// Every link, for [`CutProxy::cut_all`].
    links: Mutex<Vec<Weak<Link>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(f);
    }

    fn register(&self, link: &Arc<Link>) {
        let mut links = self.links.lock().unwrap();
        links.retain(|l| l.strong_count() > 0);
        links.push(Arc::downgrade(link));
    }

    /// Takes one firing from the plan's budget.
    fn take_budget(&self) -> bool {
        let mut p = self.plan.lock().unwrap();
        if p.plan.limit.is_some_and(|l| p.spent >= l) {
            return false;
        }
        p.spent += 1;
        true
    }

    /// `n` bytes arrived on `link` in `dir`: how many to forward, and
    /// whether to cut after them. Counts the forwarded bytes.
    fn on_chunk(&self, link: &Link, dir: Direction, n: usize) -> (usize, bool) {
        if link.kind == ConnKind::Control
            && dir == Direction::Download
            && link.drop_next_reply.load(Ordering::SeqCst)
        {
            return (0, true);
        }
        let (trigger, with_control) = {
            let p = self.plan.lock().unwrap();
            (p.plan.trigger.clone(), p.plan.with_control)
        };
        let mut forward = n;
        let mut cut = false;
        match trigger {
            Trigger::Never => {}
            Trigger::After {
                kind,
                dir: pdir,
                bytes,
            } => {
                if kind == link.kind && (pdir == dir || pdir == Direction::Both) {
                    let before = link.count(pdir);
                    if before + n as u64 >= bytes && self.take_budget() {
                        forward = bytes.saturating_sub(before).min(n as u64) as usize;
                        cut = true;
                    }
                }
            }
            Trigger::ReplyLost {
                dir: pdir,
                min_bytes,
            } => {
                if link.kind == ConnKind::Data
                    && pdir == dir
                    && link.count(dir) + n as u64 >= min_bytes
                    && !link.armed.load(Ordering::SeqCst)
                    && let Some(parent) = &link.parent
                    && self.take_budget()
                {
                    link.armed.store(true, Ordering::SeqCst);
                    parent.drop_next_reply.store(true, Ordering::SeqCst);
                }
            }
        }
        let f = forward as u64;
        match dir {
            Direction::Upload => {
                link.up.fetch_add(f, Ordering::SeqCst);
                self.counters.bytes_up.fetch_add(f, Ordering::SeqCst);
                if link.kind == ConnKind::Data {
                    self.counters.data_bytes_up.fetch_add(f, Ordering::SeqCst);
                }
            }
            _ => {
                link.down.fetch_add(f, Ordering::SeqCst);
                self.counters.bytes_down.fetch_add(f, Ordering::SeqCst);
                if link.kind == ConnKind::Data {
                    self.counters.data_bytes_down.fetch_add(f, Ordering::SeqCst);
                }
            }
        }
        if cut
            && with_control
            && let Some(parent) = &link.parent
        {
            parent.cut.send_replace(true);
        }
        (forward, cut)
    }

    /// Resets both sides of `link`; `planned` counts it as a cut.
    fn cut(&self, link: &Link, planned: bool) {
        let was = link.cut.send_replace(true);
        if planned && !was {
            self.counters.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The proxy. Dropping it closes every connection through it.
pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl CutProxy {
    /// Listens on 127.0.0.1 (a free port), forwards to `server`'s control
    /// port, and attaches itself to `server` so the data connections of the
    /// sessions it carries come through it too.
    pub async fn start(server: &TestServer, plan: CutPlan) -> CutProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: server.addr,
            plan: Mutex::new(PlanState { plan, spent: 0 }),
            counters: Counters::default(),
            controls: Mutex::new(HashMap::new()),
            links: Mutex::new(Vec::new()),
            tasks: Mutex::new(JoinSet::new()),
        });
        server.attach_data_front(Arc::new(Front(shared.clone())));
        shared.spawn(accept_control(listener, shared.clone()));
        CutProxy { addr, shared }
    }

    /// Where clients connect (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// "127.0.0.1".
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Replaces the plan; its budget (`once`, `times`) starts afresh.
    /// Connections already armed by a reply-lost plan stay armed.
    pub fn set_plan(&self, plan: CutPlan) {
        *self.shared.plan.lock().unwrap() = PlanState { plan, spent: 0 };
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyStats {
            control_connections: l(&c.control_connections),
            data_connections: l(&c.data_connections),
            bytes_up: l(&c.bytes_up),
            bytes_down: l(&c.bytes_down),
            data_bytes_up: l(&c.data_bytes_up),
            data_bytes_down: l(&c.data_bytes_down),
            cuts: l(&c.cuts),
        }
    }

    /// Times the plan fired.
    pub fn cuts(&self) -> u64 {
        self.shared.counters.cuts.load(Ordering::SeqCst)
    }

    /// Resets every open connection now (a network outage); not counted in
    /// `cuts`.
    pub fn cut_all(&self) {
        for l in self.shared.links.lock().unwrap().iter() {
            if let Some(l) = l.upgrade() {
                self.shared.cut(&l, false);
            }
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.tasks.lock().unwrap().abort_all();
    }
}

/// The proxy as the server's data front.
struct Front(Arc<Shared>);

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CutProxy front for {}", self.0.upstream)
    }
}

impl Front {
    fn control(&self, peer: SocketAddr) -> Option<Arc<Link>> {
        self.0
            .controls
            .lock()
            .unwrap()
            .get(&peer)
            .and_then(Weak::upgrade)
    }
}

impl DataFront for Front {
    fn owns(&self, control_peer: SocketAddr) -> bool {
        self.control(control_peer).is_some()
    }

    fn front(&self, control_peer: SocketAddr, real: SocketAddr) -> io::Result<()> {
        let parent = self
            .control(control_peer)
            .ok_or_else(|| io::Error::other("not a proxied session"))?;
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            real.port(),
        ))?;
        let listener = socket.listen(16)?;
        let shared = self.0.clone();
        self.0.spawn(async move {
            // libunftp waits 15 s for the client on its side.
            let accepted = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
            drop(listener);
            let Ok(Ok((client, _))) = accepted else {
                return;
            };
            let Ok(server) = TcpStream::connect(real).await else {
                return;
            };
            shared
                .counters
                .data_connections
                .fetch_add(1, Ordering::SeqCst);
            let link = Link::new(ConnKind::Data, Some(parent));
            shared.register(&link);
            run_pair(client, server, link, shared).await;
        });
        Ok(())
    }
}

async fn accept_control(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                eprintln!("cut proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let s = shared.clone();
        shared.spawn(async move {
            let Ok(server) = TcpStream::connect(s.upstream).await else {
                return;
            };
            let Ok(key) = server.local_addr() else {
                return;
            };
            s.counters
                .control_connections
                .fetch_add(1, Ordering::SeqCst);
            let link = Link::new(ConnKind::Control, None);
            s.register(&link);
            s.controls
                .lock()
                .unwrap()
                .insert(key, Arc::downgrade(&link));
            run_pair(client, server, link.clone(), s.clone()).await;
            // The port may already serve a newer connection: remove only ours.
            let mut controls = s.controls.lock().unwrap();
            if controls
                .get(&key)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&link)))
            {
                controls.remove(&key);
            }
        });
    }
}

async fn run_pair(client: TcpStream, server: TcpStream, link: Arc<Link>, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pump(cr, sw, Direction::Upload, link.clone(), shared.clone()),
        pump(sr, cw, Direction::Download, link, shared),
    );
}

/// Forwards one direction until end of stream, an error or a cut. On a cut
/// (or an error, which is passed on as a reset) both sockets get
/// `SO_LINGER` 0, so they reset once the last half is dropped.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Direction,
    link: Arc<Link>,
    shared: Arc<Shared>,
) {
    let mut cut_rx = link.cut.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if link.is_cut() {
            break;
        }
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = cut_rx.wait_for(|c| *c) => break,
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
            Err(_) => {
                shared.cut(&link, false);
                break;
            }
        };
        let (forward, cut) = shared.on_chunk(&link, dir, n);
        if forward > 0 {
            let written = tokio::select! {
                w = to.write_all(&buf[..forward]) => w,
                _ = cut_rx.wait_for(|c| *c) => break,
            };
            if written.is_err() {
                shared.cut(&link, false);
                break;
            }
        }
        if cut {
            shared.cut(&link, true);
            break;
        }
    }
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}
