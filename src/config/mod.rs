//! Configuration: `ferry.yaml` and `jobs/*.yaml`, loaded once into typed
//! structs. YAML is touched here and nowhere else.

mod error;
pub mod files;
mod load;
mod raw;
mod types;

pub use error::{ConfigError, ConfigErrors};
pub use load::{MAX_FILE_BYTES, expand_env, load, normalize, parse_fingerprint, valid_job_name};
pub use types::*;

use std::path::PathBuf;

/// Where the configuration lives: `--config`, else `$FERRY_CONFIG`, else `./ferry.yaml`.
/// clap already folds the environment variable into the flag.
pub fn locate(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from("ferry.yaml"))
}
