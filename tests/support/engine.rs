//! Helpers for engine tests: a configuration folder for one server and its
//! jobs, loaded through the real loader, and an engine over its state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry::config::{self, Config};
use ferry::ledger::Ledger;
use ferry::transfer::{Engine, RunOptions, RunReport, Trigger};

/// `ferry.yaml` with one server `srv`, plus jobs, in a temporary folder.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// `server_yaml` is the body of the `srv:` entry (indented 4 spaces).
    pub fn new(server_yaml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("ferry.yaml"),
            format!("servers:\n  srv:\n{server_yaml}"),
        )
        .unwrap();
        Setup { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn job(&self, name: &str, yaml: &str) -> &Self {
        std::fs::write(self.path().join("jobs").join(format!("{name}.yaml")), yaml).unwrap();
        self
    }

    pub fn config(&self) -> Config {
        config::load(&self.path().join("ferry.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn engine(&self) -> Engine {
        let cfg = self.config();
        Engine::new(cfg.state_dir.clone(), Ledger::open(&cfg.state_dir).unwrap())
    }

    pub fn local(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes a local file with an mtime in the past, so it is ready at once.
    pub fn drop_file(&self, rel: &str, content: &[u8]) {
        let p = self.local(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(old).unwrap();
    }

    pub fn archived(&self, job: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.path().join("state/archive").join(job);
        if let Ok(days) = std::fs::read_dir(root) {
            for d in days.flatten() {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }
}

pub async fn run(engine: &Engine, cfg: &Config, job: &str) -> RunReport {
    engine
        .run_job(&cfg.jobs[job], Trigger::Once, RunOptions::default())
        .await
}

pub async fn run_forced(engine: &Engine, cfg: &Config, job: &str) -> RunReport {
    engine
        .run_job(
            &cfg.jobs[job],
            Trigger::Once,
            RunOptions {
                force: true,
                ..Default::default()
            },
        )
        .await
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// A session wrapper whose hooks run before the real call: a test can make
/// the "server" change between two steps (delete a listed file) or lie in a
/// listing (a hostile name).
pub struct Hooked {
    pub inner: Box<dyn ferry::transport::Remote>,
    pub before_download: Arc<dyn Fn(&str) + Send + Sync>,
    pub extra_entries: Vec<ferry::transport::RemoteEntry>,
}

#[async_trait::async_trait]
impl ferry::transport::Remote for Hooked {
    async fn list(
        &mut self,
        dir: &str,
    ) -> ferry::transport::Result<Vec<ferry::transport::RemoteEntry>> {
        let mut v = self.inner.list(dir).await?;
        v.extend(self.extra_entries.iter().cloned());
        Ok(v)
    }
    async fn upload(
        &mut self,
        path: &str,
        offset: u64,
        src: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    ) -> ferry::transport::Result<u64> {
        self.inner.upload(path, offset, src).await
    }
    async fn download(
        &mut self,
        path: &str,
        offset: u64,
        dst: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> ferry::transport::Result<u64> {
        (self.before_download)(path);
        self.inner.download(path, offset, dst).await
    }
    async fn rename(&mut self, from: &str, to: &str) -> ferry::transport::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn delete(&mut self, path: &str) -> ferry::transport::Result<()> {
        self.inner.delete(path).await
    }
    async fn mkdir(&mut self, path: &str) -> ferry::transport::Result<()> {
        self.inner.mkdir(path).await
    }
    async fn size(&mut self, path: &str) -> ferry::transport::Result<Option<u64>> {
        self.inner.size(path).await
    }
    async fn sha256(&mut self, path: &str) -> ferry::transport::Result<Option<[u8; 32]>> {
        self.inner.sha256(path).await
    }
    fn capabilities(&self) -> &ferry::transport::Capabilities {
        self.inner.capabilities()
    }
    fn quirks(&self) -> ferry::transport::Quirks {
        self.inner.quirks()
    }
    async fn mdtm(
        &mut self,
        path: &str,
    ) -> ferry::transport::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.mdtm(path).await
    }
    fn listing_unparsed(&self) -> u64 {
        self.inner.listing_unparsed()
    }
    fn set_quirks(&mut self, q: ferry::transport::Quirks) {
        self.inner.set_quirks(q)
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    async fn close(&mut self) {
        self.inner.close().await
    }
}

/// A connector that wraps every real session in [`Hooked`].
pub fn hooked(
    before_download: Arc<dyn Fn(&str) + Send + Sync>,
    extra_entries: Vec<ferry::transport::RemoteEntry>,
) -> ferry::transfer::ConnectFn {
    Arc::new(move |server| {
        let before_download = before_download.clone();
        let extra_entries = extra_entries.clone();
        Box::pin(async move {
            let inner = ferry::transport::connect(server).await?;
            Ok(Box::new(Hooked {
                inner,
                before_download,
                extra_entries,
            }) as Box<dyn ferry::transport::Remote>)
        })
    })
}

/// The `srv:` body for the in-process FTPS server.
pub fn inprocess_yaml(srv: &super::ftps_server::TestServer) -> String {
    format!(
        "    host: 127.0.0.1\n    port: {}\n    user: {}\n    password: {}\n    ca_file: {}\n    timeout: 10s\n",
        srv.port(),
        srv.user,
        srv.password,
        srv.ca_file().display()
    )
}

/// Starts `ferry run` on this setup's configuration, its log in `log`.
pub fn spawn_agent(s: &Setup, log: &str) -> std::process::Child {
    let log = std::fs::File::create(s.path().join(log)).unwrap();
    std::process::Command::new(super::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Sends `sig` to a child process.
pub fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
