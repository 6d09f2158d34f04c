//! A corpus of malformed configurations. Each must make `ferry check` exit 2
//! without a panic, and name the exact file:line:column and what was wrong.

mod support;

use support::{BASE_AGENT, BASE_JOB, Fixture, stderr};

/// Runs `ferry check` on the base configuration with `files` written over it
/// and asserts exit 2, the location and the message fragment.
fn assert_rejected(files: &[(&str, &[u8])], location: &str, fragment: &str) {
    let fx = Fixture::new(files);
    let out = fx.ferry(&["check"]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "ferry panicked:\n{err}");
    assert_eq!(out.status.code(), Some(2), "exit status; stderr:\n{err}");
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{location}:")))
        .unwrap_or_else(|| panic!("no error at {location}; stderr:\n{err}"));
    assert!(
        line.contains(fragment),
        "error at {location} does not say '{fragment}':\n{err}"
    );
    assert!(
        !err.contains("s3cret-Pa55word"),
        "a password appeared in the error output:\n{err}"
    );
}

fn job(extra: &str) -> Vec<u8> {
    format!("{BASE_JOB}{extra}").into_bytes()
}

fn agent(extra: &str) -> Vec<u8> {
    format!("{BASE_AGENT}{extra}").into_bytes()
}

macro_rules! rejected {
    ($name:ident, [$(($path:expr, $content:expr)),* $(,)?], $loc:expr, $frag:expr) => {
        #[test]
        fn $name() {
            assert_rejected(&[$(($path, &$content[..])),*], $loc, $frag);
        }
    };
}

// Typos and unknown keys.
rejected!(
    misspelled_job_key_is_named_with_the_keys_expected,
    [("jobs/a.yaml", job("shedule: \"* * * * *\"\n"))],
    "jobs/a.yaml:5:1",
    "unknown field 'shedule', expected one of"
);
rejected!(
    misspelled_top_level_key_is_named,
    [("ferry.yaml", agent("stat_dir: state\n"))],
    "ferry.yaml:6:1",
    "unknown field 'stat_dir'"
);
rejected!(
    misspelled_server_key_is_named,
    [("ferry.yaml", agent("    passwrd: x\n"))],
    "ferry.yaml:6:5",
    "unknown field 'passwrd'"
);
rejected!(
    misspelled_retry_key_is_named,
    [("jobs/a.yaml", job("retry: { attempt: 3 }\n"))],
    "jobs/a.yaml:5:10",
    "unknown field 'attempt'"
);

// Wrong types and values.
rejected!(
    port_that_is_not_a_number_is_refused,
    [("ferry.yaml", agent("    port: twenty-one\n"))],
    "ferry.yaml:6:11",
    "expected a whole number from 1 to 65535"
);
rejected!(
    port_above_65535_is_refused,
    [("ferry.yaml", agent("    port: 70000\n"))],
    "ferry.yaml:6:11",
    "expected a whole number from 1 to 65535"
);
rejected!(
    port_zero_is_refused,
    [("ferry.yaml", agent("    port: 0\n"))],
    "ferry.yaml:6:11",
    "port 0 is not a valid port"
);
rejected!(
    unknown_direction_lists_the_valid_ones,
    [(
        "jobs/a.yaml",
        b"direction: sideways\nserver: ch\nlocal_dir: ../out\nremote_dir: /in\n".to_vec()
    )],
    "jobs/a.yaml:1:12",
    "unknown variant 'sideways', expected one of push, pull"
);
rejected!(
    unknown_verify_mode_lists_the_valid_ones,
    [("jobs/a.yaml", job("verify: sha1\n"))],
    "jobs/a.yaml:5:9",
    "unknown variant 'sha1', expected one of auto, hash, size, none"
);
rejected!(
    unknown_tls_mode_lists_the_valid_ones,
    [("ferry.yaml", agent("    tls: starttls\n"))],
    "ferry.yaml:6:10",
    "unknown variant 'starttls', expected one of explicit, implicit, none"
);
rejected!(
    unknown_log_format_lists_the_valid_ones,
    [("ferry.yaml", agent("log: { format: xml }\n"))],
    "ferry.yaml:6:16",
    "unknown variant 'xml', expected one of text, json"
);
rejected!(
    include_that_is_not_a_list_is_refused,
    [("jobs/a.yaml", job("include: 5\n"))],
    "jobs/a.yaml:5:10",
    "expected a list"
);
rejected!(
    missing_required_job_key_is_named,
    [(
        "jobs/a.yaml",
        b"direction: push\nserver: ch\nlocal_dir: ../out\n".to_vec()
    )],
    "jobs/a.yaml:3:1",
    "missing field 'remote_dir'"
);
rejected!(
    top_level_list_instead_of_mapping_is_refused,
    [("ferry.yaml", b"- servers\n- jobs\n".to_vec())],
    "ferry.yaml:1:1",
    "expected"
);

