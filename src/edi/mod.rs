//! Claims awareness: the X12 envelope reader, the gate that blocks a bad or
//! duplicate interchange before it leaves, and acknowledgement tracking
//! (TA1, 999, 277CA) for what was sent.

pub mod ack;
pub mod gate;
pub mod reader;

pub use gate::{Environment, Rules};
pub use reader::{Envelope, Interchange, Problem, read, read_file};
pub mod track;

/// Something about claims a person should hear of: an acknowledgement
/// that rejects, one overdue, one that matches nothing. Control numbers and
/// counts only, never claim or member data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The push job the notice is about (for an orphan or a missing
    /// expected file: the pull job that read or expected it).
    pub job: String,
    /// The file it concerns (the acknowledgement read, or the interchange's
    /// file), for `ferry once` and the log; emails leave it out (names can
    /// carry member identifiers).
    pub file: Option<String>,
    /// Control numbers, codes and counts only.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NoticeKind {
    /// An interchange, group, set or claim rejected (critical).
    Rejected,
    /// Partially accepted, or accepted with errors.
    Errors,
    /// A deadline passed with no acknowledgement.
    Overdue,
    /// An acknowledgement that answers nothing ferry sent.
    Orphan,
    /// AK902 (sets the partner counted) is not our GE01.
    CountMismatch,
    /// No file arrived in an `expect` window.
    Missing,
    /// Accepted: only reported, never alerted.
    Accepted,
}

impl NoticeKind {
    /// The cause it is alerted under, and the word in the email's subject.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Rejected => "REJECTED",
            NoticeKind::Errors => "ACCEPTED WITH ERRORS",
            NoticeKind::Overdue => "OVERDUE",
            NoticeKind::Orphan => "ORPHAN ACK",
            NoticeKind::CountMismatch => "COUNT MISMATCH",
            NoticeKind::Missing => "MISSING",
            NoticeKind::Accepted => "ACCEPTED",
        }
    }
}
