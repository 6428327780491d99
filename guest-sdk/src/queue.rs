//! Enqueue jobs for a worker process type, from a web or a job handler.

use std::time::Duration;

use crate::__private::http_world::mayfly::process::queue as wit;

pub use crate::Error;

/// How to enqueue: after a delay, or at most once per key.
///
/// ```
/// use std::time::Duration;
/// use mayfly_guest::queue::Options;
///
/// let options = Options::new().delay(Duration::from_secs(30)).key("order-42");
/// assert_eq!(options.idempotency_key(), Some("order-42"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Options {
    delay: Option<Duration>,
    key: Option<String>,
}

impl Options {
    /// No delay, no key.
    ///
    /// ```
    /// let options = mayfly_guest::queue::Options::new();
    /// assert_eq!(options.idempotency_key(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Run the job no earlier than `delay` from now.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let options = mayfly_guest::queue::Options::new().delay(Duration::from_millis(500));
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// A second enqueue with the same key returns the first job's id
    /// instead of adding a job.
    ///
    /// ```
    /// let options = mayfly_guest::queue::Options::new().key("signup:ada@example.org");
    /// assert_eq!(options.idempotency_key(), Some("signup:ada@example.org"));
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The idempotency key, if set.
    ///
    /// ```
    /// assert_eq!(mayfly_guest::queue::Options::new().idempotency_key(), None);
    /// ```
    pub fn idempotency_key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// Enqueues a job on `queue` and returns its id.
///
/// ```no_run
/// let id = mayfly_guest::queue::enqueue("emails", b"welcome:ada@example.org")?;
/// println!("enqueued job {id}");
/// # Ok::<(), mayfly_guest::queue::Error>(())
/// ```
pub fn enqueue(queue: &str, payload: impl AsRef<[u8]>) -> Result<String, Error> {
    enqueue_with(queue, payload, &Options::new())
}

/// Enqueues a job with [`Options`] and returns its id (the existing job's id
/// when the idempotency key was seen before).
///
/// ```no_run
/// use std::time::Duration;
/// use mayfly_guest::queue::{enqueue_with, Options};
///
/// let id = enqueue_with("reports", "monthly", &Options::new().delay(Duration::from_secs(60)))?;
/// # Ok::<(), mayfly_guest::queue::Error>(())
/// ```
pub fn enqueue_with(
    queue: &str,
    payload: impl AsRef<[u8]>,
    options: &Options,
) -> Result<String, Error> {
    let options = wit::EnqueueOptions {
        delay_ms: options.delay.map(|d| d.as_millis() as u64),
        idempotency_key: options.key.clone(),
    };
    wit::enqueue(queue, payload.as_ref(), &options).map_err(Error::new)
}
