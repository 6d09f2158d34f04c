//! A streaming X12 envelope reader: reads one segment at a time (each at
//! most [`MAX_SEGMENT`] bytes), so memory does not grow with the file, and
//! keeps only the envelope facts: ISA, GS, ST and their trailers, the
//! counts the gate checks, and what acknowledgement matching needs (TA1,
//! AK1/AK2/IK3/IK4/IK5/AK9, 277CA TRN/STC). Claim identifiers (CLM01, and
//! 277CA 2200D TRN02) are kept only as SHA-256 digests.
//!
//! Delimiters come from the ISA: the element separator is its 4th byte, the
//! repetition separator ISA11, the component separator ISA16 and the
//! segment terminator the byte after it. CR and LF after a terminator are
//! skipped. No input makes it panic (`tests/fuzz.rs`).

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

/// A segment longer than this is an error: X12 segments are short, and the
/// bound keeps a broken or hostile file from growing ferry's memory.
pub const MAX_SEGMENT: usize = 64 * 1024;

/// Where the element separator sits in a well-formed 106-byte ISA.
const ISA_SEPARATORS: [usize; 16] = [
    3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103,
];

/// The delimiters an interchange declares in its ISA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub element: u8,
    pub repetition: u8,
    pub component: u8,
    pub segment: u8,
}

/// A structural problem, with where it is; never the segment's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A short stable code (`isa_length`, `se_count`, ...).
    pub code: &'static str,
    /// The segment's number in the file, the ISA being 1 (0: the file as a whole).
    pub segment: u64,
    /// The byte offset where that segment starts.
    pub offset: u64,
    pub text: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segment == 0 {
            write!(f, "[{}] {}", self.code, self.text)
        } else {
            write!(
                f,
                "[{}] segment {} (byte {}): {}",
                self.code, self.segment, self.offset, self.text
            )
        }
    }
}

/// Where a segment was in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct At {
    pub segment: u64,
    pub offset: u64,
}

/// One TA1 (interchange acknowledgement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ta1 {
    /// TA101: the acknowledged interchange's ISA13.
    pub control: String,
    /// TA104: A, E or R.
    pub ack: String,
    /// TA105: the note code.
    pub note: String,
}

/// One AK2 loop of a 999 (or 997): the answer for one transaction set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetResponse {
    /// AK201 and AK202: the acknowledged set's ST01 and ST02.
    pub st01: String,
    pub st02: String,
    /// IK501 (AK501): A, E, M, R, W or X; empty when missing.
    pub status: String,
    /// IK3/IK4/IK5 codes as `IK3:8@12` (error code 8 at segment position 12).
    pub codes: Vec<String>,
}

/// The AK9 of a 999: the answer for the whole group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupResponse {
    /// AK101 and AK102: the acknowledged group's GS01 and GS06.
    pub gs01: String,
    pub gs06: String,
    /// AK901: A, E, M, P, R, W or X; empty when AK9 is missing.
    pub status: String,
    /// AK902, AK903, AK904: sets included, received, accepted.
    pub included: Option<u64>,
    pub received: Option<u64>,
    pub accepted: Option<u64>,
    /// AK905-AK909.
    pub codes: Vec<String>,
    pub sets: Vec<SetResponse>,
}

/// A 277CA status (STC01-1 category code) for a batch or one claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimStatus {
    /// The 2200B TRN02 (the 837's BHT03), or for a claim the SHA-256 of
    /// the 2200D TRN02 (the 837's CLM01).
    pub reference: String,
    /// The STC01-1 category codes, in order.
    pub categories: Vec<String>,
}

/// What a 277CA set says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimAck {
    pub batches: Vec<ClaimStatus>,
    pub claims: Vec<ClaimStatus>,
}

