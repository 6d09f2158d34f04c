//! Storage faults for the in-process FTPS server: a libunftp
//! `StorageBackend` that wraps the unftp-sbe-fs filesystem backend,
//! delegates everything, and misbehaves where a test asks it to.
//!
//! Every fault is a [`Rule`]: which paths (globs on the absolute FTP path,
//! such as `/inbound/a.837.part`; `*` also crosses `/`, so `*.part` matches
//! in every folder) and how many times (every time, or only the first `n`
//! matching operations, so a retry succeeds).
//!
//! What the client sees (libunftp 0.24; ferry's classification in brackets):
//!
//! | fault                | command | reply                                   |
//! |----------------------|---------|-----------------------------------------|
//! | `deny_writes_to`     | STOR    | `150`, data read to the end, then `550 Permission denied` [PermissionDenied] |
//! | `refuse_rename`      | RNTO    | `553 File name not allowed` [Server { code: 553 }] |
//! | `deny_deletes`       | DELE    | `550 Permission denied` [PermissionDenied] |
//! | `vanish_after_list`  | RETR    | `150 Sending data`, empty data connection, `550 File not found` [NotFound]; SIZE: `550 File not found` |
//! | `corrupt_*`, `truncate_*` | STOR/RETR | `226` as if all was well       |
//!
//! libunftp answers STOR and RETR with 150 before it touches storage, so a
//! refused STOR can only be refused after the data connection: the wrapper
//! reads the upload to its end first (so the client's writes never race a
//! closed socket) and then refuses it; no file is created.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use unftp_core::auth::DefaultUser;
use unftp_core::storage::{
    Error, ErrorKind, Fileinfo, Metadata, Result as StorageResult, StorageBackend,
};
use unftp_sbe_fs::{Filesystem, Meta};

/// Which paths a fault applies to and how often. `Rule::default()` never
/// applies.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    globs: Vec<String>,
    /// `None`: every matching operation.
    limit: Option<u64>,
}

impl Rule {
    /// Applies to nothing (the default).
    pub fn never() -> Rule {
        Rule::default()
    }

    /// Applies to every path, every time.
    pub fn always() -> Rule {
        Rule::matching(["*"])
    }

    /// Applies to paths matching any of `globs` (absolute FTP paths;
    /// `*` crosses `/`), every time.
    pub fn matching<I, S>(globs: I) -> Rule
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Rule {
            globs: globs.into_iter().map(Into::into).collect(),
            limit: None,
        }
    }

    /// Only the first matching operation; later ones behave.
    pub fn once(self) -> Rule {
        self.times(1)
    }

    /// Only the first `n` matching operations.
    pub fn times(mut self, n: u64) -> Rule {
        self.limit = Some(n);
        self
    }

    /// Every matching operation (the default).
    pub fn every_time(mut self) -> Rule {
        self.limit = None;
        self
    }
}

/// The storage faults of a [`super::ftps_server::TestServer`]; all off by
/// default. Set them in `ServerOptions::faults` or later with
/// `TestServer::set_faults`.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// STOR stores the upload with its first byte XOR 0xFF (same size,
    /// different hash). An empty upload is stored as is (still counted).
    pub corrupt_uploads: Rule,
    /// RETR sends the file with its first byte XOR 0xFF; the file on disk
    /// stays intact.
    pub corrupt_downloads: Rule,
    /// STOR stores all but the last byte of the upload and answers 226.
    pub truncate_uploads: Rule,
    /// RETR sends all but the last byte of the file and answers 226.
    pub truncate_downloads: Rule,
    /// STOR (and APPE) refused with `550 Permission denied`, after the
    /// data was read; nothing is written.
    pub deny_writes_to: Rule,
    /// RNTO refused with `553 File name not allowed` when the source or the
    /// destination matches.
    pub refuse_rename: Rule,
    /// DELE refused with `550 Permission denied`.
    pub deny_deletes: Rule,
    /// A file that matches is deleted from disk right after a listing
    /// (LIST, MLSD, NLST) showed it: the next RETR or SIZE gets 550.
    pub vanish_after_list: Rule,
}

/// How often each fault fired since the faults were last set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub corrupt_uploads: u64,
    pub corrupt_downloads: u64,
    pub truncate_uploads: u64,
    pub truncate_downloads: u64,
    pub deny_writes_to: u64,
    pub refuse_rename: u64,
    pub deny_deletes: u64,
    pub vanish_after_list: u64,
}

/// What the server's storage has done since it started: lets a test wait
/// until the server, not only the client, has seen a transfer end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// STOR/APPE that completed and answered 226.
    pub stor_ok: u64,
    /// STOR/APPE that ended in an error (connection cut, refused, ...).
    pub stor_failed: u64,
    /// RETR that completed.
    pub retr_ok: u64,
    /// RETR that ended in an error (connection cut, missing file, ...).
    pub retr_failed: u64,
    /// Bytes the server read from upload data connections (after TLS).
    pub bytes_received: u64,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    CorruptUploads,
    CorruptDownloads,
    TruncateUploads,
    TruncateDownloads,
    DenyWrites,
    RefuseRename,
    DenyDeletes,
    VanishAfterList,
}

