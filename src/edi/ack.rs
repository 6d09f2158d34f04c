//! What an incoming X12 file is (TA1, 999, 277CA, 835 or something else)
//! and how its codes read as a status. Pure: matching against what was
//! sent is in [`crate::ledger`]'s `edi` queries and `transfer::acks`.

use std::fmt;

use super::reader::Envelope;

/// What a downloaded file holds, judged by content, never by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ta1,
    Ack999,
    Ack277ca,
    Remit835,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ta1 => "TA1",
            Kind::Ack999 => "999",
            Kind::Ack277ca => "277CA",
            Kind::Remit835 => "835",
            Kind::Other => "other",
        }
    }
}

/// Every kind the file holds: a 999 interchange may carry a TA1 too
/// (pyx12 does that when the 837 asked for one with ISA14 = 1).
pub fn kinds(env: &Envelope) -> Vec<Kind> {
    let mut out = Vec::new();
    for i in &env.interchanges {
        if !i.ta1.is_empty() {
            out.push(Kind::Ta1);
        }
        for g in &i.groups {
            for s in &g.sets {
                out.push(match s.st01.as_str() {
                    "999" | "997" => Kind::Ack999,
                    "277" => Kind::Ack277ca,
                    "835" => Kind::Remit835,
                    _ => Kind::Other,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        out.push(Kind::Other);
    }
    out
}

/// How a partner answered an interchange, a group, a set or a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Accepted,
    AcceptedWithErrors,
    PartiallyAccepted,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::AcceptedWithErrors => "accepted_with_errors",
            Status::PartiallyAccepted => "partially_accepted",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "accepted" => Status::Accepted,
            "accepted_with_errors" => Status::AcceptedWithErrors,
            "partially_accepted" => Status::PartiallyAccepted,
            "rejected" => Status::Rejected,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TA104: A accepted, E accepted with errors, R rejected.
pub fn ta1_status(ta104: &str) -> Status {
    match ta104 {
        "A" => Status::Accepted,
        "E" => Status::AcceptedWithErrors,
        _ => Status::Rejected,
    }
}

/// IK501 (AK501): A accepted, E accepted with errors; M, R, W, X rejected.
pub fn set_status(ik501: &str) -> Status {
    match ik501 {
        "A" => Status::Accepted,
        "E" => Status::AcceptedWithErrors,
        _ => Status::Rejected,
    }
}

/// AK901: A, E, P partially accepted; M, R, W, X rejected.
pub fn group_status(ak901: &str) -> Status {
    match ak901 {
        "A" => Status::Accepted,
        "E" => Status::AcceptedWithErrors,
        "P" => Status::PartiallyAccepted,
        _ => Status::Rejected,
    }
}

/// A 999's answer for a group: its AK9, except that an `R` (or a missing
/// AK9) while some sets were accepted reads as partially accepted. pyx12,
/// for one, never writes `AK9*P`: one rejected set of two gives `AK9*R`
/// with AK904 = 1.
pub fn response_status(r: &super::reader::GroupResponse) -> Status {
    let sets = r.sets.iter().map(|x| set_status(&x.status));
    let some_accepted = r.accepted.is_some_and(|n| n > 0)
        || r.sets.iter().any(|x| {
            matches!(
                set_status(&x.status),
                Status::Accepted | Status::AcceptedWithErrors
            )
        });
    let status = if r.status.is_empty() {
        roll_up(sets).unwrap_or(Status::Rejected)
    } else {
        group_status(&r.status)
    };
    if status == Status::Rejected && some_accepted {
        Status::PartiallyAccepted
    } else {
        status
    }
}

/// A 277CA claim's STC01-1 categories: A0/A1/A2/A5 acknowledge or accept,
/// A3/A4/A6/A7/A8 and E0-E4 reject (returned, not found, missing or
/// invalid information, response not possible). The worst one counts.
pub fn claim_status(categories: &[String]) -> Status {
    categories
        .iter()
        .map(|c| match c.as_str() {
            "A0" | "A1" | "A2" | "A5" => Status::Accepted,
            "A3" | "A4" | "A6" | "A7" | "A8" | "E0" | "E1" | "E2" | "E3" | "E4" => Status::Rejected,
            _ => Status::AcceptedWithErrors,
        })
        .max()
        .unwrap_or(Status::AcceptedWithErrors)
}

/// Many answers as one: all accepted, all rejected, or partially accepted
/// when some were rejected and some not.
pub fn roll_up(all: impl IntoIterator<Item = Status>) -> Option<Status> {
    let v: Vec<Status> = all.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    let rejected = v.iter().filter(|s| **s == Status::Rejected).count();
    Some(if rejected == v.len() {
        Status::Rejected
    } else if rejected > 0 || v.contains(&Status::PartiallyAccepted) {
        Status::PartiallyAccepted
    } else if v.contains(&Status::AcceptedWithErrors) {
        Status::AcceptedWithErrors
    } else {
        Status::Accepted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_roll_up_as_a_claims_desk_reads_them() {
        use Status::*;
        assert_eq!(roll_up([Accepted, Accepted]), Some(Accepted));
        assert_eq!(
            roll_up([Accepted, AcceptedWithErrors]),
            Some(AcceptedWithErrors)
        );
        assert_eq!(roll_up([Accepted, Rejected]), Some(PartiallyAccepted));
        assert_eq!(roll_up([Rejected, Rejected]), Some(Rejected));
        assert_eq!(roll_up([]), None);
        assert_eq!(group_status("P"), PartiallyAccepted);
        assert_eq!(group_status("X"), Rejected);
        assert_eq!(set_status("E"), AcceptedWithErrors);
        assert_eq!(claim_status(&["A1".into(), "A7".into()]), Rejected);
        assert_eq!(claim_status(&["A2".into()]), Accepted);
    }

    #[test]
    fn an_ak9_r_with_accepted_sets_reads_as_partially_accepted() {
        use super::super::reader::{GroupResponse, SetResponse};
        let set = |s: &str| SetResponse {
            status: s.into(),
            ..SetResponse::default()
        };
        let r = |ak9: &str, accepted, sets: Vec<SetResponse>| GroupResponse {
            status: ak9.into(),
            accepted,
            sets,
            ..GroupResponse::default()
        };
        assert_eq!(
            response_status(&r("R", Some(1), vec![set("A"), set("R")])),
            Status::PartiallyAccepted
        );
        assert_eq!(
            response_status(&r("R", Some(0), vec![set("R"), set("R")])),
            Status::Rejected
        );
        assert_eq!(
            response_status(&r("A", Some(2), vec![set("A"), set("A")])),
            Status::Accepted
        );
        assert_eq!(
            response_status(&r("", None, vec![set("A"), set("E")])),
            Status::AcceptedWithErrors
        );
        assert_eq!(response_status(&r("", None, vec![])), Status::Rejected);
    }
}