/// One transaction set (ST ... SE).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    pub at: At,
    pub st01: String,
    pub st02: String,
    pub st03: String,
    /// Segments from ST to SE, both included (SE01 should say the same).
    pub segments: u64,
    /// SE01 and SE02; `None` when the set has no SE.
    pub se: Option<(String, String)>,
    pub se_at: At,
    pub bht03: Option<String>,
    /// CLM segments (837).
    pub claims: u64,
    /// SHA-256 of each CLM01 (837): matches 277CA claims without keeping them.
    pub claim_ids: Vec<String>,
    /// A 999/997's answer (AK1 ... AK9).
    pub response: Option<GroupResponse>,
    /// A 277's claim statuses.
    pub claim_ack: Option<ClaimAck>,
}

/// One functional group (GS ... GE).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub at: At,
    pub gs01: String,
    pub gs02: String,
    pub gs03: String,
    pub gs06: String,
    pub gs08: String,
    pub sets: Vec<Set>,
    /// GE01 and GE02; `None` when the group has no GE.
    pub ge: Option<(String, String)>,
    pub ge_at: At,
}

/// One interchange (ISA ... IEA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interchange {
    pub at: At,
    pub isa05: String,
    /// ISA06 with its padding trimmed.
    pub isa06: String,
    pub isa07: String,
    /// ISA08 with its padding trimmed.
    pub isa08: String,
    pub isa09: String,
    pub isa10: String,
    pub isa12: String,
    pub isa13: String,
    pub isa14: String,
    pub isa15: String,
    pub ta1: Vec<Ta1>,
    pub groups: Vec<Group>,
    /// IEA01 and IEA02; `None` when the interchange has no IEA.
    pub iea: Option<(String, String)>,
    pub iea_at: At,
}

/// Everything read from one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub delimiters: Option<Delimiters>,
    pub interchanges: Vec<Interchange>,
    /// Problems the reader itself met (the gate adds the semantic checks).
    pub problems: Vec<Problem>,
    /// Segments read, all told.
    pub segments: u64,
}

impl Envelope {
    /// The first interchange, if there is one.
    pub fn interchange(&self) -> Option<&Interchange> {
        self.interchanges.first()
    }
}

/// Reads `path` (see [`read`]).
pub fn read_file(path: &std::path::Path) -> io::Result<Envelope> {
    read(std::fs::File::open(path)?)
}

/// Reads an X12 file's envelope from `r`. I/O errors are errors; anything
/// wrong with the bytes is a [`Problem`] in the result.
pub fn read(r: impl Read) -> io::Result<Envelope> {
    let mut r = BufReader::with_capacity(16 * 1024, r);
    let mut env = Envelope::default();
    let mut isa = [0u8; 106];
    let n = read_up_to(&mut r, &mut isa)?;
    if n == 0 {
        env.problems.push(whole("empty", "the file is empty"));
        return Ok(env);
    }
    if n < 3 || &isa[..3] != b"ISA" {
        env.problems.push(whole(
            "not_isa",
            "the file does not start with an ISA segment",
        ));
        return Ok(env);
    }
    if n < 4 {
        env.problems
            .push(whole("isa_length", "the file ends inside the ISA segment"));
        return Ok(env);
    }
    let sep = isa[3];
    // The ISA may be longer or shorter than 106 bytes: find its terminator
    // as the byte after ISA16 (the 16th element separator plus one).
    let mut head: Vec<u8> = isa[..n].to_vec();
    let found = loop {
        if let Some(p) = nth_position(&head, sep, 16)
            && head.len() > p + 2
        {
            break Some(p);
        }
        if head.len() >= 512 {
            break None;
        }
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            break None;
        }
        head.push(b[0]);
    };
    let Some(p16) = found else {
        env.problems.push(Problem {
            code: "isa_length",
            segment: 1,
            offset: 0,
            text: "the ISA segment does not have 16 elements followed by a segment terminator"
                .into(),
        });
        return Ok(env);
    };
    let isa_len = p16 + 3;
    let isa_elems = split(&head[..isa_len - 1], sep);
    let delims = Delimiters {
        element: sep,
        repetition: isa_elems
            .get(11)
            .and_then(|e| e.bytes().next())
            .unwrap_or(0),
        component: head[p16 + 1],
        segment: head[p16 + 2],
    };
    env.delimiters = Some(delims);
    let at = At {
        segment: 1,
        offset: 0,
    };
    if isa_len != 106 {
        env.problems.push(Problem {
            code: "isa_length",
            segment: 1,
            offset: 0,
            text: format!("the ISA segment is {isa_len} bytes, expected 106"),
        });
    } else if ISA_SEPARATORS.iter().any(|&i| head[i] != sep)
        || (0..104).any(|i| head[i] == sep && !ISA_SEPARATORS.contains(&i))
    {
        env.problems.push(Problem {
            code: "isa_layout",
            segment: 1,
            offset: 0,
            text: "the ISA elements do not have their fixed widths (the element separator is not at the same places throughout)".into(),
        });
    }
    check_delimiters(&mut env, delims, el(&isa_elems, 12) == "00501");
    // What follows the ISA terminator in `head` is the start of the next segment.
    let rest = head[isa_len..].to_vec();
    let mut b = Builder {
        env,
        delims,
        open_group: false,
        open_set: false,
        hl_level: String::new(),
    };
    b.segment(&isa_elems, at);
    let mut seg = Segments {
        r: Chain {
            first: rest,
            pos: 0,
            r,
        },
        delims,
        offset: isa_len as u64,
        number: 1,
        skip_line_ends: true,
    };
    loop {
        match seg.next()? {
            Next::End => break,
            Next::TooLong(at) => {
                b.env.problems.push(Problem {
                    code: "segment_length",
                    segment: at.segment,
                    offset: at.offset,
                    text: format!(
                        "segment longer than {MAX_SEGMENT} bytes; the rest of the file was not read"
                    ),
                });
                break;
            }
            Next::Segment(bytes, at) => {
                if bytes.is_empty() {
                    continue;
                }
                let elems = split(&bytes, delims.element);
                b.segment(&elems, at);
            }
        }
    }
    b.env.segments = seg.number;
    b.finish();
    Ok(b.env)
}

