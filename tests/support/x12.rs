//! X12 sample interchanges built by the tests: an 837P with several claims
//! (valid for pyx12's 005010X222A1 map), the 999, TA1 and 277CA a partner
//! sends back for it, an 835. Segments are written with `*`, `:` and `^`
//! and rendered with whatever delimiters a test wants.

/// Delimiters and line wrapping for rendering.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub element: char,
    pub component: char,
    pub repetition: char,
    pub terminator: char,
    /// Written after every terminator (`"\r\n"` for CRLF-wrapped files).
    pub wrap: &'static str,
}

pub const PLAIN: Style = Style {
    element: '*',
    component: ':',
    repetition: '^',
    terminator: '~',
    wrap: "",
};

pub const CRLF: Style = Style {
    wrap: "\r\n",
    ..PLAIN
};

/// A transaction set: ST01, ST02, ST03 and the segments between ST and SE.
#[derive(Debug, Clone)]
pub struct Set {
    pub id: String,
    pub control: String,
    pub version: String,
    pub body: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub fid: String,
    pub sender: String,
    pub receiver: String,
    pub control: String,
    pub version: String,
    pub sets: Vec<Set>,
}

#[derive(Debug, Clone)]
pub struct Interchange {
    pub sender: String,
    pub receiver: String,
    pub control: String,
    pub ack_requested: char,
    pub usage: char,
    /// Segments between ISA and the first GS (TA1s).
    pub header: Vec<String>,
    pub groups: Vec<Group>,
}

fn pad(s: &str, n: usize) -> String {
    format!("{s:<n$}")
}

