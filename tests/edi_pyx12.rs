//! A real oracle for the claims tests: pyx12 4.0 (PyPI, installed in a venv
//! by scripts/install-test-deps.sh) validates the sample 837s and generates
//! the 999 for each, and plays the clearinghouse end to end: ferry pushes
//! 837s through vsftpd, pyx12 answers what arrived, the pull job matches
//! the 999s, `ferry acks --json` shows the result and a rejection is emailed
//! (aiosmtpd).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry::edi::ack::{self, Kind};
use ferry::edi::{Rules, gate, read};
use support::real_servers::{
    Kind as ServerKind, RealServer, SmtpServer, available, chown_to_test_user,
};
use support::x12::{self, CRLF, PLAIN};
use support::{stderr, stdout};

fn python() -> PathBuf {
    let cache = std::env::var_os("FERRY_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ferry-test"));
    let p = cache.join("pyx12-venv/bin/python");
    assert!(
        p.exists(),
        "pyx12 is not installed ({} missing): run `bash scripts/install-test-deps.sh` as root",
        p.display()
    );
    p
}

/// Runs pyx12 on `input`, writing its 999 to `output`; true when it found the file valid.
fn pyx12(input: &Path, output: &Path) -> bool {
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pyx12-999.py"))
        .arg(input)
        .arg(output)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "pyx12: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its logger is silenced: nothing of the file reaches our output.
    assert!(!said.contains("DOE") && !said.contains("PCN"), "{said}");
    said == "valid"
}

/// The sample 837 with its billing provider's N4 removed: the envelope is
/// sound (the gate lets it go), the 837P guide says it is not.
fn broken_837(control: u32) -> Vec<String> {
    let mut segs = x12::p837(control, control, &["PCN0001"]).segments();
    let at = segs
        .iter()
        .position(|s| s == "N4*SPRINGFIELD*IL*627010000")
        .unwrap();
    segs.remove(at);
    let se = segs.iter().position(|s| s.starts_with("SE*")).unwrap();
    let n: u32 = segs[se].split('*').nth(1).unwrap().parse().unwrap();
    segs[se] = format!("SE*{}*0001", n - 1);
    segs
}

#[test]
fn pyx12_accepts_the_sample_837s_and_ferry_reads_its_999s() {
    if std::env::var_os("FERRY_SKIP_INTEROP").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<(&str, Vec<u8>, bool)> = vec![
        ("one", x12::p837(101, 101, &["PCN0001"]).render(PLAIN), true),
        (
            "three",
            x12::p837(102, 102, &["PCN0001", "PCN0002", "PCN0003"]).render(PLAIN),
            true,
        ),
        (
            "crlf",
            x12::p837(103, 103, &["PCN0001", "PCN0002"]).render(CRLF),
            true,
        ),
        ("broken", x12::render(&broken_837(104), PLAIN), false),
    ];
    for (name, bytes, valid) in samples {
        let input = dir.path().join(format!("{name}.837"));
        std::fs::write(&input, &bytes).unwrap();
        assert!(
            gate::check(&read(&bytes[..]).unwrap(), &Rules::default()).is_empty(),
            "{name} passes our gate"
        );
        let out = dir.path().join(format!("{name}.999"));
        assert_eq!(pyx12(&input, &out), valid, "{name}");
        let sent = read(&bytes[..]).unwrap();
        let sent = sent.interchange().unwrap();
        let env = read(&std::fs::read(&out).unwrap()[..]).unwrap();
        // pyx12's 999 is structurally sound by our gate too.
        assert!(
            gate::check(&env, &Rules::default()).is_empty(),
            "{name}: {:?}",
            gate::check(&env, &Rules::default())
        );
        // ISA14 = 1 in our 837: pyx12 answers with a TA1 inside the 999's interchange.
        assert_eq!(ack::kinds(&env), vec![Kind::Ta1, Kind::Ack999], "{name}");
        let ic = env.interchange().unwrap();
        assert_eq!(
            (ic.isa06.as_str(), ic.isa08.as_str()),
            (sent.isa08.as_str(), sent.isa06.as_str()),
            "mirrored"
        );
        assert_eq!(ic.ta1[0].control, sent.isa13);
        let g = &ic.groups[0];
        assert_eq!(g.gs08, "005010X231", "pyx12 writes GS08 without A1");
        let r = g.sets[0].response.as_ref().unwrap();
        assert_eq!(
            (r.gs01.as_str(), r.gs06.as_str()),
            ("HC", sent.groups[0].gs06.as_str())
        );
        assert_eq!(r.status, if valid { "A" } else { "R" }, "{name}");
        assert_eq!(r.sets[0].st02, "0001");
        if !valid {
            assert!(
                r.sets[0].codes.iter().any(|c| c.starts_with("IK3:")),
                "{:?}",
                r.sets[0].codes
            );
        }
    }
}