// Durations.
rejected!(
    duration_without_unit_is_refused,
    [("jobs/a.yaml", job("stable_for: 5\n"))],
    "jobs/a.yaml:5:13",
    "invalid duration '5': missing unit"
);
rejected!(
    duration_with_unknown_unit_is_refused,
    [("ferry.yaml", agent("    timeout: 10x\n"))],
    "ferry.yaml:6:14",
    "unknown unit 'x'"
);
rejected!(
    zero_timeout_is_refused,
    [("ferry.yaml", agent("    timeout: 0s\n"))],
    "ferry.yaml:6:14",
    "timeout must be longer than 0"
);
rejected!(
    max_delay_shorter_than_initial_delay_is_refused,
    [(
        "jobs/a.yaml",
        job("retry: { initial_delay: 1m, max_delay: 10s }\n")
    )],
    "jobs/a.yaml:5:40",
    "max_delay (10s) is shorter than initial_delay (1m)"
);
rejected!(
    zero_retry_attempts_are_refused,
    [("jobs/a.yaml", job("retry: { attempts: 0 }\n"))],
    "jobs/a.yaml:5:20",
    "attempts must be at least 1"
);

// Schedules and time zones.
rejected!(
    cron_hour_out_of_range_names_job_and_field,
    [("jobs/a.yaml", job("schedule: \"0 25 * * *\"\n"))],
    "jobs/a.yaml:5:11",
    "job 'a': invalid cron schedule '0 25 * * *': bad hour field '25'"
);
rejected!(
    cron_with_four_fields_is_refused,
    [("jobs/a.yaml", job("schedule: \"* * * *\"\n"))],
    "jobs/a.yaml:5:11",
    "found 4 fields, expected 5"
);
rejected!(
    cron_weekday_out_of_range_names_the_field,
    [("jobs/a.yaml", job("schedule: \"0 6 * * 1-9\"\n"))],
    "jobs/a.yaml:5:11",
    "bad day-of-week field '1-9'"
);
rejected!(
    unknown_time_zone_is_refused,
    [("jobs/a.yaml", job("timezone: Mars/Olympus\n"))],
    "jobs/a.yaml:5:11",
    "unknown time zone 'Mars/Olympus'"
);