const FAULTS: usize = 8;

struct CompiledRule {
    set: GlobSet,
    limit: Option<u64>,
}

struct Inner {
    rules: [CompiledRule; FAULTS],
    fired: [u64; FAULTS],
    stats: StorageStats,
}

/// Faults and counters shared by every session of one server.
pub struct FaultState {
    inner: Mutex<Inner>,
    bytes_received: Arc<AtomicU64>,
}

impl Debug for FaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultState")
    }
}

fn compile(rule: &Rule) -> CompiledRule {
    let mut b = GlobSetBuilder::new();
    for g in &rule.globs {
        b.add(Glob::new(g).unwrap_or_else(|e| panic!("bad fault glob {g:?}: {e}")));
    }
    CompiledRule {
        set: b.build().expect("fault globs"),
        limit: rule.limit,
    }
}

fn compile_all(f: &Faults) -> [CompiledRule; FAULTS] {
    [
        compile(&f.corrupt_uploads),
        compile(&f.corrupt_downloads),
        compile(&f.truncate_uploads),
        compile(&f.truncate_downloads),
        compile(&f.deny_writes_to),
        compile(&f.refuse_rename),
        compile(&f.deny_deletes),
        compile(&f.vanish_after_list),
    ]
}

impl FaultState {
    pub fn new(faults: &Faults) -> FaultState {
        FaultState {
            inner: Mutex::new(Inner {
                rules: compile_all(faults),
                fired: [0; FAULTS],
                stats: StorageStats::default(),
            }),
            bytes_received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Replaces the faults and zeroes their counts (storage stats go on).
    pub fn set(&self, faults: &Faults) {
        let mut inner = self.inner.lock().unwrap();
        inner.rules = compile_all(faults);
        inner.fired = [0; FAULTS];
    }

    pub fn counts(&self) -> FaultCounts {
        let f = self.inner.lock().unwrap().fired;
        FaultCounts {
            corrupt_uploads: f[Fault::CorruptUploads as usize],
            corrupt_downloads: f[Fault::CorruptDownloads as usize],
            truncate_uploads: f[Fault::TruncateUploads as usize],
            truncate_downloads: f[Fault::TruncateDownloads as usize],
            deny_writes_to: f[Fault::DenyWrites as usize],
            refuse_rename: f[Fault::RefuseRename as usize],
            deny_deletes: f[Fault::DenyDeletes as usize],
            vanish_after_list: f[Fault::VanishAfterList as usize],
        }
    }

    pub fn stats(&self) -> StorageStats {
        let mut s = self.inner.lock().unwrap().stats;
        s.bytes_received = self.bytes_received.load(Ordering::SeqCst);
        s
    }

    /// Polls [`FaultState::stats`] until `pred` holds; panics after `timeout`.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&StorageStats) -> bool,
        timeout: Duration,
    ) -> StorageStats {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the server's storage did not reach the expected state in {timeout:?}: {s:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `fault` applies to `path` now; counts it when it does.
    fn fire(&self, fault: Fault, path: &Path) -> bool {
        let p = ftp_path(path);
        let mut inner = self.inner.lock().unwrap();
        let i = fault as usize;
        let rule = &inner.rules[i];
        if !rule.set.is_match(&p) || rule.limit.is_some_and(|l| inner.fired[i] >= l) {
            return false;
        }
        inner.fired[i] += 1;
        true
    }

    fn record(&self, f: impl FnOnce(&mut StorageStats)) {
        f(&mut self.inner.lock().unwrap().stats);
    }
}

/// The absolute FTP path as a string: `/inbound/a.837`.
fn ftp_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

/// The unftp-sbe-fs backend with faults.
#[derive(Debug)]
pub struct FaultyFs {
    inner: Filesystem,
    state: Arc<FaultState>,
}

impl FaultyFs {
    pub fn new(root: PathBuf, state: Arc<FaultState>) -> io::Result<FaultyFs> {
        Ok(FaultyFs {
            inner: Filesystem::new(root)?,
            state,
        })
    }
}

type Reader = Box<dyn AsyncRead + Send + Sync + Unpin>;
type Fs = Filesystem;
type U = DefaultUser;

#[async_trait]
impl StorageBackend<U> for FaultyFs {
    type Metadata = Meta;

    fn enter(&mut self, user: &U) -> io::Result<()> {
        <Fs as StorageBackend<U>>::enter(&mut self.inner, user)
    }

    fn name(&self) -> &str {
        "FaultyFs"
    }

    fn supported_features(&self) -> u32 {
        <Fs as StorageBackend<U>>::supported_features(&self.inner)
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
    ) -> StorageResult<Meta> {
        self.inner.metadata(user, path).await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
    ) -> StorageResult<Vec<Fileinfo<PathBuf, Meta>>>
    where
        Meta: Metadata,
    {
        let dir = path.as_ref().to_path_buf();
        let entries = self.inner.list(user, &dir).await?;
        for e in &entries {
            let full = dir.join(&e.path);
            if e.metadata.is_file() && self.state.fire(Fault::VanishAfterList, &full) {
                self.inner.del(user, &full).await?;
            }
        }
        Ok(entries)
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &U,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> StorageResult<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let r = async {
            let mut reader = self.get(user, path, start_pos).await?;
            tokio::io::copy(&mut reader, output)
                .await
                .map_err(Error::from)
        }
        .await;
        self.state.record(|s| match r {
            Ok(_) => s.retr_ok += 1,
            Err(_) => s.retr_failed += 1,
        });
        r
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        path: P,
        start_pos: u64,
    ) -> StorageResult<Reader> {
        let p = path.as_ref().to_path_buf();
        let mut reader = self.inner.get(user, &p, start_pos).await?;
        if self.state.fire(Fault::TruncateDownloads, &p) {
            let len = self.inner.metadata(user, &p).await?.len();
            let keep = len.saturating_sub(start_pos).saturating_sub(1);
            reader = Box::new(reader.take(keep));
        }
        if self.state.fire(Fault::CorruptDownloads, &p) {
            reader = Box::new(FlipFirstByte::new(reader));
        }
        Ok(reader)
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &U,
        input: R,
        path: P,
        start_pos: u64,
    ) -> StorageResult<u64> {
        let p = path.as_ref().to_path_buf();
        let mut input: Reader = Box::new(Counting {
            inner: input,
            count: self.state.bytes_received.clone(),
        });
        if self.state.fire(Fault::DenyWrites, &p) {
            // Read the upload to its end so the client sees the refusal as
            // a reply, not as a write to a closed socket.
            let drained = tokio::io::copy(&mut input, &mut tokio::io::sink()).await;
            self.state.record(|s| s.stor_failed += 1);
            drained.map_err(Error::from)?;
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "test server: writes denied here",
            ));
        }
        if self.state.fire(Fault::TruncateUploads, &p) {
            input = Box::new(HoldBackLastByte::new(input));
        }
        if self.state.fire(Fault::CorruptUploads, &p) {
            input = Box::new(FlipFirstByte::new(input));
        }
        let r = self.inner.put(user, input, &p, start_pos).await;
        self.state.record(|s| match r {
            Ok(_) => s.stor_ok += 1,
            Err(_) => s.stor_failed += 1,
        });
        r
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> StorageResult<()> {
        if self.state.fire(Fault::DenyDeletes, path.as_ref()) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "test server: deletes denied",
            ));
        }
        self.inner.del(user, path).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> StorageResult<()> {
        self.inner.mkd(user, path).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &U,
        from: P,
        to: P,
    ) -> StorageResult<()> {
        // Evaluated in turn so a `once` rule is spent by one RNTO only.
        if self.state.fire(Fault::RefuseRename, from.as_ref())
            || self.state.fire(Fault::RefuseRename, to.as_ref())
        {
            return Err(Error::from(ErrorKind::FileNameNotAllowedError));
        }
        self.inner.rename(user, from, to).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> StorageResult<()> {
        self.inner.rmd(user, path).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &U, path: P) -> StorageResult<()> {
        self.inner.cwd(user, path).await
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.count.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

/// XORs the first byte of the stream with 0xFF.
struct FlipFirstByte {
    inner: Reader,
    done: bool,
}

impl FlipFirstByte {
    fn new(inner: Reader) -> Self {
        FlipFirstByte { inner, done: false }
    }
}

impl AsyncRead for FlipFirstByte {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.done && buf.filled().len() > before {
            buf.filled_mut()[before] ^= 0xFF;
            self.done = true;
        }
        r
    }
}

/// Passes everything but the stream's last byte.
struct HoldBackLastByte {
    inner: Reader,
    held: Option<u8>,
    scratch: Vec<u8>,
}

impl HoldBackLastByte {
    fn new(inner: Reader) -> Self {
        HoldBackLastByte {
            inner,
            held: None,
            scratch: vec![0; 64 * 1024],
        }
    }
}

impl AsyncRead for HoldBackLastByte {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Read at most what fits, counting the held byte that goes first.
            let want = buf.remaining().min(this.scratch.len());
            if want == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch[..want]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                // End of stream: the held byte is dropped.
                return Poll::Ready(Ok(()));
            }
            let mut emitted = n - 1;
            if let Some(h) = this.held.take() {
                buf.put_slice(&[h]);
                emitted += 1;
            }
            buf.put_slice(&this.scratch[..n - 1]);
            this.held = Some(this.scratch[n - 1]);
            if emitted > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}
