//! An operator's decisions about held files: `confirm` records one as
//! delivered (and does its after-push action), `resend` sends it again. Both
//! are steps of the file's journey, recorded with who decided.

use std::path::Path;

use chrono::Utc;

use super::local;
use crate::config::{AfterPush, Direction, Flow, Job};
use crate::ledger::{FileState, Ledger, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The partner has it: record it delivered.
    Confirm,
    /// The partner does not have it: the next run sends it again.
    Resend,
}

/// The name of the OS user running this process, for the ledger.
pub fn os_user() -> String {
    // SAFETY: getuid has no preconditions; getpwuid_r writes only into the
    // buffers we pass, and the name is copied out before they go.
    unsafe {
        let uid = libc::getuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
            return format!("{name} (uid {uid})");
        }
        format!("uid {uid}")
    }
}

/// Applies `decision` to the newest held record of `file` in `job`. The
/// inner `Err` is the operator's mistake (no such held file), in words.
pub fn decide(
    state_dir: &Path,
    ledger: &Ledger,
    job: &Job,
    file: &str,
    decision: Decision,
    user: &str,
) -> anyhow::Result<Result<String, String>> {
    let Some(row) = ledger.held_file(&job.name, file)? else {
        if decision == Decision::Resend
            && let Some((id, _)) = ledger.duplicate_block(&job.name, file)?
        {
            // A file the gate held back for repeating control numbers.
            ledger.override_duplicate(id, &job.name, user)?;
            return Ok(Ok(format!(
                "{file}: will be sent by the next run of {} although it repeats control numbers already sent (recorded by {user})",
                job.name
            )));
        }
        let mut held = ledger.held_names(&job.name)?;
        if decision == Decision::Resend {
            held.extend(ledger.duplicate_names(&job.name)?);
        }
        return Ok(Err(if held.is_empty() {
            format!(
                "job '{}' has no held file '{file}' (it has no held files)",
                job.name
            )
        } else {
            format!(
                "job '{}' has no held file '{file}', expected one of {}",
                job.name,
                held.join(", ")
            )
        }));
    };
    let by = format!("by {user}");
    match decision {
        Decision::Resend => {
            ledger.step(
                row.id,
                &Step {
                    state: FileState::Seen,
                    intent: Some(None),
                    temp_path: Some(None),
                    remote_before: Some(None),
                    resend: Some(true),
                    event: Some("resend"),
                    note: Some(&by),
                    actor: Some(user),
                    ..Step::default()
                },
            )?;
            Ok(Ok(format!(
                "{file}: will be sent again by the next run of {} (recorded {by})",
                job.name
            )))
        }
        Decision::Confirm => {
            ledger.step(
                row.id,
                &Step {
                    state: FileState::Verified,
                    event: Some("confirmed"),
                    note: Some(&by),
                    actor: Some(user),
                    ..Step::default()
                },
            )?;
            let mut text = format!("{file}: recorded as delivered ({by})");
            if job.direction == Direction::Push {
                text.push_str(&after_push(state_dir, ledger, job, &row)?);
            }
            ledger.set_file_state(row.id, FileState::Done, None, None)?;
            Ok(Ok(text))
        }
    }
}

/// The after-push action a confirmed file still needs, done now.
fn after_push(
    state_dir: &Path,
    ledger: &Ledger,
    job: &Job,
    row: &crate::ledger::FileRow,
) -> anyhow::Result<String> {
    let after = match &job.flow {
        Flow::Push { after, .. } => *after,
        Flow::Pull { .. } => AfterPush::Keep,
    };
    let path = row
        .local_path
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| job.local_dir.join(&row.name));
    let same = local::LocalFile::stat(&path)
        .is_ok_and(|f| f.size == row.size && Some(f.mtime_key()) == row.mtime);
    if !same {
        return Ok("; the local file changed since, so it was left in place".into());
    }
    Ok(match after {
        AfterPush::Keep => String::new(),
        AfterPush::Delete => {
            std::fs::remove_file(&path)?;
            ledger.audit_file(row.id, "local_deleted", Default::default())?;
            "; deleted from the outbound folder".into()
        }
        AfterPush::Archive => {
            let day = Utc::now()
                .with_timezone(&job.timezone)
                .format("%Y-%m-%d")
                .to_string();
            let dir = state_dir.join("archive").join(&job.name).join(day);
            let archived = local::place_no_overwrite(&path, &dir, &row.name)?;
            ledger.set_local_path(row.id, &archived)?;
            ledger.audit_file(row.id, "archived", Default::default())?;
            format!("; archived as {}", archived.display())
        }
    })
}
