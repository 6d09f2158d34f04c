//! One ferry per state folder: an exclusive `flock` on `state_dir/ferry.lock`,
//! which also names the process that holds it. The kernel drops the lock when
//! the process dies, even on `kill -9`, so a stale lock never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct StateLock {
    /// Keeps the descriptor, and with it the lock, open.
    _file: File,
    pub path: PathBuf,
}

/// Another process holds the state folder. `main` turns this into exit 3.
#[derive(Debug, thiserror::Error)]
#[error("the state folder {} is in use by another ferry ({holder}); stop it first, or point this one at another state_dir", dir.display())]
pub struct StateInUse {
    pub dir: PathBuf,
    /// What the holder wrote into the lock file: `pid 1234 (ferry run)`.
    pub holder: String,
}

impl StateLock {
    /// Takes the lock without waiting; `what` says which command holds it.
    pub fn acquire(state_dir: &Path, what: &str) -> anyhow::Result<StateLock> {
        super::ensure_state_dir(state_dir)?;
        let path = state_dir.join("ferry.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StateInUse {
                    dir: state_dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "process unknown".to_string()
                    } else {
                        holder.to_string()
                    },
                }
                .into());
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "pid {} (ferry {what})", std::process::id())?;
        file.sync_all()?;
        Ok(StateLock { _file: file, path })
    }
}
