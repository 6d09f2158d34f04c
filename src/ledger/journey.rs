//! A file's journey: its states, the transitions allowed between them, and
//! the intent recorded before each remote side effect. Push and pull share
//! it; [`super::Ledger::set_file_state`] refuses any transition not listed
//! here, so recovery can only ever start from a state this table allows.
//!
//! ```text
//! push  seen ─> sending ─> sent ─> renaming ─> verified ─> done
//!                 (intent: upload T)  (intent: rename T -> F)
//! pull  seen ─> sending ─> sent ─> verified ─> renamed (placed) ─> done
//! any unfinished state ─> failed (retried by a later run) | held (an operator decides)
//! held ─> verified (`ferry confirm`) | seen (`ferry resend`)
//! ```

use std::fmt;
use std::str::FromStr;

use anyhow::bail;
use serde::Serialize;

/// Where a file is in its journey. Each step is written before the next action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileState {
    Seen,
    /// Intent recorded: an upload (push) or download (pull) may have started.
    Sending,
    /// The whole file is on the server (under its temp name for temp_rename),
    /// or (pull) in the local `.part`.
    Sent,
    /// Intent recorded: the server may have renamed the temp file to its final name.
    Renaming,
    /// Pull: placed under its final local name.
    Renamed,
    Verified,
    /// After-action done: the end of the journey.
    Done,
    Failed,
    /// ferry cannot know whether the partner got the file; an operator decides.
    Held,
}

/// The transitions a file may take, as `(from, to)`. A repeat of a state
/// (`sending -> sending`) is a new attempt at the same step.
const TRANSITIONS: &[(FileState, &[FileState])] = {
    use FileState::*;
    &[
        (Seen, &[Sending, Failed, Held]),
        // Recovery may find the whole upload on the server though its reply was
        // lost: verified (direct) or on to the rename (temp_rename).
        (Sending, &[Sending, Sent, Renaming, Verified, Failed, Held]),
        // Push: a verified temp file is renamed; a temp file that vanished is sent again.
        // Pull: the local copy is verified.
        (Sent, &[Sending, Renaming, Verified, Failed, Held]),
        (Renaming, &[Renaming, Sending, Verified, Failed, Held]),
        (Renamed, &[Done, Failed]),
        // Pull: verified, then placed; push: after-action, then done.
        (Verified, &[Renamed, Done, Sending, Failed]),
        (Done, &[]),
        // A later run retries a failed file from whatever its intent says.
        (Failed, &[Sending, Sent, Renaming, Verified, Failed, Held]),
        (Held, &[Verified, Seen]),
    ]
};

impl FileState {
    pub const ALL: [FileState; 9] = [
        FileState::Seen,
        FileState::Sending,
        FileState::Sent,
        FileState::Renaming,
        FileState::Renamed,
        FileState::Verified,
        FileState::Done,
        FileState::Failed,
        FileState::Held,
    ];

    /// Whether reaching this state must be on disk before ferry acts on
    /// it. `sending` and `renaming` are intents (the upload or rename comes
    /// next), `verified` and `renamed` come before an irreversible local or
    /// remote action (archive, delete), `failed` and `held` are what a
    /// person is told. `seen`, `sent` and `done` precede no side effect:
    /// they commit without an fsync of their own, and the next durable step
    /// (an fsync of the write-ahead log) carries them to disk. A process
    /// crash loses none of them (the log is in the OS page cache); a power
    /// loss can lose only such a step, and recovery then decides from the
    /// intent before it, as it does after any crash.
    ///
    /// A pull's `sending` announces only a `.part` file of ferry's own
    /// (redone after a crash); its `verified` is the intent to place the
    /// file and `renamed` (placed) comes before the remote delete or move,
    /// so both are fsynced.
    pub fn durable(self, push: bool) -> bool {
        match self {
            FileState::Seen | FileState::Sent | FileState::Done => false,
            FileState::Sending => push,
            FileState::Renaming
            | FileState::Renamed
            | FileState::Verified
            | FileState::Failed
            | FileState::Held => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Seen => "seen",
            FileState::Sending => "sending",
            FileState::Sent => "sent",
            FileState::Renaming => "renaming",
            FileState::Renamed => "renamed",
            FileState::Verified => "verified",
            FileState::Done => "done",
            FileState::Failed => "failed",
            FileState::Held => "held",
        }
    }