fn whole(code: &'static str, text: &str) -> Problem {
    Problem {
        code,
        segment: 0,
        offset: 0,
        text: text.to_string(),
    }
}

fn check_delimiters(env: &mut Envelope, d: Delimiters, isa12_is_5010: bool) {
    let mut named: Vec<(&str, u8)> = vec![
        ("element separator", d.element),
        ("component separator (ISA16)", d.component),
        ("segment terminator", d.segment),
    ];
    if isa12_is_5010 {
        named.insert(1, ("repetition separator (ISA11)", d.repetition));
    }
    for (what, b) in &named {
        if b.is_ascii_alphanumeric() {
            env.problems.push(Problem {
                code: "delimiter_alphanumeric",
                segment: 1,
                offset: 0,
                text: format!("the {what} is a letter or digit"),
            });
        }
    }
    for i in 0..named.len() {
        for j in i + 1..named.len() {
            if named[i].1 == named[j].1 {
                env.problems.push(Problem {
                    code: "delimiter_repeated",
                    segment: 1,
                    offset: 0,
                    text: format!(
                        "the {} and the {} are the same byte",
                        named[i].0, named[j].0
                    ),
                });
            }
        }
    }
}

/// Index of the `n`th occurrence of `b` in `v` (1-based).
fn nth_position(v: &[u8], b: u8, n: usize) -> Option<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| **x == b)
        .nth(n - 1)
        .map(|(i, _)| i)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn split(seg: &[u8], sep: u8) -> Vec<String> {
    seg.split(|b| *b == sep)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// The bytes already read past the ISA, then the rest of the reader.
struct Chain<R> {
    first: Vec<u8>,
    pos: usize,
    r: R,
}

impl<R: BufRead> Chain<R> {
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.pos < self.first.len() {
            return Ok(&self.first[self.pos..]);
        }
        self.r.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if self.pos < self.first.len() {
            self.pos += n;
        } else {
            self.r.consume(n);
        }
    }
}

enum Next {
    Segment(Vec<u8>, At),
    TooLong(At),
    End,
}

