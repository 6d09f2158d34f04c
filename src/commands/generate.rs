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
        ferry_page(cmd, &mut buf).context("rendering the man page")?;
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
    let path = dir.join("ferry.1");
    let mut buf = Vec::new();
    ferry_page(cmd, &mut buf).context("rendering ferry.1")?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    let mut s = String::new();
    for p in &written {
        s.push_str(&format!("wrote {}\n", super::shown(p)));
    }
    write_all(out, &s)?;
    Ok(Outcome::Success)
}

/// ferry.1: clap's sections, then what operators and scripts rely on
/// (exit status, environment, files) in the sections man pages use for them.
fn ferry_page(cmd: clap::Command, w: &mut Vec<u8>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd).title("FERRY");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.extend_from_slice(FERRY_PAGE_SECTIONS.as_bytes());
    man.render_version_section(w)?;
    // Each section rendered alone repeats roff's two-line quote preamble: keep the first.
    let text = String::from_utf8_lossy(w).into_owned();
    let mut seen = std::collections::HashSet::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(".ds Aq") || seen.insert(*l))
        .collect();
    *w = (kept.join("\n") + "\n").into_bytes();
    Ok(())
}

/// Roff: `\-` is a hyphen-minus, `.TP` a tagged paragraph.
const FERRY_PAGE_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
All went well.
.TP
\fB1\fR
At least one file failed; a job could not run (connect, login, listing); \fBping\fR failed; \fBrun\fR could not start.
.TP
\fB2\fR
Bad usage or invalid configuration; nothing was transferred.
.TP
\fB3\fR
The state folder is in use by another ferry (the message names its process id).
.SH ENVIRONMENT
.TP
\fBFERRY_CONFIG\fR
The settings file when \fB\-\-config\fR is not given.
.TP
\fBRUST_LOG\fR
A log filter that overrides \fBlog.level\fR (\fBdebug\fR, \fBferry=trace\fR).
.TP
\fBNO_COLOR\fR
No colours in the text log, even on a terminal.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for \fBType=notify\fR: \fBferry run\fR sends READY=1, WATCHDOG=1 and STOPPING=1.
.SH FILES
.TP
\fIferry.yaml\fR
Agent settings: servers, mail, state, logs, metrics (\fB\-\-config\fR, else \fB$FERRY_CONFIG\fR, else \fI./ferry.yaml\fR).
.TP
\fIjobs/NAME.yaml\fR
One job per file, beside \fIferry.yaml\fR unless \fBjobs_dir\fR says otherwise.
.TP
\fIstate/ferry.db\fR
The SQLite ledger of runs, files and their every step (\fBstate_dir\fR).
.SH "SEE ALSO"
\fBferry\-check\fR(1), \fBferry\-run\fR(1), \fBferry\-once\fR(1), \fBferry\-ping\fR(1), \fBferry\-status\fR(1), \fBferry\-history\fR(1), \fBferry\-confirm\fR(1), \fBferry\-resend\fR(1).
The user contract (every key, command, log field, metric and guarantee) is \fIdocs/contract.md\fR in the source; operating ferry is \fIdocs/operations.md\fR.
"#;
