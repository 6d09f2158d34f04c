//! Claims awareness through the engine, against the in-process FTPS server:
//! the gate moving a bad 837 aside, duplicate control numbers refused across
//! restarts until `ferry resend`, acknowledgements matched per interchange,
//! group, set and claim, orphans, count mismatches, overdue deadlines and
//! missing expected files (with an injected clock), and the emails.

mod support;

use chrono::{Duration, Utc};
use ferry::alert::Alerter;
use ferry::edi::{NoticeKind, track};
use ferry::ledger::Ledger;
use ferry::transfer::FileStatus;
use ferry::transfer::operator::{Decision, decide};
use support::engine::{Setup, inprocess_yaml, run};
use support::ftps_server::{self, ServerOptions};
use support::x12::{self, CRLF, PLAIN};

const FAST: &str = "stable_for: 0s\nretry: { attempts: 2, initial_delay: 10ms, max_delay: 20ms }\n";

fn push_job(edi: &str) -> String {
    format!(
        "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nafter_push: keep\n{FAST}edi: {{ validate: true, sender_id: SUBMITTERID, receiver_id: RECEIVERID{edi} }}\n"
    )
}

fn pull_job() -> String {
    format!(
        "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nafter_pull: delete\n{FAST}edi: {{ acks_for: [out] }}\n"
    )
}

/// The in-process server with /inbound and /outbound, and a setup whose
/// `out` job pushes and `acks` job pulls acknowledgements.
async fn setup(edi: &str, mail: bool) -> (ftps_server::TestServer, Setup) {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    let mut yaml = inprocess_yaml(&srv) + "    environment: test\n";
    if mail {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        yaml += &format!(
            "mail:\n  smtp: {{ host: 127.0.0.1, port: {port}, security: none, timeout: 1s }}\n  from: \"ferry <f@example.org>\"\n  to: [desk@example.org]\n"
        );
    }
    let s = Setup::new(&yaml);
    s.job("out", &push_job(edi));
    s.job("acks", &pull_job());
    (srv, s)
}

