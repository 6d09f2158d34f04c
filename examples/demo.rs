//! ferry's whole job in one command, on a fresh machine:
//!
//!     cargo run --example demo
//!
//! In a temporary folder it starts an FTPS server (in-process, throwaway
//! certificate) and a local SMTP sink, writes a ferry.yaml and two jobs,
//! and runs the real agent: claim files dropped into a watched folder are
//! streamed, verified and archived; acknowledgements are pulled; then the
//! partner's server goes away, ferry retries, emails the failure, and
//! emails the recovery when the server is back. It ends with `ferry status`
//! and `ferry history`. Nothing is left running.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ferry::agent::{Agent, Clock, Control, EngineRunner, engine_has_work};
use ferry::alert::Alerter;
use ferry::ledger::Ledger;
use ferry::transfer::{Engine, Trigger};
use support::cut_proxy::{CutPlan, CutProxy};
use support::ftps_server::{self, ServerOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

fn say(step: &str) {
    println!("\n== {step}");
}

fn claim(n: u32) -> String {
    format!(
        "ISA*00*          *00*          *ZZ*ACMEBILLING    *ZZ*CLEARINGHOUSE  *261124*0930*^*00501*{n:09}*0*P*:~\n\
         GS*HC*ACMEBILLING*CLEARINGHOUSE*20261124*0930*{n}*X*005010X222A1~\n\
         ST*837*0001*005010X222A1~\nBHT*0019*00*{n}*20261124*0930*CH~\nSE*3*0001~\nGE*1*{n}~\nIEA*1*{n:09}~\n"
    )
}

fn ack(n: u32) -> String {
    format!(
        "ISA*00*          *00*          *ZZ*CLEARINGHOUSE  *ZZ*ACMEBILLING    *261124*0931*^*00501*{n:09}*0*P*:~\nGS*FA*CLEARINGHOUSE*ACMEBILLING*20261124*0931*{n}*X*005010X231A1~\nST*999*0001*005010X231A1~\nAK1*HC*{n}*005010X222A1~\nAK9*A*1*1*1~\nSE*4*0001~\nGE*1*{n}~\nIEA*1*{n:09}~\n"
    )
}

/// A tiny SMTP server that keeps what it receives, to show the alert emails.
async fn smtp_sink(inbox: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 demo-sink ESMTP\r\n").await;
                let mut data = false;
                let mut msg = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if data {
                        if line == "." {
                            data = false;
                            inbox.lock().unwrap().push(std::mem::take(&mut msg));
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else {
                            msg.push_str(&line);
                            msg.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-demo-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    port
}

fn ferry_cmd(config: &Path, args: &[&str]) {
    let mut argv = vec!["ferry", "--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    println!("$ ferry {}", args.join(" "));
    let cli = ferry::cli::Cli::parse_from(argv);
    let mut out = std::io::stdout();
    if let Err(e) = ferry::commands::dispatch(cli, &mut out) {
        println!("ferry: {e:#}");
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("demo: timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// File names in `dir`, without temp files (`.<name>.part`, `<name>.part`).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && !n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn print_mail(m: &str) {
    // The body travels quoted-printable: undo soft line breaks and escapes.
    let m = m.replace("=\n", "").replace("=3D", "=");
    for line in m.lines().filter(|l| !l.is_empty()).take(18) {
        if line.starts_with("Subject:")
            || line.starts_with("To:")
            || !line.contains(": ")
            || line.starts_with("  ")
            || line.starts_with("Job:")
            || line.starts_with("Server:")
            || line.starts_with("Direction:")
            || line.starts_with("It had")
            || line.starts_with("Next")
            || line.starts_with("To look")
        {
            println!("   | {line}");
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    let tmp = tempfile::Builder::new()
        .prefix("ferry-demo-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    println!("ferry demo in {}", dir.display());

    say("1. A trading partner's FTPS server and a mail server start (on 127.0.0.1)");
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir_all(srv.root().join("inbound")).unwrap();
    std::fs::create_dir_all(srv.root().join("outbound/acks")).unwrap();
    // All of ferry's connections go through a relay we can cut, to play the outage.
    let relay = CutProxy::start(&srv, CutPlan::none()).await;
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let smtp_port = smtp_sink(inbox.clone()).await;
    println!(
        "   FTPS (explicit TLS) on port {} with a throwaway CA, SMTP sink on port {smtp_port}",
        relay.port()
    );

    say("2. ferry.yaml and two jobs are written; ferry check validates them");
    let config = dir.join("ferry.yaml");
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        &config,
        format!(
            "log: {{ level: \"off\" }}\ndefaults:\n  timezone: America/New_York\nservers:\n  clearinghouse:\n    host: 127.0.0.1\n    port: {}\n    tls: explicit\n    user: {}\n    password: {}\n    ca_file: {}\n    timeout: 5s\nmail:\n  smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none, timeout: 5s }}\n  from: \"ferry <ferry@acme-billing.example>\"\n  to: [edi-ops@acme-billing.example]\n",
            relay.port(),
            srv.user,
            srv.password,
            srv.ca_file().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/acme-837-out.yaml"),
        "# 837 claims to the clearinghouse as soon as they land\ndirection: push\nserver: clearinghouse\nlocal_dir: ../outbound\nremote_dir: /inbound\ninclude: [\"*.837\"]\nwatch: true\nstable_for: 1s\nrescan_interval: 2s\nretry: { attempts: 3, initial_delay: 200ms, max_delay: 1s }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/clearinghouse-999-in.yaml"),
        "# 999 acknowledgements back\ndirection: pull\nserver: clearinghouse\nlocal_dir: ../inbound/acks\nremote_dir: /outbound/acks\ninclude: [\"*.999\"]\nschedule: \"0 */15 * * * *\"\nstable_for: 0s\nafter_pull: delete\n",
    )
    .unwrap();
    ferry_cmd(&config, &["check"]);

    say("3. The agent starts (what `ferry run` does)");
    let cfg = ferry::config::load(&config).unwrap();
    let engine = Engine::new(cfg.state_dir.clone(), Ledger::open(&cfg.state_dir).unwrap());
    let alerter = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
    let engine = Arc::new(engine);
    let agent = Agent::new(
        cfg.clone(),
        Arc::new(EngineRunner {
            engine: engine.clone(),
            alerter,
            metrics: None,
        }),
        Clock::system(),
        engine_has_work(engine.clone()),
    );
    let triggers = agent.trigger_sender();
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let agent = tokio::spawn(agent.run(ctl_rx, HashMap::new()));
    let outbound = dir.join("outbound");
    std::fs::create_dir_all(&outbound).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    say("4. The billing system drops three 837 claim files into the watched folder");
    for n in 1..=3 {
        std::fs::write(outbound.join(format!("claims-{n:03}.837")), claim(n)).unwrap();
        println!("   wrote outbound/claims-{n:03}.837");
    }
    let remote_in = srv.root().join("inbound");
    wait_until("the claims to arrive", Duration::from_secs(30), || {
        names(&remote_in).len() == 3 && names(&outbound).is_empty()
    })
    .await;
    let archive: PathBuf = dir.join("state/archive/acme-837-out");
    println!(
        "   found once they held still for stable_for (1s); each streamed to <name>.part while hashed (SHA-256),"
    );
    println!(
        "   checked on the server (size: this server has no HASH command), renamed, recorded in the ledger"
    );
    println!("   on the server now: {:?}", names(&remote_in));
    let day = names(&archive).first().cloned().unwrap_or_default();
    println!(
        "   archived locally under state/archive/acme-837-out/{day}/: {:?}",
        names(&archive.join(&day))
    );

    say("5. The clearinghouse posts two 999 acknowledgements; the pull job fetches them");
    for n in 1..=2 {
        std::fs::write(
            srv.root().join(format!("outbound/acks/ack-{n:03}.999")),
            ack(n),
        )
        .unwrap();
    }
    triggers
        .send(("clearinghouse-999-in".into(), Trigger::Schedule))
        .unwrap();
    let local_acks = dir.join("inbound/acks");
    let remote_acks = srv.root().join("outbound/acks");
    wait_until("the acknowledgements", Duration::from_secs(30), || {
        names(&local_acks).len() == 2 && names(&remote_acks).is_empty()
    })
    .await;
    println!(
        "   downloaded to inbound/acks/.<name>.part, fsynced, verified, renamed: {:?}",
        names(&local_acks)
    );
    println!(
        "   deleted on the server only after that (after_pull: delete): {:?}",
        names(&srv.root().join("outbound/acks"))
    );

    say("6. The partner's server goes away; a new claim file arrives");
    relay.set_plan(CutPlan::control_after(0).every_time());
    relay.cut_all();
    std::fs::write(outbound.join("claims-004.837"), claim(4)).unwrap();
    println!("   wrote outbound/claims-004.837; every connection is now refused");
    wait_until("the failure email", Duration::from_secs(40), || {
        !inbox.lock().unwrap().is_empty()
    })
    .await;
    println!("   3 attempts with backoff failed; the file stays in outbound/; an email went out:");
    print_mail(&inbox.lock().unwrap()[0]);

    say("7. The server is back: the next rescan delivers the file and ferry says so");
    relay.set_plan(CutPlan::none());
    wait_until("the recovery email", Duration::from_secs(40), || {
        inbox.lock().unwrap().len() >= 2
    })
    .await;
    print_mail(&inbox.lock().unwrap()[1]);
    println!("   on the server now: {:?}", names(&remote_in));

    say("8. What the operator sees");
    ctl.send(Control::Shutdown).unwrap();
    agent.await.unwrap();
    ferry_cmd(&config, &["status"]);
    println!();
    ferry_cmd(&config, &["history"]);

    say("9. Where everything is");
    println!("   configuration:   {}", config.display());
    println!(
        "   ledger:          {}",
        dir.join("state/ferry.db").display()
    );
    println!("   archive:         {}", archive.display());
    println!("   pulled acks:     {}", local_acks.display());
    if keep {
        println!("   (kept: --keep)");
        let _ = tmp.keep();
    } else {
        println!("   (removed at exit; run with --keep to look around)");
    }
    srv.stop().await;
    println!("\ndemo finished: every server stopped, nothing left running");
}