#[test]
fn pyx12_rejects_one_set_of_two_with_ak9_r_and_ferry_reads_it_as_partially_accepted() {
    if std::env::var_os("FERRY_SKIP_INTEROP").is_some() {
        return;
    }
    let mut ic = x12::p837(301, 301, &["PCN0001"]);
    let mut second = ic.groups[0].sets[0].clone();
    second.control = "0002".into();
    second.body.retain(|s| s != "N4*SPRINGFIELD*IL*627010000");
    ic.groups[0].sets.push(second);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("two.837");
    std::fs::write(&input, ic.render(CRLF)).unwrap();
    let out = dir.path().join("two.999");
    assert!(!pyx12(&input, &out));
    let env = read(&std::fs::read(&out).unwrap()[..]).unwrap();
    let r = env.interchange().unwrap().groups[0].sets[0]
        .response
        .clone()
        .unwrap();
    // pyx12 never writes AK9*P: one rejected set of two gives R, with AK904 = 1.
    assert_eq!(
        (r.status.as_str(), r.included, r.accepted),
        ("R", Some(2), Some(1))
    );
    assert_eq!(
        (r.sets[0].status.as_str(), r.sets[1].status.as_str()),
        ("A", "R")
    );
    assert_eq!(ack::response_status(&r), ack::Status::PartiallyAccepted);
}