// Cross-references and cross-checks.
rejected!(
    unknown_server_lists_the_known_ones,
    [(
        "jobs/a.yaml",
        b"direction: push\nserver: nope\nlocal_dir: ../out\nremote_dir: /in\n".to_vec()
    )],
    "jobs/a.yaml:2:9",
    "unknown server 'nope', expected one of ch"
);
rejected!(
    missing_environment_variable_is_named,
    [(
        "ferry.yaml",
        b"servers:\n  ch:\n    host: 127.0.0.1\n    password: ${FERRY_TEST_SURELY_UNSET}\n"
            .to_vec()
    )],
    "ferry.yaml:4:15",
    "environment variable 'FERRY_TEST_SURELY_UNSET' is not set"
);
rejected!(
    tls_none_without_allow_insecure_is_refused,
    [("ferry.yaml", agent("    tls: none\n"))],
    "ferry.yaml:6:10",
    "needs allow_insecure: true"
);
rejected!(
    after_pull_on_a_push_job_is_refused,
    [("jobs/a.yaml", job("after_pull: delete\n"))],
    "jobs/a.yaml:5:13",
    "after_pull applies only to pull jobs"
);
rejected!(
    watch_on_a_pull_job_is_refused,
    [(
        "jobs/a.yaml",
        b"direction: pull\nserver: ch\nlocal_dir: ../in\nremote_dir: /out\nwatch: true\n".to_vec()
    )],
    "jobs/a.yaml:5:8",
    "watch applies only to push jobs"
);
rejected!(
    after_push_on_a_pull_job_is_refused,
    [(
        "jobs/a.yaml",
        b"direction: pull\nserver: ch\nlocal_dir: ../in\nremote_dir: /out\nafter_push: keep\n"
            .to_vec()
    )],
    "jobs/a.yaml:5:13",
    "after_push applies only to push jobs"
);
rejected!(
    after_pull_move_without_folder_is_refused,
    [(
        "jobs/a.yaml",
        b"direction: pull\nserver: ch\nlocal_dir: ../in\nremote_dir: /out\nafter_pull: \"move:\"\n"
            .to_vec()
    )],
    "jobs/a.yaml:5:13",
    "expected one of delete, keep, move:/remote/folder"
);
rejected!(
    password_and_password_file_together_are_refused,
    [("ferry.yaml", agent("    password_file: pw.txt\n"))],
    "ferry.yaml:6:20",
    "either password or password_file, not both"
);
rejected!(
    unreadable_password_file_is_named,
    [(
        "ferry.yaml",
        b"servers:\n  ch:\n    host: h\n    password_file: secrets/none.txt\n".to_vec()
    )],
    "ferry.yaml:4:20",
    "cannot read password_file"
);
rejected!(
    malformed_pin_is_refused,
    [("ferry.yaml", agent("    pin_sha256: \"AB:CD\"\n"))],
    "ferry.yaml:6:17",
    "expected 32 bytes in hex"
);
rejected!(
    unsupported_tls_version_is_refused,
    [("ferry.yaml", agent("    tls_versions: [\"1.1\"]\n"))],
    "ferry.yaml:6:20",
    "unsupported TLS version '1.1'"
);
rejected!(
    client_cert_without_key_is_refused,
    [
        ("ferry.yaml", agent("    client_cert: acme.pem\n")),
        ("acme.pem", b"x".to_vec())
    ],
    "ferry.yaml:6:18",
    "client_cert and client_key go together"
);
rejected!(
    local_dir_that_is_a_file_is_refused,
    [("out", b"not a folder".to_vec())],
    "jobs/a.yaml:3:12",
    "exists but is not a folder"
);
rejected!(
    invalid_include_glob_is_refused,
    [("jobs/a.yaml", job("include: [\"[abc\"]\n"))],
    "jobs/a.yaml:5:11",
    "invalid include pattern '[abc'"
);
rejected!(
    empty_include_list_is_refused,
    [("jobs/a.yaml", job("include: []\n"))],
    "jobs/a.yaml:5:10",
    "include is empty"
);
rejected!(
    invalid_alert_address_is_refused,
    [("jobs/a.yaml", job("alert_to: [not-an-address]\n"))],
    "jobs/a.yaml:5:12",
    "invalid email address 'not-an-address'"
);
rejected!(
    mail_without_recipients_is_refused,
    [(
        "ferry.yaml",
        agent("mail:\n  smtp: { host: smtp.example.org }\n  from: ferry@example.org\n  to: []\n")
    )],
    "ferry.yaml:9:7",
    "mail.to is empty"
);

