//! Jobs as plain values, and what a running job may ask the host.

use std::time::Duration;

use crate::__private::worker_world::mayfly::process::job_context;
use crate::__private::{WitJob, WitJobError, WitRetryRequest};

/// One delivery of a job.
///
/// ```
/// use mayfly_guest::job::Job;
///
/// let job = Job::new("7", "default", b"two words".to_vec(), 1);
/// assert_eq!(job.payload_text().unwrap(), "two words");
/// ```
#[derive(Debug, Clone)]
pub struct Job {
    id: String,
    queue: String,
    payload: Vec<u8>,
    attempt: u32,
    enqueued_at_ms: u64,
    deadline_ms: u64,
}

impl Job {
    /// Builds a job by hand, for unit tests of a handler.
    ///
    /// ```
    /// let job = mayfly_guest::job::Job::new("1", "emails", vec![], 2);
    /// assert_eq!(job.attempt(), 2);
    /// ```
    pub fn new(
        id: impl Into<String>,
        queue: impl Into<String>,
        payload: Vec<u8>,
        attempt: u32,
    ) -> Self {
        Job {
            id: id.into(),
            queue: queue.into(),
            payload,
            attempt,
            enqueued_at_ms: 0,
            deadline_ms: 0,
        }
    }

    /// The job's id, the same on every attempt: key idempotent writes by it.
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("42", "q", vec![], 1);
    /// assert_eq!(job.id(), "42");
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue it came from.
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("42", "emails", vec![], 1);
    /// assert_eq!(job.queue(), "emails");
    /// ```
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The payload bytes.
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("1", "q", vec![1, 2], 1);
    /// assert_eq!(job.payload(), &[1, 2]);
    /// ```
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as UTF-8 text.
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("1", "q", b"hi".to_vec(), 1);
    /// assert_eq!(job.payload_text().unwrap(), "hi");
    /// ```
    pub fn payload_text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.payload)
    }

    /// 1 on the first delivery, 2 on the first retry, ...
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("1", "q", vec![], 3);
    /// assert_eq!(job.attempt(), 3);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the job was enqueued, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("1", "q", vec![], 1);
    /// let _age_base = job.enqueued_at_ms();
    /// ```
    pub fn enqueued_at_ms(&self) -> u64 {
        self.enqueued_at_ms
    }

    /// When this attempt will be stopped, in milliseconds since the Unix
    /// epoch (see [`extend`] to push it back).
    ///
    /// ```
    /// # let job = mayfly_guest::job::Job::new("1", "q", vec![], 1);
    /// let _stop_at = job.deadline_ms();
    /// ```
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
}

/// Why a job did not succeed.
///
/// ```
/// use std::time::Duration;
/// use mayfly_guest::job::JobError;
///
/// let later = JobError::retry_after("rate limited", Duration::from_secs(10));
/// let never = JobError::fail("no such customer");
/// assert!(matches!(never, JobError::Fail(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Run it again: after `delay`, or after the queue's exponential backoff.
    Retry {
        /// Why; kept as the job's last error.
        reason: String,
        /// When to try again; `None` lets the queue back off (1s, 2s, 4s, ...).
        delay: Option<Duration>,
    },
    /// Give up: the job goes to the dead letters.
    Fail(String),
}

impl JobError {
    /// Retry after the queue's backoff (1s, 2s, 4s, ... with jitter).
    ///
    /// ```
    /// let err = mayfly_guest::job::JobError::retry("database busy");
    /// ```
    pub fn retry(reason: impl Into<String>) -> Self {
        JobError::Retry {
            reason: reason.into(),
            delay: None,
        }
    }

    /// Retry after `delay`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let err = mayfly_guest::job::JobError::retry_after("busy", Duration::from_millis(250));
    /// ```
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Self {
        JobError::Retry {
            reason: reason.into(),
            delay: Some(delay),
        }
    }

    /// Fail for good.
    ///
    /// ```
    /// let err = mayfly_guest::job::JobError::fail("payload is not JSON");
    /// ```
    pub fn fail(reason: impl Into<String>) -> Self {
        JobError::Fail(reason.into())
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry { reason, .. } => write!(f, "retry: {reason}"),
            JobError::Fail(reason) => write!(f, "fail: {reason}"),
        }
    }
}

/// True once the worker is shutting down. A long job can check it and
/// return [`JobError::retry`] early; if it runs on, it is stopped at the end
/// of the grace period and released to the queue without counting an attempt.
///
/// ```no_run
/// for chunk in 0..1000 {
///     if mayfly_guest::job::cancelled() {
///         break;
///     }
///     // ... work on `chunk` ...
/// }
/// ```
pub fn cancelled() -> bool {
    job_context::cancelled()
}

/// Keeps the job's lease and deadline for `more` from now, for a job that
/// knows it needs longer. Returns the new deadline (ms since the Unix epoch).
///
/// ```no_run
/// use std::time::Duration;
/// mayfly_guest::job::extend(Duration::from_secs(120)).expect("lease extended");
/// ```
pub fn extend(more: Duration) -> Result<u64, String> {
    job_context::extend(more.as_millis() as u64)
}

/// Runs a handler on one job. Called by the code that `#[job_handler]`
/// generates.
#[doc(hidden)]
pub fn __dispatch(
    job: WitJob,
    handler: fn(Job) -> Result<(), JobError>,
) -> Result<(), WitJobError> {
    let job = Job {
        id: job.id,
        queue: job.queue,
        payload: job.payload,
        attempt: job.attempt,
        enqueued_at_ms: job.enqueued_at,
        deadline_ms: job.deadline,
    };
    handler(job).map_err(|err| match err {
        JobError::Retry { reason, delay } => WitJobError::Retry(WitRetryRequest {
            reason,
            delay_ms: delay.map(|d| d.as_millis() as u64),
        }),
        JobError::Fail(reason) => WitJobError::Fail(reason),
    })
}