fn ferry(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(support::ferry_bin())
        .current_dir(dir)
        .arg("--config")
        .arg("ferry.yaml")
        .args(args)
        .env_remove("FERRY_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn end_to_end_pyx12_plays_the_clearinghouse_through_vsftpd() {
    if !available() {
        return;
    }
    python(); // installed, or fail loudly
    let srv = RealServer::start(ServerKind::VsftpdExplicit);
    let smtp = SmtpServer::start("none");
    for d in ["inbound", "outbound"] {
        let p = srv.root().join(d);
        std::fs::create_dir_all(&p).unwrap();
        chown_to_test_user(&p);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("jobs")).unwrap();
    std::fs::write(
        root.join("ferry.yaml"),
        format!(
            "servers:\n  ch:\n{}    environment: test\nmail:\n  smtp: {{ host: localhost, port: {}, security: none, timeout: 5s }}\n  from: \"ferry <ferry@example.org>\"\n  to: [edi-ops@example.org]\n",
            srv.yaml(""),
            smtp.port
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("jobs/claims-out.yaml"),
        "direction: push\nserver: ch\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\nedi: { validate: true, sender_id: SUBMITTERID, receiver_id: RECEIVERID, acks: { ta1: 2h, \"999\": 24h } }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("jobs/acks-in.yaml"),
        "direction: pull\nserver: ch\nlocal_dir: ../inbox\nremote_dir: /outbound\nstable_for: 0s\nafter_pull: delete\nedi: { acks_for: [claims-out] }\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("outbox")).unwrap();
    std::fs::write(
        root.join("outbox/good.837"),
        x12::p837(201, 201, &["PCN0001", "PCN0002", "PCN0003"]).render(CRLF),
    )
    .unwrap();
    std::fs::write(
        root.join("outbox/broken.837"),
        x12::render(&broken_837(202), PLAIN),
    )
    .unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    for f in ["good.837", "broken.837"] {
        std::fs::File::options()
            .write(true)
            .open(root.join("outbox").join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let check = ferry(root, &["check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );

    let out = ferry(root, &["once", "claims-out"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // The clearinghouse: pyx12 answers each file that arrived, a 999 in /outbound.
    let mut verdicts = Vec::new();
    for f in ["good.837", "broken.837"] {
        let arrived = srv.root().join("inbound").join(f);
        assert!(arrived.exists(), "{f} arrived");
        let reply = srv.root().join("outbound").join(format!("{f}.999"));
        verdicts.push(pyx12(&arrived, &reply));
        chown_to_test_user(&reply);
        // pyx12's 999 ISA13 repeats within a minute and its GS06 is random: ferry matches by AK1.
    }
    assert_eq!(verdicts, vec![true, false]);
    let pending = ferry(root, &["acks", "--pending", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        2,
        "both await their acks: {rows}"
    );

    let out = ferry(root, &["once", "acks-in"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("REJECTED") && text.contains("GS06 202"),
        "{text}"
    );

    let acks = ferry(root, &["acks", "--json"]);
    assert_eq!(acks.status.code(), Some(0), "{}", stderr(&acks));
    let rows: serde_json::Value = serde_json::from_slice(&acks.stdout).unwrap();
    let row = |file: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["file"] == file)
            .unwrap_or_else(|| panic!("{file} in {rows}"))
            .clone()
    };
    let good = row("good.837");
    assert_eq!(good["interchange_control"], "000000201");
    assert_eq!(good["claims"], 3);
    assert_eq!(good["999"]["status"], "accepted", "{good}");
    assert_eq!(good["ta1"]["status"], "accepted", "{good}");
    assert_eq!(good["groups"][0]["gs06"], "201");
    assert_eq!(good["groups"][0]["ack_status"], "accepted");
    assert_eq!(good["overdue"], false);
    assert_eq!(good["pending"], false);
    let broken = row("broken.837");
    assert_eq!(broken["999"]["status"], "rejected", "{broken}");
    assert_eq!(broken["groups"][0]["sets"][0]["ack_status"], "rejected");
    assert!(
        broken["groups"][0]["sets"][0]["ack_codes"]
            .as_str()
            .unwrap()
            .contains("IK3:"),
        "{broken}"
    );
    let none_pending = ferry(root, &["acks", "--pending", "--json"]);
    assert_eq!(stdout(&none_pending).trim(), "[]");
    // The table and the status column.
    let table = stdout(&ferry(root, &["acks"]));
    assert!(
        table.contains("000000202") && table.contains("rejected"),
        "{table}"
    );
    let status = stdout(&ferry(root, &["status"]));
    assert!(status.contains("ACKS OVERDUE"), "{status}");

    // The sender drops an interchange that repeats ISA13 201: refused (exit 1),
    // left in outbound, shown by status; sent once an operator says so.
    std::fs::write(
        root.join("outbox/again.837"),
        x12::p837(201, 299, &["PCN0009"]).render(PLAIN),
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(root.join("outbox/again.837"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = ferry(root, &["once", "claims-out"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("DUPLICATE  again.837"),
        "{}",
        stdout(&out)
    );
    assert!(root.join("outbox/again.837").exists());
    let status: serde_json::Value =
        serde_json::from_slice(&ferry(root, &["status", "--json"]).stdout).unwrap();
    let job = status
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "claims-out")
        .unwrap()
        .clone();
    assert_eq!(
        (
            job["duplicates"].as_u64(),
            job["waiting"].as_u64(),
            job["acks_overdue"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{job}"
    );
    let said = ferry(root, &["resend", "claims-out", "again.837"]);
    assert_eq!(said.status.code(), Some(0), "{}", stderr(&said));
    assert!(
        stdout(&said).contains("repeats control numbers"),
        "{}",
        stdout(&said)
    );
    let out = ferry(root, &["once", "claims-out"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(srv.root().join("inbound/again.837").exists());
    let unknown = ferry(root, &["resend", "claims-out", "nothing.837"]);
    assert_eq!(unknown.status.code(), Some(2));

    // The rejection is emailed as critical, with control numbers and codes only.
    let msgs = smtp.wait_for(1, Duration::from_secs(15));
    let m = msgs
        .iter()
        .find(|m| m.contains("CRITICAL REJECTED claims-out"))
        .unwrap_or_else(|| panic!("{msgs:?}"));
    assert!(m.contains("GS06 202") && m.contains("IK3:"), "{m}");
    for secret in ["DOE", "MEMBER001", "PCN0001", "SPRINGFIELD"] {
        assert!(!m.contains(secret), "{secret} in {m}");
    }
}
