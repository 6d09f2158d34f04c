//! Benchmark: latency from a watched file becoming stable (its last write +
//! `stable_for`) to its upload starting on the server, through the real
//! agent, engine and the in-process FTPS server. Target: under 500 ms.
//!   cargo bench --bench watch_latency

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::agent::{Agent, Clock, Control, EngineRunner, engine_has_work};
use support::engine::{Setup, inprocess_yaml};
use support::ftps_server::{self, ServerOptions};
use tokio::sync::mpsc;

const SAMPLES: usize = 20;
const STABLE_FOR: Duration = Duration::from_secs(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let srv = ftps_server::start(ServerOptions::default()).await;
    std::fs::create_dir(srv.root().join("inbound")).unwrap();
    let s = Setup::new(&inprocess_yaml(&srv));
    s.job(
        "out",
        "direction: push\nserver: srv\nlocal_dir: ../outbox\nremote_dir: /inbound\nwatch: true\nstable_for: 1s\nafter_push: delete\n",
    );
    std::fs::create_dir_all(s.local("outbox")).unwrap();
    let engine = Arc::new(s.engine());
    let alerter = ferry::alert::Alerter::start(None, engine.ledger.clone());
    let agent = Agent::new(
        s.config(),
        Arc::new(EngineRunner {
            engine: engine.clone(),
            alerter,
            metrics: None,
        }),
        Clock::system(),
        engine_has_work(engine),
    );
    let (ctl, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(agent.run(rx, HashMap::new()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut lat = Vec::new();
    for k in 0..SAMPLES {
        let name = format!("f{k:02}.837");
        let written = Instant::now();
        std::fs::write(s.local(&format!("outbox/{name}")), format!("ISA*{k}~")).unwrap();
        let part = srv.root().join(format!("inbound/{name}.part"));
        let fin = srv.root().join(format!("inbound/{name}"));
        let started = loop {
            if part.exists() || fin.exists() {
                break Instant::now();
            }
            assert!(
                written.elapsed() < Duration::from_secs(20),
                "no upload for {name}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        lat.push((started - written).saturating_sub(STABLE_FOR));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ctl.send(Control::Shutdown).unwrap();
    handle.await.unwrap();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "watch latency: file stable -> upload start, {SAMPLES} files, stable_for 1s (target < 500 ms)"
    );
    println!(
        "  median {:.0} ms, p95 {:.0} ms, max {:.0} ms, min {:.0} ms",
        ms(lat[SAMPLES / 2]),
        ms(lat[SAMPLES * 95 / 100]),
        ms(lat[SAMPLES - 1]),
        ms(lat[0])
    );
}