fn inbound(srv: &ftps_server::TestServer) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(srv.root().join("inbound"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn status_of(r: &ferry::transfer::RunReport, name: &str) -> FileStatus {
    r.files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in {r:?}"))
        .status
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_837_is_moved_to_rejected_with_a_reason_and_never_sent() {
    let (srv, s) = setup("", true).await;
    s.drop_file(
        "outbox/good.837",
        &x12::p837(101, 101, &["PCN0001", "PCN0002"]).render(CRLF),
    );
    let mut bad = x12::p837(102, 102, &["PCN0003"]).segments();
    let se = bad.iter().position(|x| x.starts_with("SE*")).unwrap();
    bad[se] = "SE*7*0001".into();
    s.drop_file("outbox/bad.837", &x12::render(&bad, PLAIN));
    let mut prod = x12::p837(103, 103, &["PCN0004"]);
    prod.usage = 'P';
    s.drop_file("outbox/prod.837", &prod.render(PLAIN));
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(status_of(&r, "good.837"), FileStatus::Delivered);
    for (name, code) in [
        ("bad.837", "se01_count"),
        ("prod.837", "isa15_production_to_test"),
    ] {
        match status_of(&r, name) {
            FileStatus::Rejected { reason, moved_to } => {
                assert!(reason.contains(code), "{reason}");
                assert!(
                    moved_to.ends_with(&format!("state/rejected/out/{name}")),
                    "{moved_to}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            !s.local(&format!("outbox/{name}")).exists(),
            "{name} left the outbound folder"
        );
        let why =
            std::fs::read_to_string(s.local(&format!("state/rejected/out/{name}.reason.txt")))
                .unwrap();
        assert!(why.contains(code) && why.contains("segment"), "{why}");
        for secret in ["DOE", "MEMBER001", "PCN000"] {
            assert!(!why.contains(secret), "{secret} in {why}");
        }
    }
    assert_eq!(r.blocked(), 2);
    assert_eq!(inbound(&srv), vec!["good.837"]);
    // The rejected file's bytes are whole where it was moved.
    assert_eq!(
        std::fs::read(s.local("state/rejected/out/bad.837")).unwrap(),
        x12::render(&bad, PLAIN)
    );
    // The email: critical, names the files and codes, never claim data.
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    alerter.after_run(&cfg.jobs["out"], &r, "-");
    let outbox = engine.ledger.lock().unwrap().outbox().unwrap();
    let m = outbox
        .iter()
        .find(|m| m.subject.contains("REJECTED"))
        .unwrap_or_else(|| panic!("{outbox:?}"));
    assert!(
        m.subject
            .starts_with("[ferry] CRITICAL out: 2 files REJECTED"),
        "{}",
        m.subject
    );
    assert!(
        m.body.contains("se01_count") && m.body.contains("bad.837"),
        "{}",
        m.body
    );
    assert!(!m.body.contains("MEMBER001") && !m.body.contains("PCN0003"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_control_number_is_refused_across_restarts_until_resend() {
    let (srv, s) = setup("", false).await;
    s.drop_file(
        "outbox/first.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    {
        let (cfg, engine) = (s.config(), s.engine());
        assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    }
    // A restart: a new engine over the same state folder.
    s.drop_file(
        "outbox/same-isa13.837",
        &x12::p837(101, 201, &["PCN0002"]).render(PLAIN),
    );
    s.drop_file(
        "outbox/same-gs06.837",
        &x12::p837(301, 101, &["PCN0003"]).render(PLAIN),
    );
    s.drop_file(
        "outbox/fresh.837",
        &x12::p837(401, 401, &["PCN0004"]).render(PLAIN),
    );
    let (cfg, engine) = (s.config(), s.engine());
    let r = run(&engine, &cfg, "out").await;
    match status_of(&r, "same-isa13.837") {
        FileStatus::Duplicate { reason } => assert!(
            reason.contains("ISA13 000000101") && reason.contains("was sent to srv at"),
            "{reason}"
        ),
        o => panic!("{o:?}"),
    }
    match status_of(&r, "same-gs06.837") {
        FileStatus::Duplicate { reason } => assert!(reason.contains("GS06 101"), "{reason}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(status_of(&r, "fresh.837"), FileStatus::Delivered);
    assert!(s.local("outbox/same-isa13.837").exists() && s.local("outbox/same-gs06.837").exists());
    assert_eq!(inbound(&srv), vec!["first.837", "fresh.837"]);
    drop(engine);
    // Again after another restart: still refused, recorded once.
    let engine = s.engine();
    let r = run(&engine, &cfg, "out").await;
    assert!(matches!(
        status_of(&r, "same-isa13.837"),
        FileStatus::Duplicate { .. }
    ));
    // The operator says it must go again.
    let said = {
        let l = engine.ledger.lock().unwrap();
        decide(
            &cfg.state_dir,
            &l,
            &cfg.jobs["out"],
            "same-isa13.837",
            Decision::Resend,
            "tester",
        )
        .unwrap()
    };
    assert!(
        said.as_ref().unwrap().contains("repeats control numbers"),
        "{said:?}"
    );
    // The decision is in the audit trail, with who made it.
    let trail = engine
        .ledger
        .lock()
        .unwrap()
        .audit_entries(&ferry::ledger::AuditQuery {
            since: None,
            until: None,
            job: Some("out"),
        })
        .unwrap();
    let kinds: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert!(kinds.contains(&("edi_duplicate", "ferry")), "{kinds:?}");
    assert!(
        kinds.contains(&("edi_duplicate_override", "tester")),
        "{kinds:?}"
    );
    let r = run(&engine, &cfg, "out").await;
    assert_eq!(status_of(&r, "same-isa13.837"), FileStatus::Delivered);
    assert!(matches!(
        status_of(&r, "same-gs06.837"),
        FileStatus::Duplicate { .. }
    ));
    assert_eq!(
        inbound(&srv),
        vec!["first.837", "fresh.837", "same-isa13.837"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_are_matched_per_interchange_group_set_and_claim() {
    let (srv, s) = setup(", acks: { ta1: 2h, \"999\": 24h, 277ca: 2d }", true).await;
    let sent = x12::p837(101, 101, &["PCN0001", "PCN0002", "PCN0003"]);
    s.drop_file("outbox/claims.837", &sent.render(CRLF));
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let out = srv.root().join("outbound");
    std::fs::write(
        out.join("ta1.x12"),
        x12::ta1(&sent, "A", "000").render(PLAIN),
    )
    .unwrap();
    std::fs::write(
        out.join("ack.999"),
        x12::a999(&sent, &[("0001", "E", &["IK3*NM1*8**8"])], "E").render(CRLF),
    )
    .unwrap();
    std::fs::write(
        out.join("status.277"),
        x12::c277(
            &sent,
            &[("PCN0001", "A2"), ("PCN0002", "A7"), ("PCN0003", "A1")],
        )
        .render(PLAIN),
    )
    .unwrap();
    std::fs::write(out.join("remit.835"), x12::r835(555).render(PLAIN)).unwrap();
    // An ack for nothing ferry sent, and one counting sets we did not send.
    let other = x12::p837(909, 909, &["PCN0009"]);
    std::fs::write(
        out.join("orphan.999"),
        x12::a999(&other, &[("0001", "A", &[])], "A").render(PLAIN),
    )
    .unwrap();
    let r = run(&engine, &cfg, "acks").await;
    assert_eq!(r.delivered(), 5, "{r:?}");
    let kinds: Vec<(NoticeKind, &str)> = r.edi.iter().map(|n| (n.kind, n.job.as_str())).collect();
    assert!(kinds.contains(&(NoticeKind::Accepted, "out")), "{kinds:?}"); // the TA1
    assert!(kinds.contains(&(NoticeKind::Errors, "out")), "{kinds:?}"); // the 999 (E) and the 277CA (one rejected)
    assert!(kinds.contains(&(NoticeKind::Orphan, "acks")), "{kinds:?}");
    let ics = engine
        .ledger
        .lock()
        .unwrap()
        .interchanges(Some("out"))
        .unwrap();
    let ic = &ics[0];
    assert_eq!(ic.ta1_status.as_deref(), Some("accepted"));
    assert_eq!(ic.ta1_code.as_deref(), Some("000"));
    let g = &ic.groups[0];
    assert_eq!(g.ack_status.as_deref(), Some("accepted_with_errors"));
    assert_eq!(
        g.sets[0].ack_status.as_deref(),
        Some("accepted_with_errors")
    );
    assert_eq!(g.sets[0].ack_codes.as_deref(), Some("IK3:8@8 IK5:5"));
    assert_eq!(g.sets[0].ca_status.as_deref(), Some("partially_accepted"));
    assert_eq!(
        (g.sets[0].ca_accepted, g.sets[0].ca_rejected),
        (Some(2), Some(1))
    );
    // Nothing is overdue: everything came.
    let d = cfg.jobs["out"].edi.as_ref().unwrap().acks;
    assert_eq!(
        track::overdue_now(ic, &d, Utc::now() + Duration::days(30)),
        (false, false, false)
    );
    // Read once: a second run adds nothing.
    assert!(run(&engine, &cfg, "acks").await.edi.is_empty());
    // A rejected 999 later (a second 837): critical notice and email.
    let second = x12::p837(102, 102, &["PCN0010", "PCN0011"]);
    s.drop_file("outbox/second.837", &second.render(PLAIN));
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let mut rej = x12::a999(&second, &[("0001", "R", &["IK3*N4*9**3"])], "R");
    // AK902 says 2 sets; we sent 1 (GE01).
    let body = &mut rej.groups[0].sets[0].body;
    let ak9 = body.len() - 1;
    body[ak9] = "AK9*R*2*2*0".into();
    std::fs::write(out.join("rej.999"), rej.render(PLAIN)).unwrap();
    let r = run(&engine, &cfg, "acks").await;
    let kinds: Vec<NoticeKind> = r.edi.iter().map(|n| n.kind).collect();
    assert!(
        kinds.contains(&NoticeKind::Rejected) && kinds.contains(&NoticeKind::CountMismatch),
        "{:?}",
        r.edi
    );
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    alerter.after_run(&cfg.jobs["acks"], &r, "-");
    let outbox = engine.ledger.lock().unwrap().outbox().unwrap();
    let subjects: Vec<&str> = outbox.iter().map(|m| m.subject.as_str()).collect();
    assert!(
        subjects.contains(&"[ferry] CRITICAL REJECTED out: 1 acknowledgement(s) REJECTED"),
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("[ferry] COUNT MISMATCH out")),
        "{subjects:?}"
    );
    for m in &outbox {
        assert!(
            !m.body.contains("PCN00") && !m.body.contains("MEMBER001") && !m.body.contains("DOE"),
            "{}",
            m.body
        );
    }
    let mismatch = outbox
        .iter()
        .find(|m| m.subject.contains("COUNT MISMATCH"))
        .unwrap();
    assert!(
        mismatch
            .body
            .contains("counts 2 transaction sets (AK902); ferry sent 1 (GE01)"),
        "{}",
        mismatch.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_ack_is_reported_once_and_a_late_one_resolves_it() {
    let (srv, s) = setup(", acks: { ta1: 2h, \"999\": 24h, 277ca: 2d }", true).await;
    let sent = x12::p837(101, 101, &["PCN0001"]);
    s.drop_file("outbox/claims.837", &sent.render(PLAIN));
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let d = cfg.jobs["out"].edi.as_ref().unwrap().acks;
    let t0 = Utc::now();
    // The clock is ours: nothing is due yet, then the TA1, then the 999 and 277CA.
    let l = Ledger::open(&cfg.state_dir).unwrap();
    assert!(track::overdue(&l, "out", &d, t0).unwrap().is_empty());
    let at_3h = track::overdue(&l, "out", &d, t0 + Duration::hours(3)).unwrap();
    assert_eq!(at_3h.len(), 1, "{at_3h:?}");
    assert!(
        at_3h[0].text.starts_with("no TA1 for ISA13 000000101"),
        "{}",
        at_3h[0].text
    );
    assert!(
        track::overdue(&l, "out", &d, t0 + Duration::hours(4))
            .unwrap()
            .is_empty(),
        "reported once"
    );
    let at_3d = track::overdue(&l, "out", &d, t0 + Duration::days(3)).unwrap();
    let texts: Vec<&str> = at_3d.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("no 999 for GS01 HC GS06 101")
            && texts[1].starts_with("no 277CA for ST02 0001"),
        "{texts:?}"
    );
    assert!(
        at_3d
            .iter()
            .all(|n| n.kind == NoticeKind::Overdue && n.job == "out")
    );
    let ic = &l.interchanges(Some("out")).unwrap()[0];
    assert_eq!(
        track::overdue_now(ic, &d, t0 + Duration::days(3)),
        (true, true, true)
    );
    assert_eq!(l.overdue_open().unwrap(), 3);
    // The email for them: one per push job and kind, control numbers only.
    let report = ferry::transfer::RunReport {
        job: "acks".into(),
        direction: ferry::config::Direction::Pull,
        files: Vec::new(),
        connection_error: None,
        duration: std::time::Duration::ZERO,
        certificate_expiry: None,
        listing_unparsed: 0,
        edi: at_3d.clone(),
        run_id: None,
    };
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    alerter.after_run(&cfg.jobs["acks"], &report, "-");
    let outbox = engine.ledger.lock().unwrap().outbox().unwrap();
    let m = outbox
        .iter()
        .find(|m| m.subject.contains("OVERDUE"))
        .unwrap_or_else(|| panic!("{outbox:?}"));
    assert_eq!(
        m.subject,
        "[ferry] OVERDUE out: 2 acknowledgement(s) overdue"
    );
    assert!(
        m.body
            .contains("no 999 for GS01 HC GS06 101 of ISA13 000000101"),
        "{}",
        m.body
    );
    assert!(!m.body.contains("PCN0001"));
    // The late 999 arrives: the group is answered, no longer overdue.
    std::fs::write(
        srv.root().join("outbound/late.999"),
        x12::a999(&sent, &[("0001", "A", &[])], "A").render(PLAIN),
    )
    .unwrap();
    let r = run(&engine, &cfg, "acks").await;
    assert!(
        r.edi.iter().any(|n| n.kind == NoticeKind::Accepted),
        "{:?}",
        r.edi
    );
    let ic = &l.interchanges(Some("out")).unwrap()[0];
    assert_eq!(ic.groups[0].ack_status.as_deref(), Some("accepted"));
    assert_eq!(
        track::overdue_now(ic, &d, t0 + Duration::days(3)),
        (true, false, true)
    );
    assert_eq!(l.overdue_open().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expected_file_that_never_came_is_reported_once() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job("remit", &format!("direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\n{FAST}expect: {{ schedule: \"0 6 * * 2\", within: 2h }}\n"));
    let cfg = s.config();
    let l = Ledger::open(&cfg.state_dir).unwrap();
    let e = cfg.jobs["remit"].expect.clone().unwrap();
    // Tuesday 2026-12-01 06:00 UTC + 2h closes at 08:00.
    let tue = chrono::DateTime::parse_from_rfc3339("2026-12-01T07:59:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let (start, _) = track::last_window(&e, tue).unwrap();
    assert_eq!(
        start.to_rfc3339(),
        "2026-11-24T06:00:00+00:00",
        "the window still open does not count"
    );
    let after = tue + Duration::minutes(2);
    let n = track::expected_missing(&l, "remit", &e, after)
        .unwrap()
        .unwrap();
    assert_eq!(n.kind, NoticeKind::Missing);
    assert!(
        n.text
            .contains("between 2026-12-01 06:00 UTC and 2026-12-01 08:00 UTC"),
        "{}",
        n.text
    );
    assert!(
        track::expected_missing(&l, "remit", &e, after + Duration::hours(1))
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrected_file_replacing_a_duplicate_goes_and_the_old_block_does_not_let_the_duplicate_through()
 {
    let (srv, s) = setup("", false).await;
    s.drop_file(
        "outbox/first.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let dup = x12::p837(101, 201, &["PCN0002"]).render(PLAIN);
    s.drop_file("outbox/b.837", &dup);
    assert!(matches!(
        status_of(&run(&engine, &cfg, "out").await, "b.837"),
        FileStatus::Duplicate { .. }
    ));
    assert_eq!(
        ferry::transfer::local::waiting_count(
            &cfg.jobs["out"],
            Some(&engine.ledger.lock().unwrap())
        )
        .unwrap(),
        0,
        "a duplicate waits for an operator, not a run"
    );
    // The sender fixes it: new control numbers, same name.
    s.drop_file(
        "outbox/b.837",
        &x12::p837(102, 202, &["PCN0002"]).render(PLAIN),
    );
    assert_eq!(
        status_of(&run(&engine, &cfg, "out").await, "b.837"),
        FileStatus::Delivered
    );
    // The old duplicate again, under that name: still refused.
    s.drop_file("outbox/b.837", &dup);
    assert!(matches!(
        status_of(&run(&engine, &cfg, "out").await, "b.837"),
        FileStatus::Duplicate { .. }
    ));
    assert_eq!(inbound(&srv), vec!["b.837", "first.837"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_between_runs_alerts_a_passed_deadline_once_and_nothing_else() {
    let (_srv, s) = setup(", acks: { ta1: 2h }", true).await;
    s.drop_file(
        "outbox/claims.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let job = &cfg.jobs["out"];
    assert!(engine.check_deadlines(job, Utc::now()).edi.is_empty());
    let later = Utc::now() + Duration::hours(3);
    let report = engine.check_deadlines(job, later);
    assert_eq!(report.edi.len(), 1, "{:?}", report.edi);
    assert!(report.files.is_empty());
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    alerter.after_deadlines(job, &report);
    let subjects: Vec<String> = engine
        .ledger
        .lock()
        .unwrap()
        .outbox()
        .unwrap()
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(
        subjects,
        vec!["[ferry] OVERDUE out: 1 acknowledgement(s) overdue".to_string()]
    );
    assert!(engine.check_deadlines(job, later).edi.is_empty(), "once");
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_answered_over_several_277cas_roll_up_together() {
    let (srv, s) = setup(", acks: { 277ca: 2d }", false).await;
    let sent = x12::p837(101, 101, &["PCN0001", "PCN0002"]);
    s.drop_file("outbox/claims.837", &sent.render(PLAIN));
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    let out = srv.root().join("outbound");
    std::fs::write(
        out.join("a.277"),
        x12::c277(&sent, &[("PCN0001", "A2")]).render(PLAIN),
    )
    .unwrap();
    let r = run(&engine, &cfg, "acks").await;
    assert!(
        r.edi[0]
            .text
            .contains("accepted (1 claims accepted, 0 rejected, 1 not answered)"),
        "{:?}",
        r.edi
    );
    std::fs::write(
        out.join("b.277"),
        x12::c277(&sent, &[("PCN0002", "A7")]).render(PLAIN),
    )
    .unwrap();
    let r = run(&engine, &cfg, "acks").await;
    assert_eq!(r.edi[0].kind, NoticeKind::Errors, "{:?}", r.edi);
    assert!(
        r.edi[0]
            .text
            .contains("partially_accepted (1 claims accepted, 1 rejected, 0 not answered)"),
        "{:?}",
        r.edi
    );
    let set = &engine
        .ledger
        .lock()
        .unwrap()
        .interchanges(Some("out"))
        .unwrap()[0]
        .groups[0]
        .sets[0]
        .clone();
    assert_eq!(
        (set.ca_status.as_deref(), set.ca_accepted, set.ca_rejected),
        (Some("partially_accepted"), Some(1), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_are_read_before_a_downstream_system_takes_the_placed_file() {
    let (srv, s) = setup("", false).await;
    let sent = x12::p837(101, 101, &["PCN0001"]);
    s.drop_file("outbox/claims.837", &sent.render(PLAIN));
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    std::fs::write(
        srv.root().join("outbound/ack.999"),
        x12::a999(&sent, &[("0001", "A", &[])], "A").render(PLAIN),
    )
    .unwrap();
    // The billing system takes every file the moment it is placed.
    let inbox = s.local("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let taker = {
        let (inbox, stop) = (inbox.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut taken = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&inbox).unwrap().flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if !n.starts_with('.') && std::fs::remove_file(e.path()).is_ok() {
                        taken += 1;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            taken
        })
    };
    let r = run(&engine, &cfg, "acks").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(taker.join().unwrap(), 1);
    assert_eq!(r.delivered(), 1);
    assert!(
        r.edi.iter().any(|n| n.kind == NoticeKind::Accepted),
        "{:?}",
        r.edi
    );
    let ic = &engine
        .ledger
        .lock()
        .unwrap()
        .interchanges(Some("out"))
        .unwrap()[0];
    assert_eq!(ic.groups[0].ack_status.as_deref(), Some("accepted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_retention_keeps_duplicate_control_and_the_audit_chain_intact() {
    let (srv, s) = setup("", false).await;
    // Archive (not keep): retention may prune this job's finished file records.
    let job = push_job("").replace("after_push: keep\n", "after_push: archive\n");
    s.job("out", &job);
    s.drop_file(
        "outbox/first.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    let (cfg, engine) = (s.config(), s.engine());
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    s.drop_file(
        "outbox/again.837",
        &x12::p837(101, 201, &["PCN0002"]).render(PLAIN),
    );
    assert!(matches!(
        status_of(&run(&engine, &cfg, "out").await, "again.837"),
        FileStatus::Duplicate { .. }
    ));
    let future = ferry::ledger::rfc3339(Utc::now() + Duration::days(1));
    let pruned = engine
        .ledger
        .lock()
        .unwrap()
        .prune_before(&future, "ferry", &[])
        .unwrap();
    assert!(pruned.files >= 1, "{pruned:?}");
    // The file record is gone; its interchange still blocks a repeat.
    let r = run(&engine, &cfg, "out").await;
    assert!(
        matches!(status_of(&r, "again.837"), FileStatus::Duplicate { .. }),
        "{r:?}"
    );
    assert_eq!(inbound(&srv), vec!["first.837"]);
    let verdict = engine.ledger.lock().unwrap().verify_audit().unwrap();
    assert!(
        matches!(verdict, ferry::ledger::Verdict::Intact { .. }),
        "{verdict:?}"
    );
}

/// The agent between runs, on a paused tokio clock: nothing is overdue an
/// hour after delivery, the TA1 is (once) past its 2 h deadline.
#[test]
fn the_agent_reports_an_overdue_ack_on_a_paused_clock() {
    let real = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (srv, s) = real.block_on(setup(", acks: { ta1: 2h }", false));
    s.drop_file(
        "outbox/claims.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    let cfg = s.config();
    real.block_on(async {
        let engine = s.engine();
        assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    });
    // The server (and its runtime) stay up: the configuration names its CA file.
    let paused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    paused.block_on(async {
        let engine = std::sync::Arc::new(s.engine());
        let alerter = Alerter::start(None, engine.ledger.clone());
        let runner = std::sync::Arc::new(ferry::agent::EngineRunner {
            engine: engine.clone(),
            alerter,
            metrics: None,
        });
        let never: ferry::watch::HasWork = std::sync::Arc::new(|_: &ferry::config::Job| false);
        let agent =
            ferry::agent::Agent::new(cfg.clone(), runner, ferry::agent::Clock::system(), never);
        let (ctl, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = tokio::spawn(agent.run(ctl_rx, Default::default()));
        let overdue = || engine.ledger.lock().unwrap().overdue_open().unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(overdue(), 0, "an hour after delivery nothing is due");
        tokio::time::sleep(std::time::Duration::from_secs(3600 + 120)).await;
        assert_eq!(overdue(), 1, "the TA1 is past its 2 h deadline");
        ctl.send(ferry::agent::Control::Shutdown).unwrap();
        handle.await.unwrap();
    });
    drop(srv);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_export_the_interchanges_with_an_overdue_ack() {
    let (_srv, s) = setup(", acks: { ta1: 1ms }", false).await;
    s.drop_file(
        "outbox/claims.837",
        &x12::p837(101, 101, &["PCN0001"]).render(PLAIN),
    );
    let (cfg, engine) = (s.config(), s.engine());
    let metrics = ferry::observe::Metrics::new(&cfg, &engine);
    metrics.refresh(&engine);
    assert!(
        metrics
            .openmetrics()
            .contains("ferry_job_acknowledgements_overdue{job=\"out\"} 0"),
        "{}",
        metrics.openmetrics()
    );
    assert_eq!(run(&engine, &cfg, "out").await.delivered(), 1);
    std::thread::sleep(std::time::Duration::from_millis(5));
    metrics.refresh(&engine);
    let text = metrics.openmetrics();
    assert!(
        text.contains("ferry_job_acknowledgements_overdue{job=\"out\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("ferry_job_acknowledgements_overdue{job=\"acks\"}"),
        "pull jobs have no series: {text}"
    );
}
