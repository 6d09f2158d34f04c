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
pub use ftps::{FtpsSession, SessionReport};
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
    /// The size of `path`, or `None` when there is no such file.
    async fn size(&mut self, path: &str) -> Result<Option<u64>>;
    /// The server's SHA-256 of `path`, or `None` when it offers no SHA-256 command.
    async fn sha256(&mut self, path: &str) -> Result<Option<[u8; 32]>>;
    fn capabilities(&self) -> &Capabilities;
    /// False once an error left the connection unusable; the caller opens a new session.
    fn is_open(&self) -> bool;
    /// When the server's certificate expires, if the session has one.
    fn certificate_expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }
    /// Logs out; errors on the way out are not worth failing a run for.
    async fn close(&mut self);
}

/// Connects and logs in to `server` over the protocol its settings name.
pub async fn connect(server: Arc<Server>) -> Result<Box<dyn Remote>> {
    Ok(Box::new(FtpsSession::connect(server).await?))
}
