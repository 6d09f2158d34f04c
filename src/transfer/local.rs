//! The local side of a transfer: which files are ready, hashing while
//! streaming, and placing files without ever overwriting one.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Job;

/// A local file as one `stat` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// The inode, so a same-size, same-mtime replacement is still seen as
    /// another file; 0 when unknown (a record read back from the ledger).
    pub ino: u64,
}

impl LocalFile {
    pub fn stat(path: &Path) -> io::Result<LocalFile> {
        let meta = std::fs::metadata(path)?;
        Ok(LocalFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: path.to_path_buf(),
            size: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).into(),
            ino: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }

    /// The mtime as the ledger stores it.
    pub fn mtime_key(&self) -> String {
        crate::ledger::rfc3339(self.mtime)
    }

    /// Whether the file on disk is still what this record says, at the
    /// precision the ledger keeps (milliseconds), so a record read back from
    /// the ledger compares equal to the file it describes.
    pub fn unchanged(&self) -> bool {
        LocalFile::stat(&self.path).is_ok_and(|now| {
            now.size == self.size
                && now.mtime_key() == self.mtime_key()
                && (self.ino == 0 || now.ino == self.ino)
        })
    }
}

/// Files in a push job's folder that match its patterns, split into those
/// ready to send (size and mtime unchanged for `stable_for`) and those still
/// being written. Waits at most `stable_for` for recently changed files.
pub async fn scan_ready(job: &Job) -> io::Result<(Vec<LocalFile>, Vec<String>)> {
    let mut candidates = Vec::new();
    for entry in std::fs::read_dir(&job.local_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !job.filter.matches(&name) || !entry.file_type()?.is_file() {
            continue;
        }
        if let Ok(f) = LocalFile::stat(&entry.path()) {
            candidates.push(f);
        }
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let now: DateTime<Utc> = SystemTime::now().into();
    let stable = chrono::Duration::from_std(job.stable_for).unwrap_or_default();
    let youngest = candidates
        .iter()
        .map(|f| stable - (now - f.mtime))
        .filter(|left| *left > chrono::Duration::zero())
        .max();
    if let Some(left) = youngest {
        // Someone wrote recently: watch the files hold still for the rest of the window.
        tokio::time::sleep(left.to_std().unwrap_or(Duration::ZERO).min(job.stable_for)).await;
    }
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for f in candidates {
        match LocalFile::stat(&f.path) {
            Ok(again) if again == f => ready.push(f),
            Ok(_) => waiting.push(f.name),
            Err(_) => {} // gone meanwhile
        }
    }
    Ok((ready, waiting))
}

/// Files in a push job's folder that would be picked up and are not recorded
/// as delivered: what `status` calls waiting, and what a rescan looks for.
pub fn waiting_count(job: &Job, ledger: Option<&crate::ledger::Ledger>) -> anyhow::Result<u64> {
    let Ok(entries) = std::fs::read_dir(&job.local_dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !job.filter.matches(&name) {
            continue;
        }
        let mtime: DateTime<Utc> = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).into();
        let delivered = match ledger {
            // A duplicate held back by the X12 gate waits for an operator, not for a run.
            Some(l) => {
                l.is_delivered(&job.name, &name, meta.len(), mtime)?
                    || (job.edi.is_some() && l.duplicate_block(&job.name, &name)?.is_some())
            }
            None => false,
        };
        if !delivered {
            n += 1;
        }
    }
    Ok(n)
}

