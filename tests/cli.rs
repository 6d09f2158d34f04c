//! The command line as operators and scripts meet it: check's report, the
//! config lookup order, exit codes, and secrets kept out of every output.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Fixture, ferry_bin, stderr, stdout};

#[test]
fn check_prints_each_job_with_its_next_three_runs_in_its_time_zone() {
    let fx = Fixture::new(&[(
        "jobs/a.yaml",
        b"direction: push\nserver: ch\nlocal_dir: ../out\nremote_dir: /inbound\nschedule: \"30 6 * * 1-5\"\ntimezone: America/New_York\nwatch: true\n",
    )]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ferry.yaml: valid — 1 server, 1 job"),
        "{text}"
    );
    assert!(
        text.contains("push     to ch (127.0.0.1:21, explicit TLS)"),
        "{text}"
    );
    assert!(
        text.contains("local    out") && text.contains("remote   /inbound"),
        "{text}"
    );
    assert!(
        text.contains("schedule \"30 6 * * 1-5\" (America/New_York)   watch: yes"),
        "{text}"
    );
    let next = text
        .lines()
        .find(|l| l.trim_start().starts_with("next"))
        .expect("next line");
    let times: Vec<&str> = next.trim_start()["next".len()..].split(',').collect();
    assert_eq!(times.len(), 3, "{next}");
    for t in times {
        assert!(t.trim().contains("06:30:00 E"), "local New York time: {t}");
    }
}

#[test]
fn check_never_prints_a_secret_even_with_trace_logging() {
    let fx = Fixture::new(&[
        (
            "ferry.yaml",
            b"log: { format: json, level: trace }\nservers:\n  ch:\n    host: h\n    user: ${FERRY_TEST_USER}\n    password: ${FERRY_TEST_PW}\n  other:\n    host: h2\n    password_file: pw.txt\nmail:\n  smtp: { host: smtp.example.org, user: ferry, password: \"${FERRY_TEST_PW}\" }\n  from: ferry@example.org\n  to: [ops@example.org]\n",
        ),
        ("pw.txt", b"file-Secret-99\n"),
    ]);
    for args in [
        &["check"][..],
        &["status", "--json"][..],
        &["history"][..],
        &["ping", "ch"][..],
    ] {
        let out = fx
            .ferry_cmd(args)
            .env("FERRY_TEST_USER", "acme")
            .env("FERRY_TEST_PW", "env-Secret-42")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !all.contains("env-Secret-42") && !all.contains("file-Secret-99"),
            "{args:?}: {all}"
        );
    }
}

