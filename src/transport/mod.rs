//! Reaching trading partners. Jobs speak only the [`Remote`] trait; FTP
//! commands live in `ftps.rs` and nowhere else, so SFTP can be a second
//! implementation later.

mod error;
mod ftps;
pub mod listing;
pub mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

pub use error::{ErrorKind, TlsFailure, TransportError};
pub use ftps::{FtpsSession, SessionReport, parse_hash_reply};
pub use listing::RemoteEntry;

use crate::config::Server;

pub type Result<T> = std::result::Result<T, TransportError>;

/// Which server-side SHA-256 command a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashCommand {
    /// `HASH` after `OPTS HASH SHA-256` (draft-bryan-ftpext-hash).
    Hash,
    /// `XSHA256`, the older non-standard command.
    XSha256,
}

/// What the server offers, from FEAT.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub hash: Option<HashCommand>,
    /// `REST STREAM`: transfers can resume from an offset.
    pub resume: bool,
    pub mlsd: bool,
    pub epsv: bool,
    /// The FEAT lines as the server sent them (label and parameters).
    pub feat: Vec<String>,
}

/// What a server was found to refuse, remembered in the ledger once met so
/// later sessions do not ask again (and shown by `ferry ping`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks {
    /// `REST` before `STOR` is refused (ProFTPD's `AllowStoreRestart off`):
    /// a partial upload is deleted and sent whole.
    pub rest_refused: bool,
    /// `SIZE` is refused (`500`/`502`): sizes come from a listing.
    pub size_refused: bool,
    /// HASH/XSHA256 is refused for files of at least this many bytes
    /// (ProFTPD `DigestMaxSize`, `DigestEngine off`): verified by size.
    pub hash_refused_from: Option<u64>,
    /// The server refused more than this many sessions at once.
    pub max_sessions: Option<u32>,
}

impl Quirks {
    /// From the ledger's `(quirk, value, detail)` rows; unknown quirks are ignored.
    pub fn from_rows(rows: &[(String, u64, Option<String>)]) -> Quirks {
        let mut q = Quirks::default();
        for (quirk, value, _) in rows {
            match quirk.as_str() {
                "rest_refused" => q.rest_refused = *value != 0,
                "size_refused" => q.size_refused = *value != 0,
                "hash_refused_from" => q.hash_refused_from = Some(*value),
                "max_sessions" => q.max_sessions = Some((*value).max(1) as u32),
                _ => {}
            }
        }
        q
    }

    /// One line per quirk, for `ferry ping` and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.rest_refused {
            v.push("refuses REST on uploads: a cut upload is sent again whole".to_string());
        }
        if self.size_refused {
            v.push("refuses SIZE: sizes are read from listings".to_string());
        }
        if let Some(n) = self.hash_refused_from {
            v.push(format!(
                "refuses HASH for files of {n} bytes or more: those are verified by size"
            ));
        }
        if let Some(n) = self.max_sessions {
            v.push(format!("accepts at most {n} session(s) at once"));
        }
        v
    }
}

/// A logged-in session with one server: everything a job needs.
#[async_trait]
pub trait Remote: Send {
    /// Plain files and folders in `dir`; unsafe names are never returned.
    async fn list(&mut self, dir: &str) -> Result<Vec<RemoteEntry>>;
    /// Streams `src` to `path`, starting at `offset` (REST) when non-zero.
    /// Returns the bytes sent once the server has confirmed the whole upload.
    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<u64>;
    /// Streams `path` from `offset` into `dst`; returns the bytes received
    /// once the server has confirmed the whole download.
    async fn download(
        &mut self,
        path: &str,
        offset: u64,
        dst: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64>;
    async fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    async fn delete(&mut self, path: &str) -> Result<()>;
    async fn mkdir(&mut self, path: &str) -> Result<()>;
    /// The size of `path`, or `None` when a listing of its folder does not
    /// show it (never decided from the wording of a reply).
    async fn size(&mut self, path: &str) -> Result<Option<u64>>;
    /// The listing entry of `path`, from a listing of its folder; `None`
    /// when the folder's listing does not show it.
    async fn stat(&mut self, path: &str) -> Result<Option<RemoteEntry>> {
        let (dir, name) = split_path(path);
        Ok(self.list(dir).await?.into_iter().find(|e| e.name == name))
    }
    /// The modification time of `path` to the second (`MDTM`), or `None`
    /// when the server gives none. LIST shows minutes at best.
    async fn mdtm(&mut self, _path: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(None)
    }
    /// The server's SHA-256 of `path`, or `None` when it offers no SHA-256 command.
    async fn sha256(&mut self, path: &str) -> Result<Option<[u8; 32]>>;
    fn capabilities(&self) -> &Capabilities;
    /// Lines of the last listing that could not be read (logged as warnings).
    fn listing_unparsed(&self) -> u64 {
        0
    }
    /// What this session knows the server refuses.
    fn quirks(&self) -> Quirks {
        Quirks::default()
    }
    /// Tells the session what earlier sessions learned about the server.
    fn set_quirks(&mut self, _quirks: Quirks) {}
    /// False once an error left the connection unusable; the caller opens a new session.
    fn is_open(&self) -> bool;
    /// When the server's certificate expires, if the session has one.
    fn certificate_expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
    /// The SHA-256 fingerprint (`AB:CD:...`) of the server's certificate, if
    /// the session has one.
    fn certificate_fingerprint(&self) -> Option<String> {
        None
    }
    /// Logs out; errors on the way out are not worth failing a run for.
    async fn close(&mut self);
}

/// `("/in", "a.837")` from `/in/a.837`; `("/", "a")` from `/a`; `(".", "a")` from `a`.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    }
}

/// Connects and logs in to `server` over the protocol its settings name.
pub async fn connect(server: Arc<Server>) -> Result<Box<dyn Remote>> {
    Ok(Box::new(FtpsSession::connect(server).await?))
}
