//! `ferry`: parse the command line, run one command, choose the exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use ferry::cli::Cli;
use ferry::commands::{self, Outcome, UsageError};
use ferry::config::ConfigErrors;
use ferry::ledger::StateInUse;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = commands::dispatch(cli, &mut out);
    let _ = out.flush();
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::FilesFailed | Outcome::AuditBroken) => ExitCode::from(1),
        Err(err) => {
            if is_broken_pipe(&err) {
                // `ferry history | head`: the reader left; that is not a failure.
                return ExitCode::SUCCESS;
            }
            let code = exit_code(&err);
            if let Some(cfg) = err.downcast_ref::<ConfigErrors>() {
                eprintln!("ferry: {cfg}");
            } else {
                eprintln!("ferry: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

/// 2: bad usage or configuration; 3: state folder held by another ferry; 1: anything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigErrors>().is_some() || err.downcast_ref::<UsageError>().is_some() {
        2
    } else if err.downcast_ref::<StateInUse>().is_some() {
        3
    } else {
        1
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
