//! Configuration errors: each names the file, line and column, what was found
//! and what was expected. A load collects all of them before giving up.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is about the file as a whole (it cannot be read).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: u64, column: u64, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error at a value's position. Values without a known position
    /// (saphyr reports line 0 for them) are placed at the start of the file.
    pub fn at(file: &Path, loc: &Location, message: impl Into<String>) -> Self {
        let (line, column) = if loc.line() == 0 {
            (1, 1)
        } else {
            (loc.line(), loc.column())
        };
        ConfigError::new(file, line, column, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every problem found while loading a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, e) in self.0.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  {e}")?;
            } else {
                write!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns a saphyr error into our form: position taken out of the text, Rust
/// type names replaced by what an operator would write.
pub fn from_yaml(file: &Path, err: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = err
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let text = err.without_snippet().to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut message = plain_words(&text);
    if message.contains("flow") && source_line(file, line).is_some_and(|l| l.contains("${")) {
        message
            .push_str("; inside { } quote values that use ${...}: password: \"${SMTP_PASSWORD}\"");
    }
    ConfigError::new(file, line, column, message)
}

fn source_line(file: &Path, line: u64) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .nth(line.checked_sub(1)? as usize)
        .map(str::to_string)
}

fn plain_words(msg: &str) -> String {
    let msg = msg.replace('`', "'");
    let replacements = [
        ("invalid u16", "expected a whole number from 1 to 65535"),
        ("invalid u32", "expected a non-negative whole number"),
        (
            "invalid boolean (strict mode expects true/false)",
            "expected true or false (yes/no/on/off are not booleans here)",
        ),
        ("expected string scalar", "expected a single text value"),
        (
            "expected sequence start",
            "expected a list, for example [\"*.837\"]",
        ),
        ("expected mapping start", "expected a mapping of keys"),
    ];
    for (from, to) in replacements {
        if let Some(rest) = msg.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    msg
}
