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

    pub use http_world::exports::wasi::http::incoming_handler::Guest as IncomingHandler;
    pub use http_world::export_http;
    pub use http_world::wasi::http::types::{IncomingRequest, ResponseOutparam};
}
