//! Write mayfly process types in Rust.
//!
//! A web process type is one function from a [`http::Request`] to a
//! [`http::Response`], marked with [`http_handler`]. mayfly runs every request
//! in a fresh instance of your component, so a handler keeps nothing between
//! requests: state belongs in backing services.
//!
//! ```no_run
//! use mayfly_guest::http::{Request, Response};
//!
//! #[mayfly_guest::http_handler]
//! fn handle(req: Request) -> Response {
//!     Response::text(format!("hello from {}\n", req.path()))
//! }
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (`mayfly build` picks a toolchain
//! that works on the machine) and point a `mayfly.toml` at the `.wasm` file.
//! `std` works: `println!` and `eprintln!` become host log lines tagged with
//! the process and request, `std::env::var` sees the manifest's `env`.

#![warn(missing_docs)]

pub mod http;

/// Marks a function as the HTTP handler of a web process type.
///
/// The function takes a [`http::Request`] and returns anything that implements
/// [`http::IntoResponse`]: a [`http::Response`], a `String`, a `&str`, or a
/// `Result` of those (an `Err` becomes a 500 and its message goes to the log).
/// There is one handler per component.
///
/// ```no_run
/// use mayfly_guest::http::{Request, Response};
///
/// #[mayfly_guest::http_handler]
/// fn handle(req: Request) -> Result<Response, std::str::Utf8Error> {
///     let name = req.body_text()?;
///     Ok(Response::text(format!("hello, {name}\n")))
/// }
/// ```
pub use mayfly_guest_macros::http_handler;

/// Marks a function as the job handler of a job process type.
///
/// The function takes a [`job::Job`] and returns `Result<(), job::JobError>`:
/// `Ok` marks the job done, [`job::JobError::retry`] runs it again later,
/// [`job::JobError::fail`] sends it to the dead letters. A panic counts as a
/// retry. There is one handler per component.
///
/// ```no_run
/// use mayfly_guest::job::{Job, JobError};
/// use mayfly_guest::kv::Store;
///
/// #[mayfly_guest::job_handler]
/// fn run(job: Job) -> Result<(), JobError> {
///     let text = job.payload_text().map_err(|_| JobError::fail("payload is not UTF-8"))?;
///     let words = text.split_whitespace().count();
///     Store::open_default()
///         .and_then(|store| store.set(&format!("words:{}", job.id()), words.to_string()))
///         .map_err(|err| JobError::retry(err.to_string()))
/// }
/// ```
pub use mayfly_guest_macros::job_handler;

/// Why a call to a backing service (the queue, the key-value store) failed,
/// in words from the host: a payload too large, a store not attached, ...
///
/// ```
/// let err = mayfly_guest::Error::new("queue is full");
/// assert_eq!(err.to_string(), "queue is full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    ///
    /// ```
    /// let err = mayfly_guest::Error::new("no such bucket");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub mod config;
pub mod job;
pub mod kv;
pub mod queue;

/// Implementation details used by the code that [`http_handler`] generates.
/// Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub mod http_world {
        wit_bindgen::generate!({
            path: "../wit",
            world: "mayfly:process/http",
            pub_export_macro: true,
            export_macro_name: "export_http",
            generate_all,
        });
    }

    pub use http_world::export_http;
    pub use http_world::exports::wasi::http::incoming_handler::Guest as IncomingHandler;
    pub use http_world::wasi::http::types::{IncomingRequest, ResponseOutparam};

    /// The worker world shares every import with the http world, so the
    /// SDK's `queue`, `kv` and `config` modules serve both.
    pub mod worker_world {
        wit_bindgen::generate!({
            path: "../wit",
            world: "mayfly:process/worker",
            pub_export_macro: true,
            export_macro_name: "export_worker",
            with: {
                "wasi:io/poll@0.2.12": crate::__private::http_world::wasi::io::poll,
                "wasi:io/error@0.2.12": crate::__private::http_world::wasi::io::error,
                "wasi:io/streams@0.2.12": crate::__private::http_world::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": crate::__private::http_world::wasi::clocks::monotonic_clock,
                "wasi:clocks/wall-clock@0.2.12": crate::__private::http_world::wasi::clocks::wall_clock,
                "wasi:random/random@0.2.12": crate::__private::http_world::wasi::random::random,
                "wasi:cli/stdout@0.2.12": crate::__private::http_world::wasi::cli::stdout,
                "wasi:cli/stderr@0.2.12": crate::__private::http_world::wasi::cli::stderr,
                "wasi:cli/stdin@0.2.12": crate::__private::http_world::wasi::cli::stdin,
                "mayfly:process/queue@0.1.0": crate::__private::http_world::mayfly::process::queue,
                "mayfly:process/kv-atomics@0.1.0": crate::__private::http_world::mayfly::process::kv_atomics,
                "wasi:keyvalue/store@0.2.0-draft": crate::__private::http_world::wasi::keyvalue::store,
                "wasi:keyvalue/atomics@0.2.0-draft": crate::__private::http_world::wasi::keyvalue::atomics,
                "wasi:config/store@0.2.0-rc.1": crate::__private::http_world::wasi::config::store,
            },
            generate_all,
        });
    }

    pub use worker_world::export_worker;
    pub use worker_world::exports::mayfly::process::job_handler::Guest as JobHandler;
    pub use worker_world::mayfly::process::types::{
        Job as WitJob, JobError as WitJobError, RetryRequest as WitRetryRequest,
    };
}