struct Segments<R> {
    r: Chain<R>,
    delims: Delimiters,
    offset: u64,
    number: u64,
    skip_line_ends: bool,
}

impl<R: BufRead> Segments<R> {
    fn next(&mut self) -> io::Result<Next> {
        // CR/LF after a terminator are line wrapping, not data.
        if self.skip_line_ends {
            loop {
                let buf = self.r.fill()?;
                let n = buf
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n') && **b != self.delims.segment)
                    .count();
                if n == 0 {
                    break;
                }
                let all = n == buf.len();
                self.r.consume(n);
                self.offset += n as u64;
                if !all {
                    break;
                }
            }
        }
        let start = self.offset;
        let mut seg = Vec::new();
        loop {
            let buf = self.r.fill()?;
            if buf.is_empty() {
                if seg.is_empty() {
                    return Ok(Next::End);
                }
                break;
            }
            match buf.iter().position(|b| *b == self.delims.segment) {
                Some(i) => {
                    if seg.len() + i > MAX_SEGMENT {
                        return Ok(Next::TooLong(At {
                            segment: self.number + 1,
                            offset: start,
                        }));
                    }
                    seg.extend_from_slice(&buf[..i]);
                    self.r.consume(i + 1);
                    self.offset += i as u64 + 1;
                    break;
                }
                None => {
                    let n = buf.len();
                    if seg.len() + n > MAX_SEGMENT {
                        return Ok(Next::TooLong(At {
                            segment: self.number + 1,
                            offset: start,
                        }));
                    }
                    seg.extend_from_slice(buf);
                    self.r.consume(n);
                    self.offset += n as u64;
                }
            }
        }
        // A terminator of LF with CR before it (CRLF-wrapped with LF as terminator).
        if self.delims.segment == b'\n' && seg.last() == Some(&b'\r') {
            seg.pop();
        }
        if seg.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
            // Trailing line ends or blanks at the end of the file.
            return Ok(Next::Segment(Vec::new(), At::default()));
        }
        self.number += 1;
        Ok(Next::Segment(
            seg,
            At {
                segment: self.number,
                offset: start,
            },
        ))
    }
}

/// Turns segments into the envelope, noting what is out of place.
struct Builder {
    env: Envelope,
    delims: Delimiters,
    open_group: bool,
    open_set: bool,
    /// HL03 of the current hierarchical level (277CA: 21 receiver, PT patient).
    hl_level: String,
}

fn el(e: &[String], i: usize) -> &str {
    e.get(i).map_or("", String::as_str)
}

/// The SHA-256 of an identifier, in hex: matches without keeping it.
pub fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.trim().as_bytes()))
}

impl Builder {
    fn problem(&mut self, code: &'static str, at: At, text: String) {
        // A broken file could list thousands; the first ones say enough.
        if self.env.problems.len() < 100 {
            self.env.problems.push(Problem {
                code,
                segment: at.segment,
                offset: at.offset,
                text,
            });
        }
    }

    fn interchange(&mut self) -> Option<&mut Interchange> {
        self.env.interchanges.last_mut()
    }

    fn group(&mut self) -> Option<&mut Group> {
        if !self.open_group {
            return None;
        }
        self.interchange()?.groups.last_mut()
    }

    fn set(&mut self) -> Option<&mut Set> {
        if !self.open_set {
            return None;
        }
        self.group()?.sets.last_mut()
    }

