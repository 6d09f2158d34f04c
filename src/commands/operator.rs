//! `ferry confirm` and `ferry resend`: an operator's decision about a held
//! file, recorded in the ledger with the OS user who made it. Neither takes
//! the state lock: a running agent leaves held files alone, and the ledger's
//! guarded transition makes the decision exactly once.

use std::io::Write;

use super::{Outcome, UsageError, write_all};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::transfer::operator::{self, Decision};

pub fn confirm(
    cfg: &Config,
    job: &str,
    file: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    decide(cfg, job, file, Decision::Confirm, out)
}

pub fn resend(cfg: &Config, job: &str, file: &str, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    decide(cfg, job, file, Decision::Resend, out)
}

fn decide(
    cfg: &Config,
    job: &str,
    file: &str,
    decision: Decision,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let Some(mut ledger) = Ledger::open_existing(&cfg.state_dir)? else {
        return Err(UsageError(format!(
            "no ledger in {} yet: job '{job}' has no held file '{file}'",
            super::shown(&cfg.state_dir)
        ))
        .into());
    };
    let job = &cfg.jobs[job];
    let user = operator::os_user();
    ledger.set_servers(crate::audit::partners(cfg));
    crate::audit::config_loaded(&ledger, cfg, &user)?;
    match operator::decide(&cfg.state_dir, &ledger, job, file, decision, &user)? {
        Ok(text) => {
            write_all(out, &format!("{text}\n"))?;
            Ok(Outcome::Success)
        }
        Err(why) => Err(UsageError(why).into()),
    }
}