// YAML itself.
rejected!(
    duplicate_key_is_refused,
    [("jobs/a.yaml", job("server: other\n"))],
    "jobs/a.yaml:5:1",
    "duplicate mapping key: server"
);
rejected!(
    yes_is_not_a_boolean,
    [("jobs/a.yaml", job("watch: yes\n"))],
    "jobs/a.yaml:5:8",
    "expected true or false (yes/no/on/off are not booleans here)"
);
rejected!(
    on_is_not_a_boolean,
    [("ferry.yaml", agent("    passive_nat_workaround: on\n"))],
    "ferry.yaml:6:29",
    "expected true or false"
);
rejected!(
    tab_indentation_is_refused,
    [("ferry.yaml", b"servers:\n  ch:\n\thost: h\n".to_vec())],
    "ferry.yaml:3:1",
    "tab character in indentation"
);
rejected!(
    empty_job_file_is_refused,
    [("jobs/a.yaml", b"".to_vec())],
    "jobs/a.yaml:1:1",
    "file is empty"
);
rejected!(
    non_utf8_bytes_are_refused_with_their_position,
    [("jobs/a.yaml", b"direction: push\nserver: c\xffh\n".to_vec())],
    "jobs/a.yaml:2:10",
    "invalid UTF-8 byte 0xff"
);
rejected!(
    ten_megabyte_file_is_refused_without_parsing,
    [("jobs/a.yaml", {
        let mut v = BASE_JOB.as_bytes().to_vec();
        v.extend(std::iter::repeat_n(b'#', 10 * 1024 * 1024));
        v
    })],
    "jobs/a.yaml:1:1",
    "a configuration file may be at most 1048576 bytes"
);
rejected!(
    unclosed_flow_list_is_a_syntax_error,
    [("jobs/a.yaml", job("include: [\"*.837\"\n"))],
    "jobs/a.yaml:5:10",
    "unclosed bracket '['"
);
rejected!(
    unquoted_variable_in_flow_mapping_gets_a_hint,
    [(
        "ferry.yaml",
        agent(
            "mail:\n  smtp: { host: h, password: ${SMTP_PW} }\n  from: f@example.org\n  to: [a@example.org]\n"
        )
    )],
    "ferry.yaml:7:31",
    "quote values that use ${...}"
);
rejected!(
    job_file_name_with_capitals_is_refused,
    [("jobs/Acme.yaml", BASE_JOB.as_bytes().to_vec())],
    "jobs/Acme.yaml",
    "must match [a-z0-9][a-z0-9_-]*"
);
rejected!(
    missing_jobs_folder_is_reported,
    [("ferry.yaml", agent("jobs_dir: nowhere\n"))],
    "ferry.yaml:6:11",
    "cannot read the jobs folder"
);

#[test]
fn every_error_of_every_file_is_reported_in_one_run() {
    let fx = Fixture::new(&[
        ("ferry.yaml", &agent("    timeout: 5\n")),
        (
            "jobs/a.yaml",
            &job("schedule: \"0 99 * * *\"\nstable_for: 1w\n"),
        ),
        (
            "jobs/b.yaml",
            b"direction: push\nserver: nope\nlocal_dir: ../out\nremote_dir: /in\nwatch: no\n",
        ),
    ]);
    let out = fx.ferry(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        "ferry.yaml:6:14: invalid duration '5'",
        "jobs/a.yaml:5:11: job 'a': invalid cron schedule",
        "jobs/a.yaml:6:13: invalid duration '1w'",
        "jobs/b.yaml:5:8: expected true or false",
    ] {
        assert!(err.contains(expected), "missing '{expected}' in:\n{err}");
    }
    assert!(err.contains("invalid configuration (4 errors)"), "{err}");
}

