//! The envelope gate: the structural checks a file must pass before a push
//! job with `edi.validate: true` sends it. Every problem names codes and
//! positions, never segment contents.

use super::reader::{At, Envelope, Problem};

/// Which kind of partner server this is (`servers.<name>.environment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Production,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Test => "test",
        }
    }
}

/// What the job and its server expect of an interchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    /// `edi.sender_id`: ISA06 must be this (padding ignored).
    pub sender_id: Option<&'a str>,
    /// `edi.receiver_id`: ISA08 must be this.
    pub receiver_id: Option<&'a str>,
    /// The server's `environment`: `P` may not go to a test server nor `T` to production.
    pub environment: Option<Environment>,
}

/// The transaction set a functional identifier (GS01) carries.
pub fn set_for_group(gs01: &str) -> Option<&'static [&'static str]> {
    Some(match gs01 {
        "HC" => &["837"],
        "HP" => &["835"],
        "FA" => &["999", "997"],
        "HN" => &["277"],
        _ => return None,
    })
}

fn at(code: &'static str, a: At, text: String) -> Problem {
    Problem {
        code,
        segment: a.segment,
        offset: a.offset,
        text,
    }
}

/// Every structural problem of `env` under `rules`; empty means it may go.
pub fn check(env: &Envelope, rules: &Rules<'_>) -> Vec<Problem> {
    let mut out = env.problems.clone();
    if env.interchanges.len() > 1 {
        let second = env.interchanges[1].at;
        out.push(at(
            "multiple_interchanges",
            second,
            format!(
                "the file holds {} interchanges; send one interchange per file",
                env.interchanges.len()
            ),
        ));
    }
    for i in &env.interchanges {
        if i.isa12 != "00501" {
            out.push(at(
                "isa12_version",
                i.at,
                "ISA12 is not 00501 (the 5010 control version)".into(),
            ));
        }
        match i.isa15.as_str() {
            "P" if rules.environment == Some(Environment::Test) => out.push(at(
                "isa15_production_to_test",
                i.at,
                "ISA15 is P (production data) but the server is a test environment".into(),
            )),
            "T" if rules.environment == Some(Environment::Production) => out.push(at(
                "isa15_test_to_production",
                i.at,
                "ISA15 is T (test data) but the server is a production environment".into(),
            )),
            "P" | "T" => {}
            _ => out.push(at("isa15_usage", i.at, "ISA15 is neither P nor T".into())),
        }
        if let Some(want) = rules.sender_id
            && i.isa06 != want.trim()
        {
            out.push(at(
                "isa06_sender",
                i.at,
                "ISA06 (interchange sender id) is not the job's edi.sender_id".into(),
            ));
        }
        if let Some(want) = rules.receiver_id
            && i.isa08 != want.trim()
        {
            out.push(at(
                "isa08_receiver",
                i.at,
                "ISA08 (interchange receiver id) is not the job's edi.receiver_id".into(),
            ));
        }
        if let Some((iea01, iea02)) = &i.iea {
            if iea01.trim().parse::<usize>().ok() != Some(i.groups.len()) {
                out.push(at(
                    "iea01_count",
                    i.iea_at,
                    format!(
                        "IEA01 does not give the number of functional groups ({} GS in the interchange)",
                        i.groups.len()
                    ),
                ));
            }
            if iea02 != &i.isa13 {
                out.push(at(
                    "iea02_control",
                    i.iea_at,
                    "IEA02 is not the interchange control number of ISA13".into(),
                ));
            }
        }
        if i.groups.is_empty() && i.ta1.is_empty() {
            out.push(at(
                "no_groups",
                i.at,
                "the interchange holds no functional group".into(),
            ));
        }
        for g in &i.groups {
            if let Some((ge01, ge02)) = &g.ge {
                if ge01.trim().parse::<usize>().ok() != Some(g.sets.len()) {
                    out.push(at(
                        "ge01_count",
                        g.ge_at,
                        format!(
                            "GE01 does not give the number of transaction sets ({} ST in the group)",
                            g.sets.len()
                        ),
                    ));
                }
                if ge02 != &g.gs06 {
                    out.push(at(
                        "ge02_control",
                        g.ge_at,
                        "GE02 is not the group control number of GS06".into(),
                    ));
                }
            }
            let allowed = set_for_group(&g.gs01);
            if allowed.is_none() {
                out.push(at(
                    "gs01_unknown",
                    g.at,
                    "GS01 is not a functional identifier ferry knows (HC, HP, FA, HN)".into(),
                ));
            }
            for s in &g.sets {
                if let Some(allowed) = allowed
                    && !allowed.contains(&s.st01.as_str())
                {
                    out.push(at(
                        "gs01_st01_mismatch",
                        s.at,
                        format!(
                            "ST01 does not belong in a GS01 {} group (expected {})",
                            g.gs01,
                            allowed.join(" or ")
                        ),
                    ));
                }
                if let Some((se01, se02)) = &s.se {
                    if se01.trim().parse::<u64>().ok() != Some(s.segments) {
                        out.push(at(
                            "se01_count",
                            s.se_at,
                            format!(
                                "SE01 does not give the number of segments from ST to SE ({})",
                                s.segments
                            ),
                        ));
                    }
                    if se02 != &s.st02 {
                        out.push(at(
                            "se02_control",
                            s.se_at,
                            "SE02 is not the transaction set control number of ST02".into(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The reason file's text: plain words, codes and positions only.
pub fn reason_text(job: &str, file: &str, sha256: &str, problems: &[Problem]) -> String {
    let mut s = format!(
        "ferry did not send this file: it failed the X12 envelope checks of job {job}.\n\nfile:    {file}\nsha256:  {sha256}\nchecked: {}\n\n",
        crate::ledger::now()
    );
    for p in problems {
        s.push_str(&format!("- {p}\n"));
    }
    s.push_str(
        "\nFix the file where it was produced and drop the corrected file into the outbound folder again.\n",
    );
    s
}
