//! `ferry run`: the agent, until SIGINT or SIGTERM. SIGHUP reloads the
//! configuration; a second SIGINT/SIGTERM aborts at once.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Outcome;
use crate::agent::{Agent, Clock, Control, EngineRunner, engine_has_work};
use crate::alert::Alerter;
use crate::config::{self, Config};
use crate::ledger::Ledger;
use crate::observe::{Heartbeat, Metrics};
use crate::transfer::Engine;

pub fn run(path: &Path, cfg: Config, _out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let user = crate::transfer::operator::os_user();
    let ledger = crate::audit::open_ledger(&cfg, &user)?;
    crate::audit::agent_event(&ledger, "agent_started", &user)?;
    crate::audit::log_head(&ledger);
    let mut last_runs: HashMap<String, DateTime<Utc>> = HashMap::new();
    for name in cfg.jobs.keys() {
        ledger.abort_stale_runs(name)?;
        if let Some(r) = ledger.last_run(name)?
            && let Ok(t) = DateTime::parse_from_rfc3339(&r.started_at)
        {
            last_runs.insert(name.clone(), t.with_timezone(&Utc));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = Engine::new(cfg.state_dir.clone(), ledger);
    let alerter = rt.block_on(async {
        let a = Alerter::start(cfg.mail.clone(), engine.ledger.clone());
        a.start_digest(cfg.jobs.keys().cloned().collect());
        a
    });
    let engine = Arc::new(engine);
    let has_work = engine_has_work(engine.clone());
    let ledger = engine.ledger.clone();
    let upkeep = rt.spawn(upkeep(cfg.clone(), ledger.clone()));
    rt.block_on(async move {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        spawn_signals(path.to_path_buf(), ctl_tx)?;
        let watchdog = sd_notify::watchdog_enabled();
        let stall_after = cfg
            .metrics
            .as_ref()
            .map_or(Duration::from_secs(10), |m| m.stall_after);
        let heartbeat = Heartbeat::new(stall_after, watchdog);
        let served = Observed::start(&cfg, &engine, &heartbeat).await?;
        let runner = Arc::new(EngineRunner {
            engine,
            alerter,
            metrics: served.as_ref().map(|o| o.metrics.clone()),
        });
        let mut agent = Agent::new(cfg, runner, Clock::system(), has_work);
        if served.is_some() || watchdog.is_some() {
            agent = agent.with_heartbeat(heartbeat);
        }
        agent.run(ctl_rx, last_runs).await;
        if let Some(o) = served {
            o.stop.cancel();
        }
        anyhow::Ok(())
    })?;
    upkeep.abort();
    if let Ok(l) = ledger.lock() {
        if let Err(e) = crate::audit::agent_event(&l, "agent_stopped", &user) {
            tracing::warn!("cannot record the agent's stop in the audit trail: {e:#}");
        }
        crate::audit::log_head(&l);
    }
    info!("ferry stopped");
    // Do not wait on idle blocking threads (folder watcher, file I/O) at exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(Outcome::Success)
}

/// Daily upkeep: retention (at start, then every 24 hours) and the audit
/// trail's head in the log, so a copy of it lives outside the ledger.
async fn upkeep(cfg: Config, ledger: Arc<std::sync::Mutex<Ledger>>) {
    loop {
        let cfg = cfg.clone();
        let l = ledger.clone();
        let done = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let l = l
                .lock()
                .map_err(|_| anyhow::anyhow!("the ledger lock was poisoned"))?;
            crate::audit::apply_retention(&cfg, &l, Utc::now())?;
            crate::audit::log_head(&l);
            Ok(())
        })
        .await;
        match done {
            Ok(Err(e)) => tracing::error!("retention failed: {e:#}"),
            Err(e) => tracing::error!("retention task failed: {e}"),
            Ok(Ok(())) => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
    }
}

/// `/metrics` and `/healthz`, when `metrics` is configured.
struct Observed {
    metrics: Arc<Metrics>,
    /// Stops the HTTP server when the agent has stopped.
    stop: CancellationToken,
}

impl Observed {
    /// Binds the metrics address before the agent starts: a port in use is
    /// an error at start, not a silent absence of metrics.
    async fn start(
        cfg: &Config,
        engine: &Arc<Engine>,
        heartbeat: &Heartbeat,
    ) -> anyhow::Result<Option<Observed>> {
        let Some(settings) = &cfg.metrics else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics", settings.listen))?;
        let addr = listener.local_addr().unwrap_or(settings.listen);
        if !addr.ip().is_loopback() {
            warn!(%addr, "metrics are served to other hosts (allow_remote: true): /metrics names every job and server");
        }
        let engine_for_metrics = engine.clone();
        let metrics = {
            let cfg = cfg.clone();
            tokio::task::spawn_blocking(move || Metrics::new(&cfg, &engine_for_metrics))
                .await
                .context("setting up metrics")?
        };
        let metrics = Arc::new(metrics);
        let stop = CancellationToken::new();
        tokio::spawn(crate::observe::serve(
            listener,
            metrics.clone(),
            engine.clone(),
            heartbeat.clone(),
            stop.clone(),
        ));
        info!(%addr, "serving http://{addr}/metrics and /healthz");
        Ok(Some(Observed { metrics, stop }))
    }
}

fn spawn_signals(
    path: std::path::PathBuf,
    tx: mpsc::UnboundedSender<Control>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let msg = tokio::select! {
                _ = term.recv() => if stopping { Control::Abort } else { Control::Shutdown },
                _ = int.recv() => if stopping { Control::Abort } else { Control::Shutdown },
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the configuration");
                    Control::Reload(config::load(&path).map(Box::new).map_err(|e| e.to_string()))
                }
            };
            stopping |= matches!(msg, Control::Shutdown);
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
    Ok(())
}
