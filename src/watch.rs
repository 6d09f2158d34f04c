//! Watched outbound folders. Events (inotify through notify's raw API) are
//! hints: a job is triggered once its folder has been quiet for
//! `stable_for`, and the engine still checks every file's stability itself.
//! A rescan at start and every `rescan_interval` catches what events missed
//! (queue overflow, files dropped while the agent was down), and
//! `watch_mode: poll` lists the folder instead, for network shares where
//! inotify sees nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{Job, WatchMode};
use crate::transfer::Trigger;

/// Whether a watched job has files waiting (matching and not yet delivered);
/// rescans trigger only those, so an idle folder costs no runs.
pub type HasWork = Arc<dyn Fn(&Job) -> bool + Send + Sync>;

type Triggers = mpsc::UnboundedSender<(String, Trigger)>;

/// Starts the watchers of every watched job; abort the handles to stop them.
pub fn start(jobs: &[Arc<Job>], tx: Triggers, has_work: HasWork) -> Vec<JoinHandle<()>> {
    let watched: Vec<Arc<Job>> = jobs.iter().filter(|j| j.watch()).cloned().collect();
    if watched.is_empty() {
        return Vec::new();
    }
    let mut handles = Vec::new();
    let (events, polled): (Vec<_>, Vec<_>) = watched.iter().cloned().partition(|j| {
        j.watch_settings()
            .is_some_and(|w| w.mode == WatchMode::Events)
    });
    if !events.is_empty() {
        handles.push(tokio::spawn(events_task(events, tx.clone())));
    }
    for job in polled {
        handles.push(tokio::spawn(poll_task(job, tx.clone())));
    }
    handles.push(tokio::spawn(rescan_task(watched, tx, has_work)));
    handles
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(
                ModifyKind::Data(_)
                    | ModifyKind::Name(_)
                    | ModifyKind::Metadata(_)
                    | ModifyKind::Any
            )
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Any
    )
}

async fn events_task(jobs: Vec<Arc<Job>>, tx: Triggers) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = match notify::recommended_watcher(move |res| {
        let _ = ev_tx.send(res);
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!("cannot start the folder watcher ({e}); relying on rescans");
            return;
        }
    };
    let mut by_dir: HashMap<PathBuf, Vec<Arc<Job>>> = HashMap::new();
    for job in &jobs {
        by_dir
            .entry(job.local_dir.clone())
            .or_default()
            .push(job.clone());
    }
    for dir in by_dir.keys() {
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), "cannot watch folder ({e}); relying on rescans");
        }
    }
    info!(folders = by_dir.len(), "watching folders");
    // When each job's folder will have been quiet for its stable_for.
    let mut due: HashMap<String, (Instant, Arc<Job>)> = HashMap::new();
    loop {
        let next = due.values().map(|(t, _)| *t).min();
        tokio::select! {
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(event) if event.need_rescan() => {
                        warn!("watch events were lost (queue overflow); rescanning every watched folder");
                        for job in &jobs {
                            due.insert(job.name.clone(), (Instant::now(), job.clone()));
                        }
                    }
                    Ok(event) if relevant(&event.kind) => {
                        for path in &event.paths {
                            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { continue };
                            let name = name.to_string_lossy();
                            for job in by_dir.get(dir).into_iter().flatten() {
                                if job.filter.matches(&name) {
                                    due.insert(job.name.clone(), (Instant::now() + job.stable_for, job.clone()));
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!("folder watcher error: {e}"),
                }
            }
            _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                let now = Instant::now();
                let fired: Vec<String> = due.iter().filter(|(_, (t, _))| *t <= now).map(|(n, _)| n.clone()).collect();
                for name in fired {
                    due.remove(&name);
                    debug!(job = %name, "watched folder quiet for stable_for; triggering");
                    if tx.send((name, Trigger::Watch)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What a folder listing says, for poll mode.
fn snapshot(job: &Job) -> BTreeSet<(String, u64, SystemTime)> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(&job.local_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !job.filter.matches(&name) {
                continue;
            }
            if let Ok(m) = e.metadata()
                && m.is_file()
            {
                out.insert((
                    name,
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    out
}

async fn poll_task(job: Arc<Job>, tx: Triggers) {
    let every = job
        .watch_settings()
        .map_or(Duration::from_secs(10), |w| w.poll_interval);
    let mut last = snapshot(&job);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = snapshot(&job);
        // Something new or changed: run; the engine waits for it to hold still.
        if now != last
            && !now.is_subset(&last)
            && tx.send((job.name.clone(), Trigger::Watch)).is_err()
        {
            return;
        }
        last = now;
    }
}

async fn rescan_task(jobs: Vec<Arc<Job>>, tx: Triggers, has_work: HasWork) {
    // At start every folder is due: files dropped while the agent was down.
    let mut due: Vec<(Instant, Arc<Job>)> = jobs.into_iter().map(|j| (Instant::now(), j)).collect();
    loop {
        let Some(next) = due.iter().map(|(t, _)| *t).min() else {
            return;
        };
        tokio::time::sleep_until(next).await;
        let now = Instant::now();
        for (t, job) in due.iter_mut() {
            if *t > now {
                continue;
            }
            let every = job
                .watch_settings()
                .map_or(Duration::from_secs(60), |w| w.rescan_interval);
            *t = now + every;
            let check = job.clone();
            let work = has_work.clone();
            let waiting = tokio::task::spawn_blocking(move || work(&check))
                .await
                .unwrap_or(false);
            if waiting && tx.send((job.name.clone(), Trigger::Watch)).is_err() {
                return;
            }
        }
    }
}