    fn segment(&mut self, e: &[String], at: At) {
        let id = el(e, 0).trim_start_matches(['\r', '\n', ' ']).to_string();
        match id.as_str() {
            "ISA" => self.isa(e, at),
            "IEA" => {
                self.close_group("IEA");
                match self.interchange() {
                    Some(i) if i.iea.is_none() => {
                        i.iea = Some((el(e, 1).to_string(), el(e, 2).to_string()));
                        i.iea_at = at;
                    }
                    _ => self.problem("iea_unexpected", at, "IEA without its ISA".into()),
                }
            }
            "TA1" => {
                let ta1 = Ta1 {
                    control: el(e, 1).to_string(),
                    ack: el(e, 4).to_string(),
                    note: el(e, 5).to_string(),
                };
                let in_group = self.open_group;
                match self.interchange() {
                    Some(i) if !in_group => i.ta1.push(ta1),
                    _ => self.problem(
                        "ta1_misplaced",
                        at,
                        "TA1 outside the interchange header area".into(),
                    ),
                }
            }
            "GS" => {
                self.close_group("GS");
                let g = Group {
                    at,
                    gs01: el(e, 1).to_string(),
                    gs02: el(e, 2).trim().to_string(),
                    gs03: el(e, 3).trim().to_string(),
                    gs06: el(e, 6).to_string(),
                    gs08: el(e, 8).to_string(),
                    ..Group::default()
                };
                let closed = self.interchange().is_some_and(|i| i.iea.is_some());
                match self.interchange() {
                    Some(i) if !closed => {
                        i.groups.push(g);
                        self.open_group = true;
                    }
                    _ => self.problem("gs_outside", at, "GS outside an interchange".into()),
                }
            }
            "GE" => {
                self.close_set("GE");
                match self.group() {
                    Some(g) => {
                        g.ge = Some((el(e, 1).to_string(), el(e, 2).to_string()));
                        g.ge_at = at;
                        self.open_group = false;
                    }
                    None => self.problem("ge_unexpected", at, "GE without its GS".into()),
                }
            }
            "ST" => {
                self.close_set("ST");
                let s = Set {
                    at,
                    st01: el(e, 1).to_string(),
                    st02: el(e, 2).to_string(),
                    st03: el(e, 3).to_string(),
                    segments: 1,
                    ..Set::default()
                };
                self.hl_level.clear();
                match self.group() {
                    Some(g) => {
                        g.sets.push(s);
                        self.open_set = true;
                    }
                    None => self.problem("st_outside", at, "ST outside a functional group".into()),
                }
            }
            "SE" => match self.set() {
                Some(s) => {
                    s.segments += 1;
                    s.se = Some((el(e, 1).to_string(), el(e, 2).to_string()));
                    s.se_at = at;
                    self.open_set = false;
                }
                None => self.problem("se_unexpected", at, "SE without its ST".into()),
            },
            _ => {
                let comp = self.delims.component;
                let hl = self.hl_level.clone();
                let Some(s) = self.set() else {
                    self.problem(
                        "segment_outside",
                        at,
                        format!("{} segment outside a transaction set", printable_id(&id)),
                    );
                    return;
                };
                s.segments += 1;
                let mut new_hl = None;
                match id.as_str() {
                    "BHT" => s.bht03 = Some(el(e, 3).to_string()),
                    "CLM" => {
                        s.claims += 1;
                        s.claim_ids.push(digest(el(e, 1)));
                    }
                    "AK1" => {
                        s.response = Some(GroupResponse {
                            gs01: el(e, 1).to_string(),
                            gs06: el(e, 2).to_string(),
                            ..GroupResponse::default()
                        })
                    }
                    "AK2" => {
                        if let Some(r) = s.response.as_mut() {
                            r.sets.push(SetResponse {
                                st01: el(e, 1).to_string(),
                                st02: el(e, 2).to_string(),
                                ..SetResponse::default()
                            });
                        }
                    }
                    "IK3" | "AK3" => {
                        if let Some(r) = s.response.as_mut().and_then(|r| r.sets.last_mut()) {
                            r.codes.push(format!("{id}:{}@{}", el(e, 4), el(e, 2)));
                        }
                    }
                    "IK4" | "AK4" => {
                        if let Some(r) = s.response.as_mut().and_then(|r| r.sets.last_mut()) {
                            let pos = el(e, 1).split(comp as char).next().unwrap_or("");
                            r.codes.push(format!("{id}:{}@{pos}", el(e, 3)));
                        }
                    }
                    "IK5" | "AK5" => {
                        if let Some(r) = s.response.as_mut().and_then(|r| r.sets.last_mut()) {
                            r.status = el(e, 1).to_string();
                            for i in 2..=6 {
                                if !el(e, i).is_empty() {
                                    r.codes.push(format!("{id}:{}", el(e, i)));
                                }
                            }
                        }
                    }
                    "AK9" => {
                        if let Some(r) = s.response.as_mut() {
                            r.status = el(e, 1).to_string();
                            r.included = el(e, 2).trim().parse().ok();
                            r.received = el(e, 3).trim().parse().ok();
                            r.accepted = el(e, 4).trim().parse().ok();
                            for i in 5..=9 {
                                if !el(e, i).is_empty() {
                                    r.codes.push(format!("AK9:{}", el(e, i)));
                                }
                            }
                        }
                    }
                    "HL" => new_hl = Some(el(e, 3).to_string()),
                    "TRN" if s.st01 == "277" => {
                        let ca = s.claim_ack.get_or_insert_with(ClaimAck::default);
                        match hl.as_str() {
                            "21" => ca.batches.push(ClaimStatus {
                                reference: el(e, 2).to_string(),
                                categories: Vec::new(),
                            }),
                            "PT" => ca.claims.push(ClaimStatus {
                                reference: digest(el(e, 2)),
                                categories: Vec::new(),
                            }),
                            _ => {}
                        }
                    }
                    "STC" if s.st01 == "277" => {
                        let cat = el(e, 1)
                            .split(comp as char)
                            .next()
                            .unwrap_or("")
                            .to_string();
                        if let Some(ca) = s.claim_ack.as_mut() {
                            let target = match hl.as_str() {
                                "21" => ca.batches.last_mut(),
                                "PT" => ca.claims.last_mut(),
                                _ => None,
                            };
                            if let Some(t) = target {
                                t.categories.push(cat);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(h) = new_hl {
                    self.hl_level = h;
                }
            }
        }
    }

    fn isa(&mut self, e: &[String], at: At) {
        self.close_group("ISA");
        if let Some(i) = self.env.interchanges.last()
            && i.iea.is_none()
        {
            self.problem(
                "iea_missing",
                at,
                "an ISA begins before the previous interchange's IEA".into(),
            );
        }
        self.env.interchanges.push(Interchange {
            at,
            isa05: el(e, 5).to_string(),
            isa06: el(e, 6).trim().to_string(),
            isa07: el(e, 7).to_string(),
            isa08: el(e, 8).trim().to_string(),
            isa09: el(e, 9).to_string(),
            isa10: el(e, 10).to_string(),
            isa12: el(e, 12).to_string(),
            isa13: el(e, 13).to_string(),
            isa14: el(e, 14).to_string(),
            isa15: el(e, 15).to_string(),
            ..Interchange::default()
        });
    }

    /// A group still open when `what` arrives (or at the end) lacks its GE.
    fn close_group(&mut self, what: &str) {
        self.close_set(what);
        if self.open_group {
            self.open_group = false;
            let gs = self
                .interchange()
                .and_then(|i| i.groups.last())
                .map(|g| g.at);
            if let Some(gs) = gs {
                self.problem(
                    "ge_missing",
                    gs,
                    format!("the group starting here has no GE before {what}"),
                );
            }
        }
    }

    fn close_set(&mut self, what: &str) {
        if self.open_set {
            self.open_set = false;
            let st = self
                .interchange()
                .and_then(|i| i.groups.last())
                .and_then(|g| g.sets.last())
                .map(|s| s.at);
            if let Some(st) = st {
                self.problem(
                    "se_missing",
                    st,
                    format!("the transaction set starting here has no SE before {what}"),
                );
            }
        }
    }

    fn finish(&mut self) {
        self.close_group("the end of the file");
        let missing: Vec<At> = self
            .env
            .interchanges
            .iter()
            .filter(|i| i.iea.is_none())
            .map(|i| i.at)
            .collect();
        for at in missing {
            self.problem(
                "iea_missing",
                at,
                "the interchange starting here has no IEA".into(),
            );
        }
    }
}

/// A segment id as it may be shown: letters and digits only, at most 3.
fn printable_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= 3 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        id.to_string()
    } else {
        "an unrecognised".to_string()
    }
}