/// Wraps a reader or writer and computes the SHA-256 and length of every
/// byte that passes, so a file is read exactly once; optionally reports
/// progress as it goes.
pub struct Hashing<T> {
    inner: T,
    hasher: Option<Sha256>,
    bytes: u64,
    progress: Option<(super::Progress, String, u64)>,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
            progress: None,
        }
    }

    /// Counts and reports progress only: `inner` hashes itself (a [`Sink`]).
    pub fn counting(inner: T) -> Self {
        Hashing {
            hasher: None,
            ..Hashing::new(inner)
        }
    }

    /// Reports `(name, bytes so far, total)` after every chunk.
    pub fn with_progress(
        mut self,
        progress: Option<super::Progress>,
        name: &str,
        total: u64,
    ) -> Self {
        self.progress = progress.map(|p| (p, name.to_string(), total));
        self
    }

    fn advance(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        self.bytes += data.len() as u64;
        if let Some((p, name, total)) = &self.progress {
            (p.0)(name, self.bytes, *total);
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counts bytes that are not streamed and hashed elsewhere (a resumed
    /// download's head, hashed by its [`Sink`]).
    pub fn count(&mut self, n: u64) {
        self.bytes += n;
    }

    /// The inner value, the SHA-256 (empty when only counting) and the length.
    pub fn finish(self) -> (T, String, u64) {
        let sha = self
            .hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default();
        (self.inner, sha, self.bytes)
    }

    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Hashing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            self.advance(new);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Hashing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.advance(&data[..n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `remit.835` -> `remit.1.835`: a suffix that keeps the extension, so the
/// consumer's `*.835` still matches.
pub fn suffixed(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}.{n}{}", &name[..i], &name[i..]),
        _ => format!("{name}.{n}"),
    }
}

/// Moves `src` into `dir` as `name`, or `name` with a suffix if that exists:
/// never overwrites. Atomic (a hard link then unlink) on one file system,
/// copy + fsync + unlink across file systems. Returns where it went.
pub fn place_no_overwrite(src: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    place_with(src, dir, name, |a, b| std::fs::hard_link(a, b), true)
}

/// [`place_no_overwrite`] for a `src` inside `dir`, without syncing `dir`:
/// the caller places several files and syncs the folder once
/// ([`try_sync_dir`]) before it records any of them as placed.
pub fn place_in_dir_unsynced(src: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    debug_assert_eq!(src.parent(), Some(dir));
    place_with(src, dir, name, |a, b| std::fs::hard_link(a, b), false)
}

/// [`place_no_overwrite`] with the hard link made by `link` (tests refuse
/// it); `sync`: the folders are synced before it returns.
fn place_with(
    src: &Path,
    dir: &Path,
    name: &str,
    link: impl Fn(&Path, &Path) -> io::Result<()>,
    sync: bool,
) -> io::Result<PathBuf> {
    if sync || !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
    }
    for n in 0..10_000u32 {
        let candidate = dir.join(if n == 0 {
            name.to_string()
        } else {
            suffixed(name, n)
        });
        match link(src, &candidate) {
            Ok(()) => {
                std::fs::remove_file(src)?;
                if sync {
                    sync_dir(dir);
                    if let Some(parent) = src.parent()
                        && parent != dir
                    {
                        sync_dir(parent);
                    }
                }
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                return copy_no_overwrite(src, dir, name);
            }
            // vfat, some FUSE and network file systems refuse hard links: an
            // atomic rename that never replaces does the same job there.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK)
                ) =>
            {
                match rename_no_replace(src, &candidate) {
                    Ok(()) => {
                        if sync {
                            sync_dir(dir);
                        }
                        return Ok(candidate);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free name for {name} in {}",
        dir.display()
    )))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a path with a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn copy_no_overwrite(src: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::copy(src, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let placed = place_no_overwrite(&tmp, dir, name)?;
    std::fs::remove_file(src)?;
    Ok(placed)
}

/// The SHA-256 of a local file, read once.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Makes a rename or link durable: the directory entry itself is fsynced.
pub fn sync_dir(dir: &Path) {
    let _ = try_sync_dir(dir);
}

/// [`sync_dir`], saying whether the folder could be synced.
pub fn try_sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Starts writing `file`'s dirty pages to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later fsync finds
/// little left to do. A failure only leaves the work to that fsync.
pub fn start_writeback(file: &std::fs::File) {
    start_writeback_of(file, 0, 0);
}

/// [`start_writeback`] for `len` bytes from `from` (`len` 0: to the end).
fn start_writeback_of(file: &std::fs::File, from: u64, len: u64) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: `fd` is an open file borrowed for the call; the call only
    // starts writeback of its pages and reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            fd,
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A download's file: writes go straight to the page cache from the task
/// (a write there takes microseconds; a hop to tokio's blocking pool per
/// chunk, and the copy it needs, cost more than the write), and the
/// kernel's writeback is started every 8 MiB
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so the
/// fsync before the file is placed finds little left to write: disk writes
/// overlap the transfer instead of following it, and dirty pages stay few.
pub struct Writeback {
    file: std::fs::File,
    written: u64,
    started: u64,
}

/// How much is written between two writeback starts.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl Writeback {
    /// `offset`: where writing starts (the file is open for appending there).
    fn new(file: std::fs::File, offset: u64) -> Self {
        Writeback {
            file,
            written: offset,
            started: offset,
        }
    }

    fn into_inner(self) -> std::fs::File {
        self.file
    }

    /// Writes `buf` (some of it) and starts writeback when 8 MiB are due.
    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::Write::write(&mut self.file, buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_EVERY {
            start_writeback_of(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(n)
    }

    fn write_fully(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_some(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Where an upload's bytes come from, SHA-256 computed as they are read.
/// A small file is read and hashed from the task (a page-cache read takes
/// microseconds; a hop to tokio's blocking pool per read, as
/// `tokio::fs::File` makes, costs more). A big one is read and hashed
/// ahead by a thread of its own, chunk by chunk, while the task encrypts
/// and sends the chunks before: read, hash and send overlap.
pub enum Source {
    Direct {
        file: std::fs::File,
        hasher: Sha256,
    },
    Threaded {
        /// Read and hashed chunks (a few ahead: memory stays flat); an
        /// error ends the stream.
        rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
        /// Chunks the task is done with, for the thread to reuse.
        free: std::sync::mpsc::Sender<Vec<u8>>,
        /// The chunk being handed out, and how much of it is.
        current: Vec<u8>,
        at: usize,
        /// The SHA-256, once the thread has read to the end.
        digest: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    },
}

impl Source {
    /// Opens `path` (`size`: what the caller expects it to hold, to choose
    /// how it is read).
    pub fn open(path: &Path, size: u64) -> io::Result<Source> {
        let file = std::fs::File::open(path)?;
        let hasher = Sha256::new();
        if size < HASH_THREAD_FROM {
            return Ok(Source::Direct { file, hasher });
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(4);
        let (free, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
        let digest = std::sync::Arc::new(std::sync::Mutex::new(None));
        let done = digest.clone();
        std::thread::Builder::new()
            .name("ferry-source".into())
            .spawn(move || {
                let (mut file, mut hasher) = (file, hasher);
                loop {
                    let mut chunk = reuse.try_recv().unwrap_or_default();
                    chunk.resize(SINK_CHUNK, 0);
                    let n = match io::Read::read(&mut file, &mut chunk) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    };
                    if n == 0 {
                        if let Ok(mut d) = done.lock() {
                            *d = Some(hex::encode(hasher.finalize()));
                        }
                        return; // the channel closes: the end of the file
                    }
                    chunk.truncate(n);
                    hasher.update(&chunk);
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        return; // the upload stopped
                    }
                }
            })?;
        Ok(Source::Threaded {
            rx,
            free,
            current: Vec::new(),
            at: 0,
            digest,
        })
    }

    /// The SHA-256 of every byte read (call once the reader is at the end).
    pub fn finish(self) -> io::Result<String> {
        match self {
            Source::Direct { hasher, .. } => Ok(hex::encode(hasher.finalize())),
            Source::Threaded { digest, .. } => digest
                .lock()
                .ok()
                .and_then(|mut d| d.take())
                .ok_or_else(|| io::Error::other("the file was not read to its end")),
        }
    }
}

impl AsyncRead for Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Source::Direct { file, hasher } => {
                let n = io::Read::read(file, buf.initialize_unfilled())?;
                hasher.update(&buf.initialize_unfilled()[..n]);
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Source::Threaded {
                rx,
                free,
                current,
                at,
                ..
            } => {
                if *at == current.len() {
                    match std::task::ready!(rx.poll_recv(cx)) {
                        Some(Ok(chunk)) => {
                            let done = std::mem::replace(current, chunk);
                            let _ = free.send(done);
                            *at = 0;
                        }
                        Some(Err(e)) => return Poll::Ready(Err(e)),
                        None => return Poll::Ready(Ok(())), // the end
                    }
                }
                let n = buf.remaining().min(current.len() - *at);
                buf.put_slice(&current[*at..*at + n]);
                *at += n;
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// From this size on, a download hashes and writes on a thread of its own.
pub const HASH_THREAD_FROM: u64 = 8 << 20;

/// What a download hands its thread at a time (4 in flight at most).
const SINK_CHUNK: usize = 256 << 10;

/// Where a download's bytes go, SHA-256 computed as they pass. A small
/// file is written and hashed from the task ([`Writeback`]). A big one is
/// handed, chunk by chunk, to a thread of its own that hashes and writes
/// while the task receives and decrypts the next chunks: SHA-256 runs at
/// about 1.3 GB/s on one core (`openssl speed sha256` on this machine), so
/// on the receiving thread it would bound the download.
pub enum Sink {
    Direct {
        file: Writeback,
        hasher: Sha256,
    },
    Threaded {
        /// Filled chunks to the thread (a few in flight: memory stays flat).
        tx: tokio_util::sync::PollSender<Vec<u8>>,
        /// Chunks the thread is done with, for reuse.
        free: std::sync::mpsc::Receiver<Vec<u8>>,
        /// Bytes gathered for the next chunk (TLS hands over 16 KiB at a time).
        pending: Vec<u8>,
        worker: std::thread::JoinHandle<io::Result<(std::fs::File, Sha256)>>,
    },
}

impl Sink {
    /// `file` open where writing starts (`offset`, at the end of what a
    /// resumed download already holds at `path`: those bytes are hashed
    /// first, read back in chunks, never all in memory).
    pub fn new(file: std::fs::File, path: &Path, offset: u64, threaded: bool) -> io::Result<Sink> {
        let mut hasher = Sha256::new();
        let mut file = Writeback::new(file, offset);
        if !threaded {
            hash_head(&mut hasher, path, offset)?;
            return Ok(Sink::Direct { file, hasher });
        }
        let path = path.to_path_buf();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let (free_tx, free) = std::sync::mpsc::channel();
        // Hashing and writing each take a thread: writing into the page
        // cache costs about as much as SHA-256 here (512 MiB: 40% and 25%
        // of ferry's CPU), and one thread doing both bounded the download.
        let (to_writer, for_writer) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = std::thread::Builder::new()
            .name("ferry-sink-write".into())
            .spawn(move || {
                while let Ok(chunk) = for_writer.recv() {
                    file.write_fully(&chunk)?;
                    let _ = free_tx.send(chunk);
                }
                Ok(file.into_inner())
            })?;
        let worker = std::thread::Builder::new()
            .name("ferry-sink".into())
            .spawn(move || {
                let hashed = (|| {
                    hash_head(&mut hasher, &path, offset)?;
                    while let Some(chunk) = rx.blocking_recv() {
                        hasher.update(&chunk);
                        if to_writer.send(chunk).is_err() {
                            break; // the writer stopped: its join says why
                        }
                    }
                    Ok::<(), io::Error>(())
                })();
                rx.close();
                drop(to_writer);
                let written: io::Result<std::fs::File> = writer
                    .join()
                    .map_err(|_| io::Error::other("the download's writer thread panicked"))?;
                hashed?;
                Ok((written?, hasher))
            })?;
        Ok(Sink::Threaded {
            tx: tokio_util::sync::PollSender::new(tx),
            free,
            pending: Vec::with_capacity(SINK_CHUNK),
            worker,
        })
    }

    /// Every byte written (the thread, if any, has finished); the file
    /// and its SHA-256. Called on every path, so no write is still going
    /// on when the caller looks at the file.
    pub async fn finish(self) -> io::Result<(std::fs::File, String)> {
        match self {
            Sink::Direct { file, hasher } => {
                Ok((file.into_inner(), hex::encode(hasher.finalize())))
            }
            Sink::Threaded {
                tx,
                worker,
                pending,
                ..
            } => {
                if !pending.is_empty()
                    && let Some(tx) = tx.get_ref()
                {
                    // A closed channel means the thread stopped: its join says why.
                    let _ = tx.send(pending).await;
                }
                drop(tx);
                let joined = tokio::task::spawn_blocking(move || worker.join())
                    .await
                    .map_err(io::Error::other)?;
                let (file, hasher) = joined
                    .map_err(|_| io::Error::other("the download's writer thread panicked"))??;
                Ok((file, hex::encode(hasher.finalize())))
            }
        }
    }
}

/// Feeds the first `len` bytes of `path` to `hasher`, 1 MiB at a time.
fn hash_head(hasher: &mut Sha256, path: &Path, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut f = io::Read::take(std::fs::File::open(path)?, len);
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        seen += n as u64;
    }
    if seen != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} holds {seen} bytes, not the {len} to resume after",
                path.display()
            ),
        ));
    }
    Ok(())
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Sink::Direct { file, hasher } => {
                let n = file.write_some(buf)?;
                hasher.update(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            Sink::Threaded {
                tx, free, pending, ..
            } => {
                if pending.len() + buf.len() > SINK_CHUNK && !pending.is_empty() {
                    let stopped = || io::Error::other("the local file could not be written");
                    if std::task::ready!(tx.poll_reserve(cx)).is_err() {
                        // The thread stopped: `finish` says why.
                        return Poll::Ready(Err(stopped()));
                    }
                    let mut next = free.try_recv().unwrap_or_default();
                    next.clear();
                    let full = std::mem::replace(pending, next);
                    if tx.send_item(full).is_err() {
                        return Poll::Ready(Err(stopped()));
                    }
                }
                pending.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    /// An upload's source hands out every byte of the file once, in order,
    /// and its SHA-256 is the file's, whether it reads from the task (small)
    /// or from a thread ahead of it (big), and when the head was skipped
    /// through the same reader (a resumed upload hashes it, sends the rest).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_source_hands_out_and_hashes_every_byte_small_or_big() {
        use tokio::io::AsyncReadExt;
        let d = tempfile::tempdir().unwrap();
        for (name, len) in [("small", 10 * 1024 + 7), ("big", (9 << 20) + 12345)] {
            let path = d.path().join(name);
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let want = super::sha256_of(&path).unwrap();
            let mut src = super::Source::open(&path, len as u64).unwrap();
            assert_eq!(
                matches!(src, super::Source::Threaded { .. }),
                len as u64 >= super::HASH_THREAD_FROM
            );
            let mut got = Vec::new();
            src.read_to_end(&mut got).await.unwrap();
            assert!(got == data, "{name}: the bytes as they are");
            assert_eq!(src.finish().unwrap(), want, "{name}");
            let mut src = super::Source::open(&path, len as u64).unwrap();
            let mut head = vec![0u8; 1000];
            src.read_exact(&mut head).await.unwrap();
            let mut rest = Vec::new();
            src.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest.len(), len - 1000, "{name}");
            assert_eq!(src.finish().unwrap(), want, "{name}: resumed");
        }
    }

    /// A big source's SHA-256 is refused until the file was read to its
    /// end: an upload cut short never records a digest of part of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_upload_source_read_partly_has_no_digest() {
        use tokio::io::AsyncReadExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("big");
        std::fs::write(&path, vec![1u8; 9 << 20]).unwrap();
        let mut src = super::Source::open(&path, 9 << 20).unwrap();
        let mut head = vec![0u8; 4096];
        src.read_exact(&mut head).await.unwrap();
        assert!(src.finish().is_err());
    }

    /// Bytes pass through unchanged while writeback is started every 8 MiB.
    /// A big download's thread and a small one's task write the same bytes
    /// and compute the same SHA-256, a resumed one over the whole file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_writes_and_hashes_every_byte_on_its_thread_or_the_task() {
        use sha2::{Digest, Sha256};
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(9u32 << 20) + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        let want = hex::encode(Sha256::digest(&data));
        for (threaded, head) in [(true, 0usize), (false, 0), (true, 3 << 20), (false, 1000)] {
            let path = dir.path().join(format!("f-{threaded}-{head}"));
            std::fs::write(&path, &data[..head]).unwrap();
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            let mut sink = super::Sink::new(file, &path, head as u64, threaded).unwrap();
            // TLS hands over at most 16 KiB at a time.
            for chunk in data[head..].chunks(16 * 1024 + 7) {
                sink.write_all(chunk).await.unwrap();
            }
            let (file, sha) = sink.finish().await.unwrap();
            drop(file);
            assert_eq!(sha, want, "threaded {threaded}, resumed after {head}");
            assert_eq!(std::fs::read(&path).unwrap(), data, "threaded {threaded}");
        }
    }

    /// A write the thread cannot make fails the download (and `finish`
    /// says why) instead of leaving a short file that looks complete.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_whose_thread_cannot_write_fails_and_says_why() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"").unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        let mut sink = super::Sink::new(read_only, &path, 0, true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut refused = false;
        for _ in 0..64 {
            if sink.write_all(&chunk).await.is_err() {
                refused = true;
                break;
            }
        }
        let err = sink.finish().await.unwrap_err();
        assert!(refused, "the writes stop once the thread stopped");
        assert!(
            err.raw_os_error() == Some(libc::EBADF),
            "the thread's own error comes back: {err}"
        );
    }

    #[test]
    fn writeback_passes_every_byte_through_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut w = super::Writeback::new(file, 0);
        for chunk in data.chunks(64 * 1024) {
            w.write_fully(chunk).unwrap();
        }
        assert!(w.started >= 16 << 20, "writeback was started twice");
        w.into_inner().sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    use super::*;

    #[test]
    fn suffix_keeps_the_extension() {
        assert_eq!(suffixed("remit.835", 1), "remit.1.835");
        assert_eq!(suffixed("a.b.999", 2), "a.b.2.999");
        assert_eq!(suffixed("README", 3), "README.3");
        assert_eq!(suffixed(".hidden", 1), ".hidden.1");
    }

    #[test]
    fn placing_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let dst = d.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(dst.join("x.835"), b"old").unwrap();
        let src = d.path().join("in.part");
        std::fs::write(&src, b"new").unwrap();
        let placed = place_no_overwrite(&src, &dst, "x.835").unwrap();
        assert_eq!(placed, dst.join("x.1.835"));
        assert_eq!(std::fs::read(dst.join("x.835")).unwrap(), b"old");
        assert_eq!(std::fs::read(&placed).unwrap(), b"new");
        assert!(!src.exists());
    }

    #[test]
    fn placing_falls_back_to_a_rename_that_never_replaces_when_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let refuse = |_: &Path, _: &Path| Err(io::Error::from_raw_os_error(libc::EPERM));
        std::fs::write(d.path().join("r.835"), b"old").unwrap();
        let src = d.path().join(".r.835.part");
        std::fs::write(&src, b"new").unwrap();
        let placed = place_with(&src, d.path(), "r.835", refuse, true).unwrap();
        assert_eq!(placed, d.path().join("r.1.835"));
        assert_eq!(std::fs::read(d.path().join("r.835")).unwrap(), b"old");
        assert_eq!(std::fs::read(&placed).unwrap(), b"new");
        assert!(!src.exists());
    }
}
