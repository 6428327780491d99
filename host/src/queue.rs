//! The durable job queue: one trait, backends chosen by URL.
//!
//! Semantics, the same on every backend:
//! - at-least-once delivery: a job is *leased*, never popped; a leased job is
//!   invisible to other workers until its lease expires, so a worker that
//!   dies loses its leases by expiry and the job is delivered again;
//! - every lease starts an attempt; a retry is delayed with exponential
//!   backoff and jitter; past `max_attempts` the job is dead, kept with its
//!   last error until `jobs retry` revives it;
//! - a release (NACK) puts a leased job back at once without counting the
//!   attempt: for work the host stopped, not work that failed;
//! - delayed jobs, and an idempotency key that makes a second enqueue return
//!   the first job's id.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

/// Largest payload `enqueue` accepts: a queue carries references to data,
/// not the data (put big things in the key-value store).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Done,
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        match text {
            "queued" => Some(State::Queued),
            "running" => Some(State::Running),
            "done" => Some(State::Done),
            "dead" => Some(State::Dead),
            _ => None,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub payload: Vec<u8>,
    pub delay: Duration,
    pub idempotency_key: Option<String>,
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
}

/// A job leased to a worker.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub queue: String,
    pub payload: Vec<u8>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub enqueued_at_ms: u64,
}

/// One attempt's hold on a job: the job and the attempt number. Outcomes and
/// heartbeats name it, so a late result of an earlier attempt (whose lease
/// expired and was given again) can never touch the current one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    pub id: String,
    pub attempt: u32,
}

impl Leased {
    pub fn lease_ref(&self) -> LeaseRef {
        LeaseRef {
            id: self.id.clone(),
            attempt: self.attempt,
        }
    }
}

/// Longest a guest may extend its lease by at once.
pub const MAX_EXTEND: Duration = Duration::from_secs(24 * 3600);

/// Longest delay a job may be given (ten years): later is a mistake, and
/// it keeps millisecond arithmetic far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done,
    Retry {
        reason: String,
        delay: Option<Duration>,
    },
    Fail {
        reason: String,
    },
    Release,
}

/// A job as `jobs list` / `jobs show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    pub state: State,
    pub attempts: u32,
    pub enqueued_at_ms: u64,
    pub run_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub payload_bytes: usize,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// The retry policy a worker applies to the jobs it runs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    pub lease: Duration,
}

pub trait Queue: Send + Sync {
    /// Adds a job, or returns the existing one with the same idempotency key.
    fn enqueue(&self, job: NewJob) -> Result<Enqueued>;

    /// Adds many jobs in one transaction (no idempotency keys); returns their ids.
    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<String>>;

    /// How many jobs are in `state`.
    fn count(&self, state: State) -> Result<u64>;

    /// Leases up to `max` ready jobs of `queues` to `owner`. Jobs whose lease
    /// expired are ready again (or dead, if that was their last attempt).
    fn lease(
        &self,
        queues: &[String],
        max: usize,
        owner: &str,
        policy: Policy,
    ) -> Result<Vec<Leased>>;

    /// Records how attempts ended, in one transaction. Outcomes for jobs no
    /// longer leased to `owner` (the lease expired meanwhile) are ignored.
    fn complete(&self, owner: &str, outcomes: &[(LeaseRef, Outcome)], policy: Policy)
        -> Result<()>;

    /// Extends the leases `owner` holds to at least `lease` from now (never
    /// shortens one).
    fn heartbeat(&self, owner: &str, leases: &[LeaseRef], lease: Duration) -> Result<()>;

    fn list(&self, queue: Option<&str>, state: Option<State>, limit: usize)
        -> Result<Vec<JobInfo>>;

    fn get(&self, id: &str) -> Result<Option<JobInfo>>;

    /// Puts a dead job back in its queue with a fresh set of attempts.
    fn revive(&self, id: &str) -> Result<()>;

    /// Deletes every job in `state` (done or dead); returns how many.
    fn purge(&self, state: State) -> Result<u64>;
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed:
/// 1s, 2s, 4s, ... capped at one hour, each ±25% so that jobs which failed
/// together do not come back together.
pub fn backoff(attempt: u32, jitter_unit: f64) -> Duration {
    let base = 2f64
        .powi(attempt.saturating_sub(1).min(12) as i32)
        .min(3600.0);
    Duration::from_secs_f64(base * (0.75 + 0.5 * jitter_unit.clamp(0.0, 1.0)))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        assert_eq!(backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(4));
        assert!(backoff(3, 0.0) >= Duration::from_secs(3));
        assert!(backoff(3, 1.0) <= Duration::from_secs(5));
        assert!(backoff(40, 0.5) <= Duration::from_secs(3600));
    }
}
