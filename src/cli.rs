//! The command line, as SPEC.md gives it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The shells `ferry completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The end of `ferry --help` and of the man page: what scripts and operators rely on.
const AFTER_HELP: &str = "\
Exit status: 0 all went well; 1 at least one file failed, a job could not run, or ping failed; \
2 bad usage or invalid configuration (nothing was transferred); 3 the state folder is in use \
by another ferry.

Files: ferry.yaml (--config, else $FERRY_CONFIG, else ./ferry.yaml); jobs/NAME.yaml beside it; \
state/ferry.db, the ledger.

The user contract (every key, command and guarantee) is docs/contract.md in the source; \
operating ferry is docs/operations.md.";

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Scheduled, verified FTPS transfers for EDI and claims exchange",
    after_long_help = AFTER_HELP
)]
pub struct Cli {
    /// The agent settings file; jobs are read from jobs/ beside it.
    #[arg(long, global = true, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate ferry.yaml and every job; print each job with its next 3 run times.
    Check,
    /// Run the agent: schedules and watches, until SIGINT or SIGTERM.
    Run,
    /// Run the named jobs now, once each, and exit.
    Once {
        /// Job names (file stems in jobs/).
        #[arg(required = true, value_name = "JOB")]
        jobs: Vec<String>,
        /// Send files even if the same name and content was delivered before.
        #[arg(long)]
        force: bool,
    },
    /// Record a held file as delivered: the partner confirmed they have it (audited).
    Confirm {
        #[arg(value_name = "JOB")]
        job: String,
        /// The file's name, as `ferry history` shows it.
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Send a held file again: the partner does not have it (audited).
    Resend {
        #[arg(value_name = "JOB")]
        job: String,
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Connect, negotiate TLS and log in; print what the server presents.
    Ping {
        /// A server name from ferry.yaml.
        #[arg(value_name = "SERVER")]
        server: String,
    },
    /// Per job: last run, its result, next run, files waiting or failing.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Transfers, newest first.
    History {
        /// Only this job's transfers.
        #[arg(long, value_name = "JOB")]
        job: Option<String>,
        /// At most this many transfers (0: all).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: usize,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only transfers since this long ago (2h, 1d) or this date (2026-11-24, RFC 3339).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only failed transfers.
        #[arg(long)]
        failed: bool,
    },
    /// Per interchange sent: TA1 / 999 / 277CA status, when each arrived, overdue flags.
    Acks {
        /// Only this push job's interchanges.
        #[arg(long, value_name = "JOB")]
        job: Option<String>,
        /// Only interchanges still waiting for an acknowledgement.
        #[arg(long)]
        pending: bool,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Write the man pages: ferry.1 and one per command (ferry-run.1, ...).
    Man {
        /// The folder to write them to; without it, ferry.1 goes to stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The tamper-evident audit trail: check it, or export it for an auditor.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain; exit 0 when intact, 1 naming the first broken row.
    Verify {
        /// A chain head kept elsewhere (the digest email, the log): it must still be in the chain.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the trail's rows, oldest first, ending with the chain head.
    Export {
        /// Rows at or after this date (2026-01-01) or instant (RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Rows before this date or instant.
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Only this job's rows.
        #[arg(long, value_name = "JOB")]
        job: Option<String>,
        /// json (one object) or csv.
        #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = ["json", "csv"])]
        format: String,
    },
}