    /// The states this one may move to.
    pub fn next(self) -> &'static [FileState] {
        TRANSITIONS
            .iter()
            .find(|(from, _)| *from == self)
            .map_or(&[], |(_, to)| to)
    }

    pub fn may_become(self, to: FileState) -> bool {
        self.next().contains(&to)
    }

    /// The states from which `to` may be reached (for guarded SQL updates).
    pub fn predecessors(to: FileState) -> Vec<FileState> {
        FileState::ALL
            .into_iter()
            .filter(|s| s.may_become(to))
            .collect()
    }

    /// The operator's view of the state, as `history` prints it. A pushed
    /// file is delivered once verified (its after-action may still be due);
    /// a pulled one only at the end of its journey (placed, and the remote
    /// file deleted or moved as `after_pull` says).
    pub fn status(self, push: bool) -> Status {
        match self {
            FileState::Done => Status::Delivered,
            FileState::Verified if push => Status::Delivered,
            FileState::Failed => Status::Failed,
            FileState::Held => Status::Held,
            _ => Status::Pending,
        }
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileState {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match FileState::ALL.into_iter().find(|st| st.as_str() == s) {
            Some(st) => Ok(st),
            None => bail!("unknown file state '{s}' in the ledger"),
        }
    }
}

/// The remote side effect a file's record says may have happened: written
/// to the ledger before the command is sent, kept through failures, so the
/// next run knows exactly which of its own actions to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// STOR to the recorded `temp_path` (temp_rename) or final path (direct).
    Upload,
    /// RNFR `temp_path` RNTO the final path.
    Rename,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Upload => "upload",
            Intent::Rename => "rename",
        }
    }
}

impl FromStr for Intent {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "upload" => Intent::Upload,
            "rename" => Intent::Rename,
            _ => bail!("unknown intent '{s}' in the ledger"),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Delivered,
    Failed,
    Pending,
    Held,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Pending => "pending",
            Status::Held => "held",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FileState::{self, *};

    /// Exactly the steps a side effect or a person depends on are fsynced.
    #[test]
    fn intents_and_steps_before_irreversible_actions_are_durable_the_rest_lazy() {
        let durable = |push: bool| -> Vec<FileState> {
            FileState::ALL
                .into_iter()
                .filter(|s| s.durable(push))
                .collect()
        };
        assert_eq!(
            durable(true),
            [Sending, Renaming, Renamed, Verified, Failed, Held]
        );
        assert_eq!(durable(false), [Renaming, Renamed, Verified, Failed, Held]);
    }

    /// The whole table, written out: every pair not listed is refused.
    #[test]
    fn every_transition_is_allowed_or_refused_as_the_table_says() {
        let allowed: &[(FileState, FileState)] = &[
            (Seen, Sending),
            (Seen, Failed),
            (Seen, Held),
            (Sending, Sending),
            (Sending, Sent),
            (Sending, Renaming),
            (Sending, Verified),
            (Sending, Failed),
            (Sending, Held),
            (Sent, Sending),
            (Sent, Renaming),
            (Sent, Verified),
            (Sent, Failed),
            (Sent, Held),
            (Renaming, Renaming),
            (Renaming, Sending),
            (Renaming, Verified),
            (Renaming, Failed),
            (Renaming, Held),
            (Renamed, Done),
            (Renamed, Failed),
            (Verified, Renamed),
            (Verified, Done),
            (Verified, Sending),
            (Verified, Failed),
            (Failed, Sending),
            (Failed, Sent),
            (Failed, Renaming),
            (Failed, Verified),
            (Failed, Failed),
            (Failed, Held),
            (Held, Verified),
            (Held, Seen),
        ];
        for from in FileState::ALL {
            for to in FileState::ALL {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn done_is_final_and_held_leaves_only_by_an_operator() {
        assert!(Done.next().is_empty());
        assert_eq!(Held.next(), &[Verified, Seen]);
        // Nothing the engine does on its own reaches seen again.
        assert_eq!(FileState::predecessors(Seen), vec![Held]);
    }

    #[test]
    fn states_round_trip_through_their_ledger_names() {
        for s in FileState::ALL {
            assert_eq!(s.as_str().parse::<FileState>().unwrap(), s);
        }
        assert!("renamed-ish".parse::<FileState>().is_err());
    }
}