#[test]
fn a_valid_configuration_passes_check() {
    let fx = Fixture::new(&[]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// Files the configuration names are read and checked by `check` (hardening 1, 2).
fn with_server_files(extra: &str, files: &[(&str, Vec<u8>)]) {
    let mut all: Vec<(&str, &[u8])> = Vec::new();
    let a = agent(extra);
    all.push(("ferry.yaml", &a));
    for (p, c) in files {
        all.push((p, c));
    }
    assert_rejected(&all, "ferry.yaml:6:14", &expect_for(extra));
}

fn expect_for(extra: &str) -> String {
    extra.split('#').nth(1).unwrap_or("").trim().to_string()
}

#[test]
fn a_ca_file_that_is_not_a_usable_pem_certificate_is_refused_by_check() {
    let pki = support::certs::TestPki::new();
    let leaf = pki.leaf(&["localhost"]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "    ca_file: ca.pem  # holds no PEM certificate\n",
            b"just some text\n".to_vec(),
        ),
        (
            "    ca_file: ca.pem  # holds a private key, not a certificate\n",
            leaf.key_pem.clone().into_bytes(),
        ),
        (
            "    ca_file: ca.pem  # it looks like DER\n",
            pki.ca_der.clone(),
        ),
        (
            "    ca_file: ca.pem  # ca_file\n",
            pki.ca_pem.as_bytes()[..pki.ca_pem.len() / 2].to_vec(),
        ),
    ];
    for (extra, content) in cases {
        with_server_files(extra, &[("ca.pem", content)]);
    }
}

#[test]
fn a_client_key_that_does_not_match_its_certificate_is_refused_by_check() {
    let pki = support::certs::TestPki::new();
    let mine = pki.client_leaf("acme");
    let other = pki.client_leaf("someone-else");
    let fx = Fixture::new(&[
        (
            "ferry.yaml",
            &agent("    client_cert: acme.pem\n    client_key: other.key\n"),
        ),
        ("acme.pem", mine.cert_pem.as_bytes()),
        ("other.key", other.key_pem.as_bytes()),
    ]);
    let out = fx.ferry(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ferry.yaml:7:17") && err.contains("does not belong to client_cert"),
        "{err}"
    );
    // A client certificate that is not PEM.
    let fx = Fixture::new(&[
        (
            "ferry.yaml",
            &agent("    client_cert: acme.pem\n    client_key: acme.key\n"),
        ),
        ("acme.pem", b"not a certificate"),
        ("acme.key", mine.key_pem.as_bytes()),
    ]);
    let out = fx.ferry(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ferry.yaml:6:18") && err.contains("client_cert"),
        "{err}"
    );
}

#[test]
fn files_that_never_end_are_refused_with_their_size_limit() {
    let no_password = BASE_AGENT.replace("    password: s3cret-Pa55word\n", "");
    let cfg = format!("{no_password}    password_file: /dev/zero\n");
    assert_rejected(
        &[("ferry.yaml", cfg.as_bytes())],
        "ferry.yaml:5:20",
        "larger than 64 KiB",
    );
    assert_rejected(
        &[("ferry.yaml", &agent("    ca_file: /dev/zero\n"))],
        "ferry.yaml:6:14",
        "larger than 1024 KiB",
    );
}

// Hardening 5, 6, 7: an unusable state folder, '..' in remote paths, a schedule that never fires.
rejected!(
    a_state_dir_under_a_regular_file_is_refused_with_its_location,
    [
        ("ferry.yaml", agent("state_dir: afile/state\n")),
        ("afile", b"I am a file".to_vec())
    ],
    "ferry.yaml:6:12",
    "state_dir"
);
#[test]
fn parent_references_in_remote_paths_are_refused() {
    let j = BASE_JOB.replace("remote_dir: /inbound", "remote_dir: /inbound/../etc");
    assert_rejected(
        &[("jobs/a.yaml", j.as_bytes())],
        "jobs/a.yaml:4:13",
        "contains '..'",
    );
    let pull = "direction: pull\nserver: ch\nlocal_dir: ../in\nremote_dir: /outbound\nafter_pull: \"move:/outbound/../../x\"\n";
    assert_rejected(
        &[("jobs/a.yaml", pull.as_bytes())],
        "jobs/a.yaml:5:13",
        "contains '..'",
    );
}

rejected!(
    a_schedule_that_can_never_fire_is_refused,
    [("jobs/a.yaml", job("schedule: \"0 0 30 2 *\"\n"))],
    "jobs/a.yaml:5:11",
    "never fires"
);

#[test]
fn check_warns_about_files_in_the_jobs_folder_that_are_not_jobs() {
    let fx = Fixture::new(&[("jobs/acme.yml", BASE_JOB.as_bytes())]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = support::stdout(&out);
    assert!(
        text.contains("acme.yml: not a job (job files end in .yaml); rename it to .yaml"),
        "{text}"
    );
}

// Claims awareness: `edi`, `expect`, `environment`.
const PULL: &str = "direction: pull\nserver: ch\nlocal_dir: ../in\nremote_dir: /outbound\n";

fn pull(extra: &str) -> Vec<u8> {
    format!("{PULL}{extra}").into_bytes()
}

rejected!(
    an_unknown_acknowledgement_deadline_is_named,
    [("jobs/a.yaml", job("edi: { acks: { \"998\": 2h } }\n"))],
    "jobs/a.yaml:5:23",
    "unknown acknowledgement '998' in edi.acks, expected one of ta1, \"999\", 277ca"
);
rejected!(
    a_bad_acknowledgement_deadline_is_located,
    [("jobs/a.yaml", job("edi:\n  acks: { ta1: soon }\n"))],
    "jobs/a.yaml:6:16",
    "invalid duration 'soon'"
);
rejected!(
    a_bad_duplicate_window_is_located,
    [("jobs/a.yaml", job("edi: { duplicate_window: 10x }\n"))],
    "jobs/a.yaml:5:26",
    "unknown unit 'x'"
);
rejected!(
    an_empty_sender_id_is_refused,
    [("jobs/a.yaml", job("edi: { sender_id: \"\" }\n"))],
    "jobs/a.yaml:5:19",
    "edi.sender_id must be 1 to 15 printable characters"
);
rejected!(
    push_only_edi_keys_on_a_pull_job_are_refused,
    [
        (
            "jobs/a.yaml",
            pull("edi: { validate: true, acks_for: [b] }\n")
        ),
        ("jobs/b.yaml", job(""))
    ],
    "jobs/a.yaml:5:18",
    "edi.validate applies only to push jobs"
);
rejected!(
    acks_for_on_a_push_job_is_refused,
    [("jobs/a.yaml", job("edi: { acks_for: [a] }\n"))],
    "jobs/a.yaml:5:18",
    "edi.acks_for applies only to pull jobs"
);
rejected!(
    acks_for_naming_no_job_is_refused,
    [("jobs/a.yaml", pull("edi: { acks_for: [claims-out] }\n"))],
    "jobs/a.yaml:5:19",
    "edi.acks_for names 'claims-out', which is not a job"
);
rejected!(
    acks_for_naming_a_pull_job_is_refused,
    [("jobs/a.yaml", pull("edi: { acks_for: [a] }\n"))],
    "jobs/a.yaml:5:19",
    "'a', a pull job; expected a push job"
);
rejected!(
    expect_on_a_push_job_is_refused,
    [(
        "jobs/a.yaml",
        job("expect: { schedule: \"0 6 * * 2\", within: 2h }\n")
    )],
    "jobs/a.yaml:5:9",
    "expect applies only to pull jobs"
);
rejected!(
    a_bad_expect_schedule_is_located,
    [(
        "jobs/a.yaml",
        pull("expect: { schedule: \"0 6 * * funday\", within: 2h }\n")
    )],
    "jobs/a.yaml:5:21",
    "expect:"
);
rejected!(
    an_unknown_server_environment_is_named,
    [("ferry.yaml", agent("    environment: staging\n"))],
    "ferry.yaml:6:18",
    "staging"
);

#[test]
fn a_full_claims_configuration_passes_check() {
    let fx = Fixture::new(&[
        ("ferry.yaml", &agent("    environment: production\n")),
        (
            "jobs/a.yaml",
            &job(
                "edi: { validate: true, sender_id: ACME, receiver_id: CH, duplicate_window: 30d, acks: { ta1: 2h, \"999\": 24h, 277ca: 2d } }\n",
            ),
        ),
        (
            "jobs/b.yaml",
            &pull("edi: { acks_for: [a] }\nexpect: { schedule: \"0 6 * * 2\", within: 2h }\n"),
        ),
    ]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
