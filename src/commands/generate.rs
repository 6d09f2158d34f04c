//! `ferry completions SHELL` and `ferry man`: shell completions and man
//! pages generated from the clap definitions, so they never drift from the
//! commands they describe.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::{Outcome, write_all};
use crate::cli::{Cli, Shell};

/// The completion script for `shell`, to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ferry", &mut buf);
    out.write_all(&buf)
        .context("writing the completion script")?;
    Ok(Outcome::Success)
}

/// `ferry.1` to `out`, or `ferry.1` and one page per command into `dir`.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .title("FERRY")
            .render(&mut buf)
            .context("rendering the man page")?;
        out.write_all(&buf).context("writing the man page")?;
        return Ok(Outcome::Success);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let mut page = |name: String, cmd: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.to_uppercase())
            .render(&mut buf)
            .with_context(|| format!("rendering {name}.1"))?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        // Each page names its command as the operator types it: ferry-run(1) is `ferry run`.
        let name = format!("ferry-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("ferry {}", sub.get_name()))
            .version(env!("CARGO_PKG_VERSION"));
        page(name, sub)?;
    }
    page("ferry".to_string(), cmd)?;
    let mut s = String::new();
    for p in &written {
        s.push_str(&format!("wrote {}\n", super::shown(p)));
    }
    write_all(out, &s)?;
    Ok(Outcome::Success)
}
