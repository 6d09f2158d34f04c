//! The X12 envelope reader and the gate, on sample interchanges built by
//! the tests: every structural error as its own variant, CRLF-wrapped and
//! multi-group files, other delimiters, and the acknowledgements a partner
//! sends back (999 accepted / partially accepted / rejected, TA1 accepted /
//! rejected, 277CA with accepted and rejected claims, 835).

mod support;

use ferry::edi::ack::{self, Kind};
use ferry::edi::{Environment, Rules, gate, read};
use support::x12::{self, CRLF, PLAIN, Style};

fn verdict(bytes: &[u8], rules: &Rules<'_>) -> Vec<&'static str> {
    let env = read(bytes).unwrap();
    gate::check(&env, rules).iter().map(|p| p.code).collect()
}

fn codes(bytes: &[u8]) -> Vec<&'static str> {
    verdict(bytes, &Rules::default())
}

fn sample() -> x12::Interchange {
    x12::p837(101, 101, &["PCN0001", "PCN0002", "PCN0003"])
}

/// The sample's segments with `edit` applied, rendered plainly.
fn edited(edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
    let mut segs = sample().segments();
    edit(&mut segs);
    x12::render(&segs, PLAIN)
}

fn replace_segment(segs: &mut [String], prefix: &str, with: &str) {
    let s = segs
        .iter_mut()
        .find(|s| s.starts_with(prefix))
        .unwrap_or_else(|| panic!("no segment {prefix}"));
    *s = with.to_string();
}