#[test]
fn config_comes_from_ferry_config_when_no_flag_is_given() {
    let fx = Fixture::new(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_bin())
        .current_dir(elsewhere.path())
        .arg("check")
        .env("FERRY_CONFIG", fx.path().join("ferry.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // And without either, ./ferry.yaml is read.
    let out = Command::new(ferry_bin())
        .current_dir(fx.path())
        .arg("check")
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = Command::new(ferry_bin())
        .current_dir(elsewhere.path())
        .arg("check")
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ferry.yaml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_job_or_server_is_bad_usage() {
    let fx = Fixture::new(&[]);
    let out = fx.ferry(&["once", "a", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown job 'nope', expected one of a"),
        "{}",
        stderr(&out)
    );
    let out = fx.ferry(&["ping", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown server 'nope', expected one of ch"));
    let out = fx.ferry(&["once"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = fx.ferry(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_configuration_stops_every_command_with_exit_2() {
    let fx = Fixture::new(&[("jobs/a.yaml", b"direction: push\n")]);
    for args in [
        &["check"][..],
        &["run"][..],
        &["status"][..],
        &["history"][..],
        &["once", "a"][..],
    ] {
        let out = fx.ferry(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("jobs/a.yaml:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!fx.state_dir().exists(), "nothing was created");
}

#[test]
fn shipped_example_configuration_passes_check() {
    // A copy of examples/ and jobs/, with the certificate and secret files
    // the example names created at test time (they are never committed).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["examples", "jobs"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), tmp.path().join(dir).join(e.file_name())).unwrap();
            }
        }
    }
    let pki = support::certs::TestPki::new();
    let client = pki.client_leaf("acme-billing");
    let certs = tmp.path().join("examples/certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("acme-billing.pem"), &client.cert_pem).unwrap();
    std::fs::write(certs.join("acme-billing.key"), &client.key_pem).unwrap();
    std::fs::write(certs.join("payer-ca.pem"), &pki.ca_pem).unwrap();
    std::fs::create_dir_all(tmp.path().join("examples/secrets")).unwrap();
    std::fs::write(
        tmp.path().join("examples/secrets/payer.password"),
        "from-a-file\n",
    )
    .unwrap();
    let out = Command::new(ferry_bin())
        .current_dir(tmp.path())
        .args(["--config", "examples/ferry.yaml", "check"])
        .env("CH_PASSWORD", "x")
        .env("SMTP_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for job in [
        "acme-837-out",
        "clearinghouse-999-in",
        "clearinghouse-277ca-in",
        "payer-835-in",
    ] {
        assert!(
            text.contains(&format!("\n{job}\n")),
            "{job} missing:\n{text}"
        );
    }
    let jobs = std::fs::read_dir(root.join("jobs")).unwrap().count();
    assert!(
        text.contains(&format!("{jobs} jobs")),
        "every shipped job is valid: {text}"
    );
    assert!(!text.contains("from-a-file"), "no secret in check output");
}

#[test]
fn history_piped_into_a_closed_reader_is_not_an_error() {
    let fx = Fixture::new(&[]);
    let mut child = fx
        .ferry_cmd(&["history"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn once_exits_1_when_a_file_fails_and_prints_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fx = Fixture::new(&[
        (
            "ferry.yaml",
            format!("servers:\n  ch:\n    host: 127.0.0.1\n    port: {port}\n    user: u\n    password: p\n    pin_sha256: \"{}\"\n", "AB".repeat(32)).as_bytes(),
        ),
        ("jobs/a.yaml", b"direction: push\nserver: ch\nlocal_dir: ../out\nremote_dir: /in\nstable_for: 0s\nretry: { attempts: 2, initial_delay: 1ms, max_delay: 2ms }\n"),
        ("out/claims.837", b"ISA~"),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let out = fx.ferry(&["once", "a"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("FAILED     claims.837"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        text.contains("a: 0 delivered") && text.contains("1 failed"),
        "{text}"
    );
    assert!(fx.path().join("out/claims.837").exists());
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    let fx = Fixture::new(&[]);
    for shell in ["bash", "zsh", "fish"] {
        let out = fx.ferry(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.len() > 1000, "{shell}: a real script:\n{script}");
        for cmd in [
            "check", "run", "once", "ping", "status", "history", "confirm", "resend",
        ] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
        assert!(script.contains("config"), "{shell}: the global flag");
    }
    assert!(stdout(&fx.ferry(&["completions", "bash"])).contains("complete -F _ferry"));
    assert!(stdout(&fx.ferry(&["completions", "zsh"])).starts_with("#compdef ferry"));
    assert!(stdout(&fx.ferry(&["completions", "fish"])).contains("complete -c ferry"));
    // Completion needs no configuration at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(ferry_bin())
        .current_dir(elsewhere.path())
        .args(["completions", "bash"])
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fx.ferry(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_writes_a_page_for_ferry_and_for_every_command() {
    let fx = Fixture::new(&[]);
    let out = fx.ferry(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH FERRY 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for cmd in [
        "check", "run", "once", "ping", "status", "history", "confirm", "resend",
    ] {
        assert!(
            page.contains(&format!("ferry\\-{cmd}(1)")),
            "{cmd} in ferry.1"
        );
    }
    for section in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"SEE ALSO\"",
    ] {
        assert!(page.contains(section), "{section} in ferry.1:\n{page}");
    }
    assert!(
        page.contains("FERRY_CONFIG") && page.contains("ferry.db"),
        "{page}"
    );
    assert_eq!(
        page.matches(".ds Aq").count(),
        2,
        "one roff preamble:\n{page}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = fx.ferry(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for cmd in [
        "check", "run", "once", "ping", "status", "history", "confirm", "resend",
    ] {
        let p = dir.path().join(format!("ferry-{cmd}.1"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            text.contains(&format!(".TH FERRY-{} 1", cmd.to_uppercase())),
            "{text}"
        );
        assert!(
            text.contains(&format!("\\fBferry {cmd}\\fR")),
            "synopsis: {text}"
        );
    }
    assert!(dir.path().join("ferry.1").exists());
    let history = std::fs::read_to_string(dir.path().join("ferry-history.1")).unwrap();
    assert!(history.contains("\\-\\-since"), "{history}");
    // man(1) itself renders the page, when it is installed.
    if let Ok(o) = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("ferry-run.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        && o.status.success()
    {
        assert!(stdout(&o).contains("ferry run"), "{}", stdout(&o));
    }
}
