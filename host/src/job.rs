//! The job process type: a worker that leases jobs from the queue and runs
//! each in a fresh instance of a component exporting
//! `mayfly:process/job-handler`.
//!
//! One loop leases as many jobs as there are free slots (`concurrency`), in
//! one transaction; each job runs in its own task and instance; outcomes go
//! to one completer task that records them in batches; a heartbeat task
//! extends the leases of running jobs. On shutdown the loop stops leasing,
//! running jobs get the grace period, and what still runs is stopped through
//! the epoch callback and released (NACK) without counting the attempt.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

use crate::instance::{new_store, GuestState, InstanceConfig, Interrupted, JobLease};
use crate::lifecycle::Shutdown;
use crate::queue::{now_ms, LeaseRef, Leased, Outcome, Policy};
use crate::services::exports::mayfly::process::job_handler::{Job, JobError};
use crate::services::WorkerPre;
use crate::state::Backends;

const JOB_HANDLER: &str = "mayfly:process/job-handler";

/// How often an idle worker looks for new jobs. Bounded so that a job
/// enqueued into an idle queue starts within this much (SQLite has no
/// cross-process notification).
const IDLE_POLL: Duration = Duration::from_millis(5);

/// A component ready to run jobs.
pub struct Runner {
    engine: Engine,
    pre: WorkerPre<GuestState>,
    config: InstanceConfig,
    shutdown: Shutdown,
}

impl Runner {
    pub fn new(
        engine: &Engine,
        component: &Component,
        config: InstanceConfig,
        shutdown: Shutdown,
    ) -> Result<Runner> {
        crate::engine::require_export(
            engine,
            component,
            JOB_HANDLER,
            "a job process type needs a component built for the mayfly:process/worker world, \
             for example with `#[mayfly_guest::job_handler]`",
        )?;
        let mut linker = Linker::<GuestState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        crate::services::add_to_linker(&mut linker, true)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context(
                "the component imports something mayfly does not provide to job guests \
                 (WASI 0.2, wasi:keyvalue, wasi:config, mayfly:process)",
            )?;
        let pre = WorkerPre::new(pre).map_err(anyhow::Error::from)?;
        Ok(Runner {
            engine: engine.clone(),
            pre,
            config,
            shutdown,
        })
    }

    /// Runs one attempt of a job in a fresh instance.
    pub async fn run(&self, job: &Leased, lease: Option<JobLease>) -> Outcome {
        let mut store = new_store(
            &self.engine,
            &self.config,
            &format!("job {}", job.id),
            &self.shutdown,
            lease,
        );
        let record = Job {
            id: job.id.clone(),
            queue: job.queue.clone(),
            payload: job.payload.clone(),
            attempt: job.attempt,
            enqueued_at: job.enqueued_at_ms,
            deadline: now_ms() + self.config.deadline.as_millis() as u64,
        };
        let stop = store.data().stop();
        let result = stop
            .guard(async {
                let worker = self.pre.instantiate_async(&mut store).await?;
                worker
                    .mayfly_process_job_handler()
                    .call_handle(&mut store, &record)
                    .await
            })
            .await;
        match result {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(JobError::Retry(retry))) => Outcome::Retry {
                reason: retry.reason,
                delay: retry.delay_ms.map(Duration::from_millis),
            },
            Ok(Err(JobError::Fail(reason))) => Outcome::Fail { reason },
            Err(err) => match Interrupted::of(&err) {
                Some(Interrupted::Shutdown) => Outcome::Release,
                Some(Interrupted::Deadline) => Outcome::Retry {
                    reason: Interrupted::Deadline.to_string(),
                    delay: None,
                },
                None => Outcome::Retry {
                    reason: format!("the guest trapped: {:#}", anyhow::Error::from(err)),
                    delay: None,
                },
            },
        }
    }
}

/// The settings of a worker process, from the manifest.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub process: String,
    pub queues: Vec<String>,
    pub concurrency: u32,
    pub policy: Policy,
    pub grace: Duration,
}

