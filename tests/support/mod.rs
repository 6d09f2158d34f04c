//! Shared helpers for integration tests: a configuration folder on disk and
//! a way to run the real `ferry` binary against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BASE_AGENT: &str = "\
servers:
  ch:
    host: 127.0.0.1
    user: acme
    password: s3cret-Pa55word
";

pub const BASE_JOB: &str = "\
direction: push
server: ch
local_dir: ../out
remote_dir: /inbound
";

/// A temporary folder holding `ferry.yaml`, `jobs/` and whatever a test adds.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

/// A temporary folder only its owner may enter (0700), as ferry requires
/// of a state folder.
pub fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

impl Fixture {
    /// `ferry.yaml` and `jobs/a.yaml` from the valid base, with `files`
    /// written over them (paths relative to the folder).
    pub fn new(files: &[(&str, &[u8])]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture { dir };
        f.write("ferry.yaml", BASE_AGENT.as_bytes());
        f.write("jobs/a.yaml", BASE_JOB.as_bytes());
        for (path, content) in files {
            f.write(path, content);
        }
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).unwrap();
    }

    /// Runs `ferry --config ferry.yaml ARGS...` with the folder as working directory.
    pub fn ferry(&self, args: &[&str]) -> Output {
        self.ferry_cmd(args).output().expect("run ferry")
    }

    pub fn ferry_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ferry_bin());
        cmd.current_dir(self.dir.path())
            .arg("--config")
            .arg("ferry.yaml")
            .args(args)
            .env_remove("FERRY_CONFIG")
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

pub fn ferry_bin() -> &'static str {
    // Examples (the demo) include this module too, without the binary's path.
    option_env!("CARGO_BIN_EXE_ferry").unwrap_or("ferry")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub mod certs;
pub mod cut_proxy;
pub mod engine;
pub mod faults;
pub mod ftps_server;
pub mod real_servers;
pub mod x12;

/// The temp file of a delivery of `name` in `dir` (`name.<tag>.part`): ferry
/// gives every delivery its own temp name, so tests find it by pattern.
pub fn temp_of(dir: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}.");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        (n.starts_with(&prefix) && n.ends_with(".part")).then(|| e.path())
    })
}

/// Bytes in the temp file of a delivery of `name` in `dir`, 0 when there is none.
pub fn temp_len(dir: &Path, name: &str) -> u64 {
    temp_of(dir, name)
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}
