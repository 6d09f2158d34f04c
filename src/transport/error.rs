//! Transport errors: distinct kinds, each a sentence an operator understands.
//! No message ever contains a password: none is ever passed in.

use std::time::Duration;

use super::tls::TlsProblem;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve host '{host}': {detail}")]
    Resolve { host: String, detail: String },

    #[error("connection to {addr} refused: no FTP server listening there")]
    Refused { addr: String },

    #[error("timed out after {}s while {step}", after.as_secs_f32())]
    Timeout { step: String, after: Duration },

    #[error("TLS with {host}: {problem}")]
    Tls { host: String, problem: TlsFailure },

    #[error("login refused for user '{user}': {reply}")]
    LoginRefused { user: String, reply: String },

    #[error("permission denied on '{path}': {reply}")]
    PermissionDenied {
        path: String,
        code: u32,
        reply: String,
    },

    /// A 450/550 reply: "file unavailable". RFC 959 does not say whether the
    /// file is missing or forbidden, so no decision rests on this kind alone:
    /// presence is asked with a listing.
    #[error("the server refused '{path}': {reply}")]
    FileUnavailable {
        path: String,
        code: u32,
        reply: String,
    },

    #[error("the server answered {code} to {step}: {text}")]
    Server {
        step: String,
        code: u32,
        text: String,
    },

    #[error("connection lost while {step}: {detail}")]
    Connection { step: String, detail: String },

    /// `421`: the server closes the control connection (too many sessions,
    /// shutting down). RFC 959 makes it transient: worth another try later.
    #[error("the server closed the session while {step}: {text}")]
    Unavailable { step: String, text: String },

    #[error("the server does not offer {what}")]
    Unsupported { what: String },

    #[error("{0}")]
    Local(String),
}

/// The classified TLS failure, with the presented fingerprint when we saw one
/// (so the operator can pin it, or see what changed).
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    #[error(
        "the server certificate is not signed by a trusted CA (fingerprint {presented}); set ca_file to its CA, or pin_sha256 to this fingerprint if you have confirmed it with the partner"
    )]
    Untrusted { presented: String },
    #[error("the server certificate is not valid for this host name (fingerprint {presented})")]
    WrongHostName { presented: String },
    #[error("the server certificate has expired (fingerprint {presented})")]
    Expired { presented: String },
    #[error(
        "the server certificate is not valid yet (fingerprint {presented}); check this machine's clock"
    )]
    NotYetValid { presented: String },
    #[error(
        "the server certificate's fingerprint {presented} does not match pin_sha256 {expected}; if the partner renewed its certificate, confirm the new fingerprint with them and update the pin"
    )]
    PinMismatch { presented: String, expected: String },
    #[error("no TLS version in common (offered {offered})")]
    VersionRefused { offered: String },
    #[error("handshake failed: {0}")]
    Handshake(String),
}

/// What sort of failure, for callers that decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Resolve,
    Refused,
    Timeout,
    UntrustedCertificate,
    WrongHostName,
    Expired,
    NotYetValid,
    PinMismatch,
    TlsVersion,
    TlsHandshake,
    LoginRefused,
    PermissionDenied,
    FileUnavailable,
    Server,
    Connection,
    Unavailable,
    Unsupported,
    Local,
}

impl TransportError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::Resolve { .. } => ErrorKind::Resolve,
            TransportError::Refused { .. } => ErrorKind::Refused,
            TransportError::Timeout { .. } => ErrorKind::Timeout,
            TransportError::Tls { problem, .. } => match problem {
                TlsFailure::Untrusted { .. } => ErrorKind::UntrustedCertificate,
                TlsFailure::WrongHostName { .. } => ErrorKind::WrongHostName,
                TlsFailure::Expired { .. } => ErrorKind::Expired,
                TlsFailure::NotYetValid { .. } => ErrorKind::NotYetValid,
                TlsFailure::PinMismatch { .. } => ErrorKind::PinMismatch,
                TlsFailure::VersionRefused { .. } => ErrorKind::TlsVersion,
                TlsFailure::Handshake(_) => ErrorKind::TlsHandshake,
            },
            TransportError::LoginRefused { .. } => ErrorKind::LoginRefused,
            TransportError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            TransportError::FileUnavailable { .. } => ErrorKind::FileUnavailable,
            TransportError::Server { .. } => ErrorKind::Server,
            TransportError::Connection { .. } => ErrorKind::Connection,
            TransportError::Unavailable { .. } => ErrorKind::Unavailable,
            TransportError::Unsupported { .. } => ErrorKind::Unsupported,
            TransportError::Local(_) => ErrorKind::Local,
        }
    }

    /// Whether the session is unusable after this error: the run's remaining
    /// files fail together (one alert) instead of one by one.
    pub fn is_session_fatal(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Resolve
                | ErrorKind::Refused
                | ErrorKind::Timeout
                | ErrorKind::UntrustedCertificate
                | ErrorKind::WrongHostName
                | ErrorKind::Expired
                | ErrorKind::NotYetValid
                | ErrorKind::PinMismatch
                | ErrorKind::TlsVersion
                | ErrorKind::TlsHandshake
                | ErrorKind::LoginRefused
                | ErrorKind::Connection
                | ErrorKind::Unavailable
        )
    }

    /// The reply code when the server refused a command (a negative reply
    /// on a working connection), as opposed to a lost connection or a local error.
    pub fn refusal_code(&self) -> Option<u32> {
        match self {
            TransportError::Server { code, .. } => Some(*code),
            TransportError::PermissionDenied { code, .. }
            | TransportError::FileUnavailable { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn from_tls(
        host: &str,
        problem: Option<TlsProblem>,
        presented: Option<String>,
        offered: String,
        raw: String,
    ) -> Self {
        let presented = presented.unwrap_or_else(|| "not presented".to_string());
        let problem = match problem {
            Some(TlsProblem::UnknownIssuer) => TlsFailure::Untrusted { presented },
            Some(TlsProblem::WrongHostName) => TlsFailure::WrongHostName { presented },
            Some(TlsProblem::Expired) => TlsFailure::Expired { presented },
            Some(TlsProblem::NotYetValid) => TlsFailure::NotYetValid { presented },
            Some(TlsProblem::PinMismatch { expected }) => TlsFailure::PinMismatch {
                presented,
                expected,
            },
            Some(TlsProblem::VersionRefused) => TlsFailure::VersionRefused { offered },
            Some(TlsProblem::Other(s)) => TlsFailure::Handshake(s),
            None => TlsFailure::Handshake(raw),
        };
        TransportError::Tls {
            host: host.to_string(),
            problem,
        }
    }
}