impl Interchange {
    pub fn new(sender: &str, receiver: &str, control: u32) -> Interchange {
        Interchange {
            sender: sender.into(),
            receiver: receiver.into(),
            control: format!("{control:09}"),
            ack_requested: '1',
            usage: 'T',
            header: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// The ISA line exactly as X12 wants it (106 bytes with its terminator).
    pub fn isa(&self) -> String {
        format!(
            "ISA*00*{}*00*{}*ZZ*{}*ZZ*{}*261201*1145*^*00501*{}*{}*{}*:",
            pad("", 10),
            pad("", 10),
            pad(&self.sender, 15),
            pad(&self.receiver, 15),
            self.control,
            self.ack_requested,
            self.usage
        )
    }

    /// Every segment, envelopes and correct counts included.
    pub fn segments(&self) -> Vec<String> {
        let mut v = vec![self.isa()];
        v.extend(self.header.iter().cloned());
        for g in &self.groups {
            v.push(format!(
                "GS*{}*{}*{}*20261201*1145*{}*X*{}",
                g.fid, g.sender, g.receiver, g.control, g.version
            ));
            for s in &g.sets {
                v.push(format!("ST*{}*{}*{}", s.id, s.control, s.version));
                v.extend(s.body.iter().cloned());
                v.push(format!("SE*{}*{}", s.body.len() + 2, s.control));
            }
            v.push(format!("GE*{}*{}", g.sets.len(), g.control));
        }
        v.push(format!("IEA*{}*{}", self.groups.len(), self.control));
        v
    }

    pub fn render(&self, style: Style) -> Vec<u8> {
        render(&self.segments(), style)
    }
}

/// Segments written with `*`, `:`, `^` rendered in `style`. The ISA's
/// fixed layout survives because every delimiter is one byte.
pub fn render(segments: &[String], style: Style) -> Vec<u8> {
    let mut out = String::new();
    for s in segments {
        let t: String = s
            .chars()
            .map(|c| match c {
                '*' => style.element,
                ':' => style.component,
                '^' => style.repetition,
                c => c,
            })
            .collect();
        out.push_str(&t);
        out.push(style.terminator);
        out.push_str(style.wrap);
    }
    out.into_bytes()
}

pub const SUBMITTER: &str = "SUBMITTERID";
pub const RECEIVER: &str = "RECEIVERID";

/// The body of an 837P set with one claim per patient control number
/// (CLM01), each of 100.00 for one office visit.
pub fn claims_837_body(batch: &str, claims: &[&str]) -> Vec<String> {
    let mut b: Vec<String> = [
        format!("BHT*0019*00*{batch}*20261201*1145*CH"),
        format!("NM1*41*2*ACME BILLING*****46*{SUBMITTER}"),
        "PER*IC*JANE DOE*TE*5555551234".into(),
        format!("NM1*40*2*CLEARINGHOUSE*****46*{RECEIVER}"),
        "HL*1**20*1".into(),
        "NM1*85*2*ACME CLINIC*****XX*1234567893".into(),
        "N3*123 MAIN ST".into(),
        "N4*SPRINGFIELD*IL*627010000".into(),
        "REF*EI*123456789".into(),
        "HL*2*1*22*0".into(),
        "SBR*P*18*******CI".into(),
        "NM1*IL*1*DOE*JOHN****MI*MEMBER001".into(),
        "N3*1 ELM ST".into(),
        "N4*SPRINGFIELD*IL*62701".into(),
        "DMG*D8*19800101*M".into(),
        "NM1*PR*2*PAYER INC*****PI*PAYER01".into(),
    ]
    .to_vec();
    for c in claims {
        b.push(format!("CLM*{c}*100***11:B:1*Y*A*Y*Y"));
        b.push("HI*ABK:J069".into());
        b.push("LX*1".into());
        b.push("SV1*HC:99213*100*UN*1***1".into());
        b.push("DTP*472*D8*20261120".into());
    }
    b
}

/// An 837P interchange (ISA13 `control`, GS06 `group`) with these claims.
pub fn p837(control: u32, group: u32, claims: &[&str]) -> Interchange {
    let mut ic = Interchange::new(SUBMITTER, RECEIVER, control);
    ic.groups.push(Group {
        fid: "HC".into(),
        sender: SUBMITTER.into(),
        receiver: RECEIVER.into(),
        control: group.to_string(),
        version: "005010X222A1".into(),
        sets: vec![Set {
            id: "837".into(),
            control: "0001".into(),
            version: "005010X222A1".into(),
            body: claims_837_body(&format!("BATCH{control}"), claims),
        }],
    });
    ic
}

/// The partner's interchange answering `to` (envelope mirrored).
fn reply(to: &Interchange, control: u32) -> Interchange {
    let mut ic = Interchange::new(&to.receiver, &to.sender, control);
    ic.ack_requested = '0';
    ic.usage = to.usage;
    ic
}

/// A 999 for the first group of `to`: per set `(ST02, IK501, extra segments)`, and AK9.
pub fn a999(to: &Interchange, sets: &[(&str, &str, &[&str])], ak9: &str) -> Interchange {
    let g = &to.groups[0];
    let mut body = vec![format!("AK1*{}*{}*{}", g.fid, g.control, g.version)];
    for (st02, ik5, extra) in sets {
        body.push(format!("AK2*837*{st02}*{}", g.version));
        body.extend(extra.iter().map(|s| s.to_string()));
        if *ik5 == "A" {
            body.push("IK5*A".into());
        } else {
            body.push(format!("IK5*{ik5}*5"));
        }
    }
    let accepted = sets.iter().filter(|s| s.1 == "A" || s.1 == "E").count();
    body.push(format!(
        "AK9*{ak9}*{}*{}*{accepted}",
        sets.len(),
        sets.len()
    ));
    let mut ic = reply(to, 900_000 + to.control.parse::<u32>().unwrap_or(0) % 1000);
    ic.groups.push(Group {
        fid: "FA".into(),
        sender: g.receiver.clone(),
        receiver: g.sender.clone(),
        control: "7001".into(),
        version: "005010X231A1".into(),
        sets: vec![Set {
            id: "999".into(),
            control: "0001".into(),
            version: "005010X231A1".into(),
            body,
        }],
    });
    ic
}

/// A TA1 interchange for `to`: `A` accepted, `R` rejected, with TA105 `note`.
pub fn ta1(to: &Interchange, ack: &str, note: &str) -> Interchange {
    let mut ic = reply(to, 800_000);
    ic.header
        .push(format!("TA1*{}*261201*1150*{ack}*{note}", to.control));
    ic
}

/// A 277CA for the 837 `to`: its batch (BHT03) and each claim `(CLM01, STC01-1)`.
pub fn c277(to: &Interchange, claims: &[(&str, &str)]) -> Interchange {
    let batch = format!("BATCH{}", to.control.parse::<u32>().unwrap_or(0));
    let mut body: Vec<String> = vec![
        "BHT*0085*08*277X214*20261201*1200*TH".into(),
        "HL*1**20*1".into(),
        "NM1*PR*2*PAYER INC*****PI*PAYER01".into(),
        "TRN*1*200102".into(),
        "DTP*050*D8*20261201".into(),
        "DTP*009*D8*20261201".into(),
        "HL*2*1*21*1".into(),
        format!("NM1*41*2*ACME BILLING*****46*{SUBMITTER}"),
        format!("TRN*2*{batch}"),
        format!("STC*A1:19:PR*20261201*WQ*{}", 100 * claims.len()),
        "HL*3*2*19*1".into(),
        "NM1*85*2*ACME CLINIC*****XX*1234567893".into(),
    ];
    for (i, (clm01, cat)) in claims.iter().enumerate() {
        body.push(format!("HL*{}*3*PT", 4 + i));
        body.push("NM1*QC*1*DOE*JOHN****MI*MEMBER001".into());
        body.push(format!("TRN*2*{clm01}"));
        body.push(format!("STC*{cat}:20:PR*20261201*WQ*100"));
    }
    let mut ic = reply(to, 700_000);
    ic.groups.push(Group {
        fid: "HN".into(),
        sender: RECEIVER.into(),
        receiver: SUBMITTER.into(),
        control: "5001".into(),
        version: "005010X214".into(),
        sets: vec![Set {
            id: "277".into(),
            control: "0001".into(),
            version: "005010X214".into(),
            body,
        }],
    });
    ic
}

/// A small 835 remittance.
pub fn r835(control: u32) -> Interchange {
    let mut ic = Interchange::new(RECEIVER, SUBMITTER, control);
    ic.ack_requested = '0';
    ic.groups.push(Group {
        fid: "HP".into(),
        sender: RECEIVER.into(),
        receiver: SUBMITTER.into(),
        control: "6001".into(),
        version: "005010X221A1".into(),
        sets: vec![Set {
            id: "835".into(),
            control: "0001".into(),
            version: "005010X221A1".into(),
            body: vec![
                "BPR*I*100*C*ACH*CCP*01*999999999*DA*123456*1512345678**01*999988880*DA*98765*20261201".into(),
                "TRN*1*12345*1512345678".into(),
                "DTM*405*20261201".into(),
                "N1*PR*PAYER INC".into(),
                "N1*PE*ACME CLINIC*XX*1234567893".into(),
                "CLP*PCN0001*1*100*100**12*PAYERCLAIM1".into(),
            ],
        }],
    });
    ic
}