/// Problems never show segment contents: no names, member or claim ids.
fn no_contents(bytes: &[u8], rules: &Rules<'_>) {
    let env = read(bytes).unwrap();
    let text = gate::reason_text("j", "f.837", "00", &gate::check(&env, rules));
    for secret in [
        "DOE",
        "JOHN",
        "MEMBER001",
        "PCN000",
        "SPRINGFIELD",
        "123456789",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[test]
fn a_valid_837_with_several_claims_passes_and_its_envelope_is_read() {
    let bytes = sample().render(PLAIN);
    assert_eq!(codes(&bytes), Vec::<&str>::new());
    let env = read(&bytes[..]).unwrap();
    let ic = env.interchange().unwrap();
    assert_eq!(
        (ic.isa05.as_str(), ic.isa06.as_str()),
        ("ZZ", "SUBMITTERID")
    );
    assert_eq!((ic.isa07.as_str(), ic.isa08.as_str()), ("ZZ", "RECEIVERID"));
    assert_eq!((ic.isa09.as_str(), ic.isa10.as_str()), ("261201", "1145"));
    assert_eq!(ic.isa13, "000000101");
    assert_eq!((ic.isa14.as_str(), ic.isa15.as_str()), ("1", "T"));
    let g = &ic.groups[0];
    assert_eq!(
        (
            g.gs01.as_str(),
            g.gs02.as_str(),
            g.gs03.as_str(),
            g.gs06.as_str(),
            g.gs08.as_str()
        ),
        ("HC", "SUBMITTERID", "RECEIVERID", "101", "005010X222A1")
    );
    let s = &g.sets[0];
    assert_eq!(
        (s.st01.as_str(), s.st02.as_str(), s.st03.as_str()),
        ("837", "0001", "005010X222A1")
    );
    assert_eq!(s.claims, 3);
    assert_eq!(s.claim_ids.len(), 3);
    assert!(
        s.claim_ids
            .iter()
            .all(|c| c.len() == 64 && !c.contains("PCN"))
    );
    assert_eq!(s.bht03.as_deref(), Some("BATCH101"));
    assert_eq!(s.se.as_ref().unwrap().0, s.segments.to_string());
    assert_eq!(
        g.ge.as_ref().unwrap(),
        &("1".to_string(), "101".to_string())
    );
    assert_eq!(
        ic.iea.as_ref().unwrap(),
        &("1".to_string(), "000000101".to_string())
    );
}

#[test]
fn crlf_wrapped_files_and_other_delimiters_read_the_same() {
    let plain = read(&sample().render(PLAIN)[..]).unwrap();
    for style in [
        CRLF,
        Style {
            wrap: "\n",
            ..PLAIN
        },
        Style {
            element: '|',
            component: '>',
            repetition: '!',
            terminator: '\n',
            wrap: "",
        },
        Style {
            element: '|',
            component: '>',
            repetition: '!',
            terminator: '\n',
            wrap: "\r",
        },
        Style {
            terminator: '\'',
            wrap: "\r\n",
            ..PLAIN
        },
    ] {
        let bytes = sample().render(style);
        assert_eq!(codes(&bytes), Vec::<&str>::new(), "{style:?}");
        let env = read(&bytes[..]).unwrap();
        assert_eq!(unplaced(&env), unplaced(&plain), "{style:?}");
    }
}

/// The facts without their byte offsets (which wrapping shifts).
fn unplaced(env: &ferry::edi::Envelope) -> Vec<ferry::edi::Interchange> {
    let mut v = env.interchanges.clone();
    for i in &mut v {
        i.at.offset = 0;
        i.iea_at.offset = 0;
        for g in &mut i.groups {
            g.at.offset = 0;
            g.ge_at.offset = 0;
            for s in &mut g.sets {
                s.at.offset = 0;
                s.se_at.offset = 0;
            }
        }
    }
    v
}

#[test]
fn a_multi_group_file_passes_with_every_group_read() {
    let mut ic = sample();
    let mut second = ic.groups[0].clone();
    second.control = "102".into();
    second.sets[0].control = "0002".into();
    ic.groups.push(second);
    let bytes = ic.render(CRLF);
    assert_eq!(codes(&bytes), Vec::<&str>::new());
    let env = read(&bytes[..]).unwrap();
    let groups = &env.interchange().unwrap().groups;
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[1].gs06, "102");
    assert_eq!(groups[1].sets[0].st02, "0002");
}

#[test]
fn an_empty_file_or_one_not_starting_with_isa_is_blocked() {
    assert_eq!(codes(b""), vec!["empty"]);
    let bytes = sample().render(PLAIN);
    assert_eq!(codes(&bytes[1..]), vec!["not_isa"]);
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend(&bytes);
    assert_eq!(codes(&bom), vec!["not_isa"]);
    assert_eq!(codes(b"ISA"), vec!["isa_length"]);
}

#[test]
fn an_isa_of_the_wrong_length_is_blocked() {
    let bytes = edited(|s| s[0] = s[0].replacen("SUBMITTERID    ", "SUBMITTERID   ", 1));
    assert!(codes(&bytes).contains(&"isa_length"), "{:?}", codes(&bytes));
    let bytes = edited(|s| s[0] = s[0].replacen("SUBMITTERID    ", "SUBMITTERID     ", 1));
    assert!(codes(&bytes).contains(&"isa_length"));
}

#[test]
fn inconsistent_repeated_or_alphanumeric_delimiters_are_blocked() {
    // An element separator moved inside the ISA (same length, wrong widths).
    let bytes = edited(|s| s[0] = s[0].replacen("*00*          *00*", "*00* *         00*", 1));
    assert!(codes(&bytes).contains(&"isa_layout"), "{:?}", codes(&bytes));
    // The component separator (ISA16) the same as the element separator.
    let bytes = sample().render(Style {
        component: '*',
        ..PLAIN
    });
    assert!(
        codes(&bytes).contains(&"delimiter_repeated"),
        "{:?}",
        codes(&bytes)
    );
    // The repetition separator the same as the terminator.
    let bytes = sample().render(Style {
        repetition: '~',
        ..PLAIN
    });
    assert!(
        codes(&bytes).contains(&"delimiter_repeated"),
        "{:?}",
        codes(&bytes)
    );
    // A letter as the segment terminator.
    let bytes = sample().render(Style {
        terminator: 'Q',
        ..PLAIN
    });
    assert!(
        codes(&bytes).contains(&"delimiter_alphanumeric"),
        "{:?}",
        codes(&bytes)
    );
    // A digit as the component separator.
    let bytes = sample().render(Style {
        component: '7',
        ..PLAIN
    });
    assert!(
        codes(&bytes).contains(&"delimiter_alphanumeric"),
        "{:?}",
        codes(&bytes)
    );
}

#[test]
fn an_isa12_other_than_00501_is_blocked() {
    let bytes = edited(|s| s[0] = s[0].replacen("*00501*", "*00401*", 1));
    assert_eq!(codes(&bytes), vec!["isa12_version"]);
}

#[test]
fn each_trailer_count_or_control_number_error_is_blocked_on_its_own() {
    let cases: [(&str, &str, &str); 6] = [
        ("IEA", "IEA*2*000000101", "iea01_count"),
        ("IEA", "IEA*1*000000102", "iea02_control"),
        ("GE", "GE*2*101", "ge01_count"),
        ("GE", "GE*1*999", "ge02_control"),
        ("SE", "SE*9*0001", "se01_count"),
        ("SE", "", "se02_control"),
    ];
    for (prefix, with, code) in cases {
        let bytes = edited(|s| {
            let with = if with.is_empty() {
                let n = s
                    .iter()
                    .find(|x| x.starts_with("SE*"))
                    .unwrap()
                    .split('*')
                    .nth(1)
                    .unwrap()
                    .to_string();
                format!("SE*{n}*0002")
            } else {
                with.to_string()
            };
            replace_segment(s, &format!("{prefix}*"), &with);
        });
        assert_eq!(codes(&bytes), vec![code], "{prefix} -> {with}");
        no_contents(&bytes, &Rules::default());
    }
}

#[test]
fn a_set_that_does_not_belong_in_its_group_is_blocked() {
    for gs01 in ["HP", "FA", "HN", "ZZ"] {
        let bytes = edited(|s| s[1] = s[1].replacen("GS*HC*", &format!("GS*{gs01}*"), 1));
        let c = codes(&bytes);
        let want = if gs01 == "ZZ" {
            "gs01_unknown"
        } else {
            "gs01_st01_mismatch"
        };
        assert!(c.contains(&want), "{gs01}: {c:?}");
    }
}

#[test]
fn two_interchanges_in_one_file_are_blocked() {
    let mut bytes = sample().render(CRLF);
    bytes.extend(x12::p837(102, 102, &["PCN0009"]).render(CRLF));
    assert_eq!(codes(&bytes), vec!["multiple_interchanges"]);
}

#[test]
fn missing_trailers_are_blocked() {
    let segs = sample().segments();
    let cut = |n: usize| x12::render(&segs[..segs.len() - n], PLAIN);
    assert_eq!(codes(&cut(1)), vec!["iea_missing"]);
    assert_eq!(codes(&cut(2)), vec!["ge_missing", "iea_missing"]);
    assert_eq!(
        codes(&cut(3)),
        vec!["se_missing", "ge_missing", "iea_missing"]
    );
    // A segment outside any set.
    let bytes = edited(|s| s.insert(2, "REF*EI*123456789".into()));
    assert!(codes(&bytes).contains(&"segment_outside"));
    no_contents(&bytes, &Rules::default());
}

#[test]
fn test_data_to_production_and_production_data_to_test_are_blocked() {
    let test = sample().render(PLAIN);
    let mut p = sample();
    p.usage = 'P';
    let prod = p.render(PLAIN);
    let to = |e| Rules {
        environment: Some(e),
        ..Rules::default()
    };
    assert_eq!(
        verdict(&test, &to(Environment::Production)),
        vec!["isa15_test_to_production"]
    );
    assert_eq!(
        verdict(&prod, &to(Environment::Test)),
        vec!["isa15_production_to_test"]
    );
    assert!(verdict(&test, &to(Environment::Test)).is_empty());
    assert!(verdict(&prod, &to(Environment::Production)).is_empty());
    assert!(verdict(&prod, &Rules::default()).is_empty());
}

#[test]
fn sender_and_receiver_ids_other_than_the_jobs_are_blocked() {
    let bytes = sample().render(PLAIN);
    let ok = Rules {
        sender_id: Some("SUBMITTERID"),
        receiver_id: Some("RECEIVERID"),
        ..Rules::default()
    };
    assert!(verdict(&bytes, &ok).is_empty());
    let bad = Rules {
        sender_id: Some("OTHER"),
        receiver_id: Some("NOTUS"),
        ..Rules::default()
    };
    assert_eq!(
        verdict(&bytes, &bad),
        vec!["isa06_sender", "isa08_receiver"]
    );
    no_contents(&bytes, &bad);
    let text = gate::reason_text(
        "j",
        "f",
        "00",
        &gate::check(&read(&bytes[..]).unwrap(), &bad),
    );
    assert!(
        !text.contains("SUBMITTERID") && !text.contains("OTHER"),
        "{text}"
    );
}

#[test]
fn problems_name_their_segment_and_byte() {
    let bytes = edited(|s| replace_segment(s, "GE*", "GE*1*999"));
    let env = read(&bytes[..]).unwrap();
    let p = &gate::check(&env, &Rules::default())[0];
    let segs = sample().segments();
    let ge_index = segs.iter().position(|s| s.starts_with("GE*")).unwrap();
    assert_eq!(p.segment, ge_index as u64 + 1);
    let offset: usize = segs[..ge_index].iter().map(|s| s.len() + 1).sum();
    assert_eq!(p.offset, offset as u64);
    assert!(
        p.to_string()
            .contains(&format!("segment {} (byte {offset})", ge_index + 1)),
        "{p}"
    );
}

#[test]
fn acknowledgements_pass_the_gate_and_are_classified_by_content() {
    let sent = sample();
    let accepted = x12::a999(&sent, &[("0001", "A", &[])], "A");
    let partial = x12::a999(
        &sent,
        &[("0001", "A", &[]), ("0002", "R", &["IK3*NM1*8**8"])],
        "P",
    );
    let rejected = x12::a999(
        &sent,
        &[("0001", "R", &["IK3*N4*9**3", "IK4*2**7*XX"])],
        "R",
    );
    let ta1_ok = x12::ta1(&sent, "A", "000");
    let ta1_bad = x12::ta1(&sent, "R", "022");
    let ca = x12::c277(
        &sent,
        &[("PCN0001", "A2"), ("PCN0002", "A7"), ("PCN0003", "A2")],
    );
    let remit = x12::r835(555);
    for (ic, kind) in [
        (&accepted, Kind::Ack999),
        (&partial, Kind::Ack999),
        (&rejected, Kind::Ack999),
        (&ta1_ok, Kind::Ta1),
        (&ta1_bad, Kind::Ta1),
        (&ca, Kind::Ack277ca),
        (&remit, Kind::Remit835),
    ] {
        let bytes = ic.render(CRLF);
        let env = read(&bytes[..]).unwrap();
        assert_eq!(gate::check(&env, &Rules::default()), vec![], "{kind:?}");
        assert_eq!(ack::kinds(&env), vec![kind]);
    }
    let env = read(&partial.render(PLAIN)[..]).unwrap();
    let r = env.interchange().unwrap().groups[0].sets[0]
        .response
        .clone()
        .unwrap();
    assert_eq!(
        (r.gs01.as_str(), r.gs06.as_str(), r.status.as_str()),
        ("HC", "101", "P")
    );
    assert_eq!(
        (r.included, r.received, r.accepted),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(r.sets[1].status, "R");
    assert_eq!(r.sets[1].codes, vec!["IK3:8@8", "IK5:5"]);
    assert_eq!(ack::group_status(&r.status), ack::Status::PartiallyAccepted);
    let env = read(&rejected.render(PLAIN)[..]).unwrap();
    let r = env.interchange().unwrap().groups[0].sets[0]
        .response
        .clone()
        .unwrap();
    assert_eq!(r.sets[0].codes, vec!["IK3:3@9", "IK4:7@2", "IK5:5"]);
    let env = read(&ta1_bad.render(PLAIN)[..]).unwrap();
    let t = &env.interchange().unwrap().ta1[0];
    assert_eq!(
        (t.control.as_str(), t.ack.as_str(), t.note.as_str()),
        ("000000101", "R", "022")
    );
    let env = read(&ca.render(PLAIN)[..]).unwrap();
    let c = env.interchange().unwrap().groups[0].sets[0]
        .claim_ack
        .clone()
        .unwrap();
    assert_eq!(c.batches[0].reference, "BATCH101");
    assert_eq!(c.claims.len(), 3);
    assert_eq!(c.claims[1].categories, vec!["A7"]);
    assert_eq!(
        ack::claim_status(&c.claims[1].categories),
        ack::Status::Rejected
    );
    let sent_ids = &read(&sent.render(PLAIN)[..])
        .unwrap()
        .interchange()
        .unwrap()
        .groups[0]
        .sets[0]
        .claim_ids
        .clone();
    assert_eq!(
        c.claims
            .iter()
            .map(|x| x.reference.clone())
            .collect::<Vec<_>>(),
        *sent_ids
    );
}

#[test]
fn a_ta1_inside_a_999_interchange_is_both() {
    // pyx12 puts a TA1 after the 999's GE when the 837 asked for one.
    let sent = sample();
    let both = x12::a999(&sent, &[("0001", "A", &[])], "A");
    let mut segs = both.segments();
    let iea = segs.len() - 1;
    segs.insert(iea, "TA1*000000101*261201*1145*A*000".into());
    let env = read(&x12::render(&segs, PLAIN)[..]).unwrap();
    assert_eq!(ack::kinds(&env), vec![Kind::Ta1, Kind::Ack999]);
}
