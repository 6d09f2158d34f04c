//! The agent's timing and concurrency with a paused tokio clock: schedules
//! fire on time (DST days included), catch-up runs once, and triggers that
//! arrive during a run coalesce into exactly one follow-up.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use ferry::agent::{Agent, Clock, Control, Runner};
use ferry::config::Job;
use ferry::transfer::Trigger;
use ferry::watch::HasWork;
use support::engine::Setup;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Records every run with the agent clock's time; each run takes `busy`.
struct Recorder {
    clock: Clock,
    busy: Duration,
    runs: Mutex<Vec<(String, Trigger, DateTime<Utc>)>>,
}

#[async_trait::async_trait]
impl Runner for Recorder {
    async fn run(&self, job: Arc<Job>, trigger: Trigger, _stop: CancellationToken) {
        self.runs
            .lock()
            .unwrap()
            .push((job.name.clone(), trigger, self.clock.now()));
        tokio::time::sleep(self.busy).await;
    }
}

fn setup(jobs: &[(&str, &str)]) -> Setup {
    let s = Setup::new(
        "    host: 127.0.0.1\n    password: x\n    pin_sha256: \"00000000000000000000000000000000000000000000000000000000000000AA\"\n",
    );
    for (name, extra) in jobs {
        s.job(
            name,
            &format!(
                "direction: pull\nserver: srv\nlocal_dir: ../in-{name}\nremote_dir: /out\n{extra}"
            ),
        );
    }
    s
}

fn no_work() -> HasWork {
    Arc::new(|_: &Job| false)
}

/// Starts an agent with a recorder, lets `virtual_time` pass, shuts it down.
async fn run_for(
    s: &Setup,
    start: DateTime<Utc>,
    busy: Duration,
    last_runs: HashMap<String, DateTime<Utc>>,
    virtual_time: Duration,
    during: impl FnOnce(mpsc::UnboundedSender<(String, Trigger)>),
) -> (Vec<(String, Trigger, DateTime<Utc>)>, u64) {
    let clock = Clock::starting_at(start);
    let rec = Arc::new(Recorder {
        clock,
        busy,
        runs: Mutex::new(Vec::new()),
    });
    let agent = Agent::new(s.config(), rec.clone(), clock, no_work());
    let triggers = agent.trigger_sender();
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(agent.run(ctl_rx, last_runs));
    during(triggers);
    tokio::time::sleep(virtual_time).await;
    ctl.send(Control::Shutdown).unwrap();
    let agent = handle.await.unwrap();
    let runs = rec.runs.lock().unwrap().clone();
    (runs, agent.coalesced)
}

#[tokio::test(start_paused = true)]
async fn a_two_second_schedule_fires_on_time() {
    let s = setup(&[("tick", "schedule: \"*/2 * * * * *\"\n")]);
    let start =
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(300);
    let (runs, _) = run_for(
        &s,
        start,
        Duration::ZERO,
        HashMap::new(),
        Duration::from_millis(10_500),
        |_| {},
    )
    .await;
    let secs: Vec<u32> = runs.iter().map(|r| r.2.second()).collect();
    assert_eq!(secs, [2, 4, 6, 8, 10], "{runs:?}");
    for (_, trigger, at) in &runs {
        assert_eq!(*trigger, Trigger::Schedule);
        assert!(
            at.nanosecond() < 5_000_000,
            "fired within 5 ms of the second: {at}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_daily_0230_job_runs_once_on_the_new_york_spring_forward_day() {
    let s = setup(&[(
        "night",
        "schedule: \"30 2 * * *\"\ntimezone: America/New_York\n",
    )]);
    // 2026-03-08 00:00 EST; the clocks jump from 02:00 to 03:00.
    let start = Utc.with_ymd_and_hms(2026, 3, 8, 5, 0, 0).unwrap();
    let (runs, _) = run_for(
        &s,
        start,
        Duration::ZERO,
        HashMap::new(),
        Duration::from_secs(24 * 3600 - 60),
        |_| {},
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let local = runs[0].2.with_timezone(&chrono_tz::America::New_York);
    assert_eq!(local.date_naive().to_string(), "2026-03-08");
}

#[tokio::test(start_paused = true)]
async fn a_daily_0130_job_runs_once_on_the_new_york_fall_back_day() {
    let s = setup(&[(
        "night",
        "schedule: \"30 1 * * *\"\ntimezone: America/New_York\n",
    )]);
    // 2026-11-01 00:00 EDT; 01:00-02:00 happens twice.
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 4, 0, 0).unwrap();
    let (runs, _) = run_for(
        &s,
        start,
        Duration::ZERO,
        HashMap::new(),
        Duration::from_secs(25 * 3600 - 60),
        |_| {},
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn runs_missed_during_downtime_are_caught_up_once_not_n_times() {
    let s = setup(&[
        ("every-minute", "schedule: \"0 * * * * *\"\n"),
        ("no-catch-up", "schedule: \"0 * * * * *\"\ncatch_up: none\n"),
        ("never-ran", "schedule: \"0 * * * * *\"\n"),
    ]);
    let start = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 30).unwrap();
    let down_since = start - chrono::Duration::minutes(45); // 45 missed minutes
    let last: HashMap<String, DateTime<Utc>> = [
        ("every-minute".to_string(), down_since),
        ("no-catch-up".to_string(), down_since),
    ]
    .into();
    let (runs, _) = run_for(
        &s,
        start,
        Duration::ZERO,
        last,
        Duration::from_secs(20),
        |_| {},
    )
    .await;
    let catch_ups: Vec<&String> = runs
        .iter()
        .filter(|r| r.1 == Trigger::CatchUp)
        .map(|r| &r.0)
        .collect();
    assert_eq!(catch_ups, [&"every-minute".to_string()], "{runs:?}");
    assert_eq!(
        runs.len(),
        1,
        "nothing else before the next minute: {runs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fifty_triggers_during_one_run_give_exactly_one_follow_up_run() {
    let s = setup(&[("busy", "")]);
    let start = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let (runs, coalesced) = run_for(
        &s,
        start,
        Duration::from_secs(5),
        HashMap::new(),
        Duration::from_secs(30),
        |tx| {
            tx.send(("busy".into(), Trigger::Watch)).unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for _ in 0..50 {
                    tx.send(("busy".into(), Trigger::Watch)).unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        },
    )
    .await;
    assert_eq!(runs.len(), 2, "the first run and one follow-up: {runs:?}");
    assert_eq!(
        (runs[1].2 - runs[0].2).num_seconds(),
        5,
        "the follow-up starts when the first run ends"
    );
    assert_eq!(coalesced, 49);
}

#[tokio::test(start_paused = true)]
async fn a_job_never_runs_twice_at_once_and_max_parallel_jobs_holds() {
    let s = setup(&[("a", ""), ("b", ""), ("c", "")]);
    // One server: max_parallel_jobs defaults to 1.
    let start = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let (runs, _) = run_for(
        &s,
        start,
        Duration::from_secs(2),
        HashMap::new(),
        Duration::from_secs(20),
        |tx| {
            for j in ["a", "b", "c", "a"] {
                tx.send((j.into(), Trigger::Watch)).unwrap();
            }
        },
    )
    .await;
    let mut times: Vec<i64> = runs.iter().map(|r| (r.2 - start).num_seconds()).collect();
    times.sort();
    assert_eq!(times, [0, 2, 4, 6], "one run at a time, each 2 s: {runs:?}");
}
