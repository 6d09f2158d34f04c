//! What operations watch, against a real `ferry run` process: `/metrics`
//! scraped over HTTP after a push, a failed push and a pull (and linted by
//! `promtool check metrics`), `/healthz` under an injected stall of the
//! agent loop, systemd's notify messages, and JSON log lines that carry
//! `job`, `server`, `run_id` and `file_id`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::engine::{Setup, inprocess_yaml, signal, spawn_agent, wait_for};
use support::ftps_server::{self, ServerOptions};

/// The address `ferry run` logged it serves metrics on (it may bind port 0).
async fn metrics_addr(log: &Path) -> SocketAddr {
    let mut found = None;
    wait_for(
        "the metrics address in the log",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("serving http://"))
                })
                .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()));
            found.is_some()
        },
    )
    .await;
    found.unwrap()
}

/// One HTTP/1.1 GET: status, headers (lowercased names) and body.
fn get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// `promtool check metrics` on `text`; `None` when promtool is not installed.
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot start promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

fn json_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_push_a_failed_push_and_a_pull_count_each_and_promtool_accepts_them() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    std::fs::create_dir(srv.root().join("outbound")).unwrap();
    std::fs::write(srv.root().join("outbound/resp.999"), b"ISA*999-response~").unwrap();
    let good = inprocess_yaml(&srv);
    let wrong_password = good.replace(
        &format!("password: {}", srv.password),
        "password: not-the-password",
    );
    assert_ne!(good, wrong_password);
    // An SMTP port nobody listens on: the failure email waits in the outbox.
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new(&good);
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!(
            "log: {{ format: json, level: info }}\nmetrics: {{ listen: \"127.0.0.1:0\" }}\n\
             mail:\n  smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 2s }}\n  from: ferry@example.org\n  to: [ops@example.org]\n\
             servers:\n  srv:\n{good}  partner:\n{wrong_password}"
        ),
    )
    .unwrap();
    s.job("claims-out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\nstable_for: 0s\n");
    s.job("rejected-out", "direction: push\nserver: partner\nlocal_dir: ../outbox2\nremote_dir: /inbound\nwatch: true\nstable_for: 0s\nretry: { attempts: 1, initial_delay: 10ms, max_delay: 10ms }\n");
    s.job("acks-in", "direction: pull\nserver: srv\nlocal_dir: ../inbox\nremote_dir: /outbound\nschedule: \"*/2 * * * * *\"\n");
    let claim = b"ISA*00*claim-837~".repeat(10);
    s.drop_file("outbox/claims.837", &claim);
    s.drop_file("outbox2/other.837", b"ISA*never-arrives~");
    std::fs::create_dir_all(s.local("inbox")).unwrap();

    let mut agent = spawn_agent(&s, "agent.log");
    let log = s.path().join("agent.log");
    let addr = metrics_addr(&log).await;
    wait_for(
        "the push, the failure and the pull",
        Duration::from_secs(30),
        || {
            let text = get(addr, "/metrics", None).2;
            sample(&text, "ferry_job_files_delivered_total{job=\"claims-out\"}") == Some(1.0)
                && sample(&text, "ferry_job_files_delivered_total{job=\"acks-in\"}") == Some(1.0)
                && sample(&text, "ferry_job_runs_failed_total{job=\"rejected-out\"}") >= Some(1.0)
                && sample(&text, "ferry_outbox_mails_pending") >= Some(1.0)
        },
    )
    .await;

    let (status, headers, text) = get(addr, "/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    eprintln!("{text}");
    // The push.
    assert!(value(&text, "ferry_job_runs_total{job=\"claims-out\"}") >= 1.0);
    assert_eq!(
        value(&text, "ferry_job_runs_failed_total{job=\"claims-out\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "ferry_job_delivered_bytes_total{job=\"claims-out\"}"),
        claim.len() as f64
    );
    assert_eq!(
        value(&text, "ferry_job_files_failed_total{job=\"claims-out\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "ferry_job_files_waiting{job=\"claims-out\"}"),
        0.0
    );
    assert_eq!(
        value(&text, "ferry_job_files_held{job=\"claims-out\"}"),
        0.0
    );
    let now = chrono::Utc::now().timestamp() as f64;
    let last_ok = value(
        &text,
        "ferry_job_last_success_timestamp_seconds{job=\"claims-out\"}",
    );
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_ok),
        "{last_ok} vs {now}"
    );
    // The failure: the login refused, the file failed and still waiting, no success.
    assert_eq!(
        value(&text, "ferry_job_files_failed_total{job=\"rejected-out\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "ferry_job_files_delivered_total{job=\"rejected-out\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "ferry_job_files_waiting{job=\"rejected-out\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "ferry_job_last_success_timestamp_seconds{job=\"rejected-out\"}"
        ),
        None,
        "never succeeded"
    );
    assert!(
        value(
            &text,
            "ferry_server_login_failures_total{server=\"partner\"}"
        ) >= 1.0
    );
    assert_eq!(
        value(&text, "ferry_server_login_failures_total{server=\"srv\"}"),
        0.0
    );
    // The pull.
    assert!(value(&text, "ferry_job_runs_total{job=\"acks-in\"}") >= 1.0);
    assert_eq!(
        value(&text, "ferry_job_delivered_bytes_total{job=\"acks-in\"}"),
        b"ISA*999-response~".len() as f64
    );
    assert_eq!(
        value(&text, "ferry_job_files_waiting{job=\"acks-in\"}"),
        0.0
    );
    // Per server: sessions and the certificate the in-process server presents.
    assert!(value(&text, "ferry_server_sessions_open{server=\"srv\"}") <= 2.0);
    let expiry = value(
        &text,
        "ferry_server_certificate_expiry_timestamp_seconds{server=\"srv\"}",
    );
    assert!(expiry > now, "the test certificate is valid: {expiry}");
    assert!(value(&text, "ferry_outbox_mails_pending") >= 1.0);
    // Labels are job and server names only, never a file name.
    for name in ["claims.837", "other.837", "resp.999"] {
        assert!(!text.contains(name), "{name} in the metrics:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
        for pair in labels.split(',') {
            let key = pair.split('=').next().unwrap();
            assert!(key == "job" || key == "server", "label {key} in {line}");
        }
    }

    // Every metric exported is in the contract's table, and every one there is exported.
    let contract =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/contract.md"))
            .unwrap();
    let documented: std::collections::BTreeSet<&str> = contract
        .lines()
        .filter_map(|l| l.strip_prefix("| `ferry_")?.split_once('`').map(|(n, _)| n))
        .collect();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ferry_")?.split_whitespace().next())
        .collect();
    assert_eq!(
        documented, exported,
        "docs/contract.md's metrics vs /metrics"
    );

    // promtool lints the Prometheus text.
    match promtool(&text) {
        Some((ok, said)) => assert!(
            ok,
            "promtool check metrics refused the output:\n{said}\n{text}"
        ),
        // As root scripts/test.sh installs it (CI runs as root): then its absence is a failure.
        // SAFETY: geteuid has no preconditions.
        None if std::env::var_os("CI").is_some() || unsafe { libc::geteuid() } == 0 => {
            panic!(
                "promtool is not installed (scripts/install-test-deps.sh installs package prometheus)"
            )
        }
        None => eprintln!(
            "\n!!!!!!!! SKIPPED: promtool check metrics — promtool is not installed here \
             (sudo scripts/install-test-deps.sh installs Debian's prometheus package) !!!!!!!!\n"
        ),
    }

    // A scraper that asks for OpenMetrics gets it.
    let (status, headers, om) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(
        headers["content-type"].starts_with("application/openmetrics-text"),
        "{headers:?}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE ferry_job_runs counter"), "{om}");
    assert_eq!(get(addr, "/nothing", None).0, 404);

    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));

    // The JSON log: run, file and alert events carry the fields a SIEM indexes.
    let lines = json_lines(&log);
    let msg = |v: &serde_json::Value| v["message"].as_str().unwrap_or("").to_string();
    for v in lines
        .iter()
        .filter(|v| ["run started", "run finished"].contains(&msg(v).as_str()))
    {
        for field in ["job", "server", "run_id", "timestamp", "level"] {
            assert!(!v[field].is_null(), "{field} missing: {v}");
        }
        assert!(v["run_id"].is_i64(), "{v}");
    }
    let finished: Vec<_> = lines.iter().filter(|v| msg(v) == "run finished").collect();
    assert!(
        finished
            .iter()
            .any(|v| v["job"] == "rejected-out" && v["server"] == "partner")
    );
    let delivered = lines
        .iter()
        .find(|v| msg(v) == "delivered" && v["job"] == "claims-out")
        .expect("a delivered line");
    assert_eq!(delivered["server"], "srv", "{delivered}");
    assert!(
        delivered["run_id"].is_i64() && delivered["file_id"].is_i64(),
        "{delivered}"
    );
    let pulled = lines
        .iter()
        .find(|v| msg(v) == "pulled")
        .expect("a pulled line");
    assert!(
        pulled["run_id"].is_i64() && pulled["file_id"].is_i64(),
        "{pulled}"
    );
    assert_eq!(pulled["job"], "acks-in");
    let alert = lines
        .iter()
        .find(|v| msg(v) == "failure email queued")
        .expect("the failure email queued");
    assert_eq!(alert["job"], "rejected-out", "{alert}");
    assert_eq!(alert["server"], "partner", "{alert}");
    assert!(alert["run_id"].is_i64(), "{alert}");
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(!text_log.contains(&srv.password), "no password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200_while_the_loop_beats_and_503_while_it_is_stalled() {
    let s = Setup::new("    host: 127.0.0.1\n    port: 1\n    password: p\n");
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("log: {{ format: json }}\nmetrics: {{ listen: \"127.0.0.1:0\", stall_after: 1s }}\n{cfg}"),
    )
    .unwrap();
    let stall = s.path().join("stall");
    let log = std::fs::File::create(s.path().join("agent.log")).unwrap();
    let mut agent = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .arg("run")
        .env(ferry::observe::STALL_FILE_ENV, &stall)
        .stderr(log)
        .spawn()
        .unwrap();
    let addr = metrics_addr(&s.path().join("agent.log")).await;
    let (status, _, body) = get(addr, "/healthz", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok"), "{body}");

    std::fs::write(&stall, b"").unwrap();
    let t = Instant::now();
    wait_for("/healthz to say 503", Duration::from_secs(10), || {
        get(addr, "/healthz", None).0 == 503
    })
    .await;
    // The last beat was at most one beat (250 ms) before the stall began.
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "not before stall_after: {:?}",
        t.elapsed()
    );
    let (_, _, body) = get(addr, "/healthz", None);
    assert!(body.starts_with("stalled"), "{body}");
    // The stalled loop does not take the metrics page down with it.
    assert_eq!(get(addr, "/metrics", None).0, 200);

    std::fs::remove_file(&stall).unwrap();
    wait_for("/healthz to say 200 again", Duration::from_secs(10), || {
        get(addr, "/healthz", None).0 == 200
    })
    .await;
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_agent_says_ready_pings_the_watchdog_and_says_stopping() {
    let s = Setup::new("    host: 127.0.0.1\n    port: 1\n    password: p\n");
    let sock_path = s.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = std::fs::File::create(s.path().join("agent.log")).unwrap();
    let mut agent = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let t = Instant::now();
    while got
        .iter()
        .filter(|m: &&String| m.as_str() == "WATCHDOG=1")
        .count()
        < 3
    {
        let n = sock.recv(&mut buf).expect("a notify message");
        got.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    assert_eq!(got[0], "READY=1", "{got:?}");
    // At least twice per WatchdogSec (0.4 s): three pings well within 2 s.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    signal(&agent, libc::SIGTERM);
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).trim() == "STOPPING=1" {
            break;
        }
    }
    assert_eq!(agent.wait().unwrap().code(), Some(0));
}

#[test]
fn metrics_on_an_address_other_hosts_reach_needs_allow_remote_and_check_warns() {
    use support::{BASE_AGENT, Fixture, stdout};
    let fx = Fixture::new(&[(
        "ferry.yaml",
        format!("{BASE_AGENT}metrics: {{ listen: \"0.0.0.0:9464\" }}\n").as_bytes(),
    )]);
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        support::stderr(&out).contains("ferry.yaml:6:20: metrics.listen 0.0.0.0:9464 is not a loopback address; set allow_remote: true"),
        "{}",
        support::stderr(&out)
    );

    fx.write(
        "ferry.yaml",
        format!("{BASE_AGENT}metrics: {{ listen: \"0.0.0.0:9464\", allow_remote: true }}\n")
            .as_bytes(),
    );
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("metrics: http://0.0.0.0:9464/metrics and /healthz"),
        "{text}"
    );
    assert!(
        text.contains("warning: metrics.listen 0.0.0.0:9464 is reachable from other hosts"),
        "{text}"
    );

    // The defaults: loopback, port 9464.
    fx.write(
        "ferry.yaml",
        format!("{BASE_AGENT}metrics: {{}}\n").as_bytes(),
    );
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    assert!(
        stdout(&out).contains("metrics: http://127.0.0.1:9464/metrics"),
        "{}",
        stdout(&out)
    );

    fx.write(
        "ferry.yaml",
        format!("{BASE_AGENT}metrics: {{ listen: \"localhost\", stall_after: 0s }}\n").as_bytes(),
    );
    let out = fx.ferry(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = support::stderr(&out);
    assert!(
        err.contains("'localhost' is not an address and port"),
        "{err}"
    );
    assert!(err.contains("stall_after must be longer than 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_in_use_stops_ferry_run_at_start_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let s = Setup::new("    host: 127.0.0.1\n    port: 1\n    password: p\n");
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("metrics: {{ listen: \"127.0.0.1:{port}\" }}\n{cfg}"),
    )
    .unwrap();
    let out = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        support::stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port} for metrics")),
        "{}",
        support::stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sighup_the_metrics_name_the_jobs_configured_now() {
    let s = Setup::new("    host: 127.0.0.1\n    port: 1\n    password: p\n");
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("log: {{ format: json }}\nmetrics: {{ listen: \"127.0.0.1:0\" }}\n{cfg}"),
    )
    .unwrap();
    let job = "direction: push\nserver: srv\nlocal_dir: ../out\nremote_dir: /in\n";
    s.job("first", job);
    let mut agent = spawn_agent(&s, "agent.log");
    let addr = metrics_addr(&s.path().join("agent.log")).await;
    let text = get(addr, "/metrics", None).2;
    assert_eq!(
        value(&text, "ferry_job_runs_total{job=\"first\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "ferry_server_login_failures_total{server=\"srv\"}"),
        0.0
    );

    std::fs::remove_file(s.path().join("jobs/first.yaml")).unwrap();
    s.job("second", job);
    signal(&agent, libc::SIGHUP);
    wait_for(
        "the reloaded jobs in /metrics",
        Duration::from_secs(10),
        || {
            let text = get(addr, "/metrics", None).2;
            sample(&text, "ferry_job_runs_total{job=\"second\"}") == Some(0.0)
                && sample(&text, "ferry_job_runs_total{job=\"first\"}").is_none()
                && sample(&text, "ferry_job_files_waiting{job=\"first\"}").is_none()
        },
    )
    .await;
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_success_of_a_job_survives_a_restart_of_the_agent() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    let cfg = std::fs::read_to_string(s.path().join("ferry.yaml")).unwrap();
    std::fs::write(
        s.path().join("ferry.yaml"),
        format!("log: {{ format: json }}\nmetrics: {{ listen: \"127.0.0.1:0\" }}\n{cfg}"),
    )
    .unwrap();
    s.job("out", "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nstable_for: 0s\n");
    s.drop_file("outbox/a.837", b"ISA*a~");
    let before = chrono::Utc::now().timestamp() as f64;
    let out = std::process::Command::new(support::ferry_bin())
        .arg("--config")
        .arg(s.path().join("ferry.yaml"))
        .args(["once", "out"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));

    let mut agent = spawn_agent(&s, "agent.log");
    let addr = metrics_addr(&s.path().join("agent.log")).await;
    let text = get(addr, "/metrics", None).2;
    assert_eq!(
        value(&text, "ferry_job_runs_total{job=\"out\"}"),
        0.0,
        "no run by this agent yet"
    );
    let last = value(
        &text,
        "ferry_job_last_success_timestamp_seconds{job=\"out\"}",
    );
    assert!(
        (before - 1.0..=before + 30.0).contains(&last),
        "the ledger's last good run: {last} vs {before}"
    );
    signal(&agent, libc::SIGTERM);
    assert_eq!(agent.wait().unwrap().code(), Some(0));
}