/// Leases and runs jobs until shutdown.
pub async fn work(
    runner: Arc<Runner>,
    backends: Backends,
    config: WorkerConfig,
    shutdown: Shutdown,
) -> Result<()> {
    let owner = format!("{}@{}", config.process, std::process::id());
    let slots = Arc::new(Semaphore::new(config.concurrency as usize));
    let running: Arc<Mutex<HashSet<LeaseRef>>> = Default::default();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(LeaseRef, Outcome)>();
    let completer = tokio::spawn(complete(
        backends.clone(),
        owner.clone(),
        config.policy,
        running.clone(),
        done_rx,
    ));
    let heartbeat = tokio::spawn(heartbeat(
        backends.clone(),
        owner.clone(),
        config.policy.lease,
        running.clone(),
    ));

    let mut idle = IDLE_POLL;
    while !shutdown.is_draining() {
        // Wait for at least one free slot, then take every free one.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            () = shutdown.draining() => break,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let queue = backends.queue.clone();
        let (queues, max, lease_owner, policy) = (
            config.queues.clone(),
            permits.len(),
            owner.clone(),
            config.policy,
        );
        let leased =
            tokio::task::spawn_blocking(move || queue.lease(&queues, max, &lease_owner, policy))
                .await?
                .with_context(|| format!("{} cannot lease jobs", config.process));
        let leased = match leased {
            Ok(leased) => leased,
            Err(err) => {
                // The database may be busy or briefly unavailable: keep the
                // process up and try again.
                tracing::error!("{err:#}");
                drop(permits);
                sleep_unless_draining(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        if leased.is_empty() {
            drop(permits);
            sleep_unless_draining(&shutdown, idle).await;
            idle = (idle * 2).min(Duration::from_millis(20));
            continue;
        }
        idle = IDLE_POLL;
        {
            let mut running = running.lock().unwrap();
            running.extend(leased.iter().map(Leased::lease_ref));
        }
        for (job, permit) in leased.into_iter().zip(permits) {
            let runner = runner.clone();
            let done = done_tx.clone();
            let lease = JobLease {
                backends: backends.clone(),
                owner: owner.clone(),
                lease: job.lease_ref(),
            };
            let label = config.process.clone();
            let max_attempts = config.policy.max_attempts;
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = runner.run(&job, Some(lease)).await;
                log_outcome(&label, &job, max_attempts, &outcome, started.elapsed());
                let _ = done.send((job.lease_ref(), outcome));
                drop(permit);
            });
        }
    }

    tracing::info!("{} stopped leasing; finishing running jobs", config.process);
    let all = config.concurrency;
    shutdown
        .finish(config.grace, async {
            let _ = slots.acquire_many(all).await;
        })
        .await;
    drop(done_tx);
    heartbeat.abort();
    completer.await??;
    Ok(())
}

async fn sleep_unless_draining(shutdown: &Shutdown, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = shutdown.draining() => {}
    }
}

fn log_outcome(label: &str, job: &Leased, max_attempts: u32, outcome: &Outcome, took: Duration) {
    let ms = took.as_secs_f64() * 1e3;
    match outcome {
        Outcome::Done => tracing::debug!("{label} job {} done in {ms:.1} ms", job.id),
        Outcome::Retry { reason, .. } => tracing::warn!(
            "{label} job {} attempt {} of {max_attempts} failed ({}): {reason}",
            job.id,
            job.attempt,
            if job.attempt >= max_attempts {
                "dead"
            } else {
                "will retry"
            }
        ),
        Outcome::Fail { reason } => {
            tracing::warn!("{label} job {} failed for good: {reason}", job.id)
        }
        Outcome::Release => tracing::info!(
            "{label} job {} stopped by shutdown; released to the queue",
            job.id
        ),
    }
}

/// Records outcomes: everything that arrived since the last commit goes in
/// one transaction, so under load many acks cost one commit. A failed commit
/// is retried (the leases stay in `running`, so they keep their heartbeat).
async fn complete(
    backends: Backends,
    owner: String,
    policy: Policy,
    running: Arc<Mutex<HashSet<LeaseRef>>>,
    mut rx: mpsc::UnboundedReceiver<(LeaseRef, Outcome)>,
) -> Result<()> {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let batch = Arc::new(batch);
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=8 {
            let queue = backends.queue.clone();
            let owner = owner.clone();
            let outcomes = batch.clone();
            let result =
                tokio::task::spawn_blocking(move || queue.complete(&owner, &outcomes, policy))
                    .await?;
            match result {
                Ok(()) => break,
                Err(err) if attempt < 8 => {
                    tracing::warn!(
                        "cannot record {} job outcome(s), retrying: {err:#}",
                        batch.len()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                // The leases will expire and the jobs run again: at-least-once.
                Err(err) => {
                    tracing::error!("cannot record {} job outcome(s): {err:#}", batch.len())
                }
            }
        }
        let mut running = running.lock().unwrap();
        for (lease, _) in batch.iter() {
            running.remove(lease);
        }
    }
    Ok(())
}

/// Keeps the leases of running jobs alive, every third of a lease.
async fn heartbeat(
    backends: Backends,
    owner: String,
    lease: Duration,
    running: Arc<Mutex<HashSet<LeaseRef>>>,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ids: Vec<LeaseRef> = running.lock().unwrap().iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let queue = backends.queue.clone();
        let owner = owner.clone();
        match tokio::task::spawn_blocking(move || queue.heartbeat(&owner, &ids, lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("cannot extend job leases: {err:#}"),
            Err(err) => tracing::warn!("lease heartbeat failed: {err}"),
        }
    }
}
