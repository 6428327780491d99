//! HTTP requests and responses as plain values.
//!
//! The whole request body is read before your handler runs (mayfly's
//! `max_body` bounds it) and the response body is written after it returns.

use std::fmt;

use crate::__private::http_world::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method as WitMethod, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::__private::http_world::wasi::io::streams::StreamError;

/// A header: its name and its raw value.
///
/// ```
/// let header: mayfly_guest::http::Header = ("content-type".into(), b"text/plain".to_vec());
/// assert_eq!(header.0, "content-type");
/// ```
pub type Header = (String, Vec<u8>);

/// An incoming HTTP request, with its whole body.
///
/// ```no_run
/// use mayfly_guest::http::{Request, Response};
///
/// #[mayfly_guest::http_handler]
/// fn handle(req: Request) -> Response {
///     match (req.method(), req.path()) {
///         ("GET", "/") => Response::text("home\n"),
///         ("POST", "/echo") => Response::new(200).with_body(req.body().to_vec()),
///         _ => Response::not_found(),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path_with_query: String,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl Request {
    /// Builds a request by hand, for unit tests of a handler.
    ///
    /// ```
    /// use mayfly_guest::http::Request;
    ///
    /// let req = Request::new("POST", "/jobs?fast=1", vec![], b"hi".to_vec());
    /// assert_eq!(req.path(), "/jobs");
    /// assert_eq!(req.query(), Some("fast=1"));
    /// ```
    pub fn new(
        method: impl Into<String>,
        path_with_query: impl Into<String>,
        headers: Vec<Header>,
        body: Vec<u8>,
    ) -> Self {
        Request {
            method: method.into(),
            path_with_query: path_with_query.into(),
            headers,
            body,
        }
    }

    /// The method in upper case, such as `"GET"`.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("GET", "/", vec![], vec![]);
    /// assert_eq!(req.method(), "GET");
    /// ```
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query string: `"/jobs/42"`.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("GET", "/jobs/42?full", vec![], vec![]);
    /// assert_eq!(req.path(), "/jobs/42");
    /// ```
    pub fn path(&self) -> &str {
        self.path_with_query
            .split_once('?')
            .map_or(&self.path_with_query[..], |(path, _)| path)
    }

    /// The query string after `?`, if there is one.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("GET", "/search?q=wasm", vec![], vec![]);
    /// assert_eq!(req.query(), Some("q=wasm"));
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, query)| query)
    }

    /// All headers, in the order they arrived. Names are lower case.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("GET", "/", vec![("accept".into(), b"*/*".to_vec())], vec![]);
    /// assert_eq!(req.headers().len(), 1);
    /// ```
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The first value of a header as text, looked up case-insensitively.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("GET", "/", vec![("content-type".into(), b"text/plain".to_vec())], vec![]);
    /// assert_eq!(req.header("Content-Type"), Some("text/plain"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body as bytes.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("POST", "/", vec![], vec![1, 2, 3]);
    /// assert_eq!(req.body(), &[1, 2, 3]);
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("POST", "/", vec![], b"two words".to_vec());
    /// assert_eq!(req.body_text().unwrap(), "two words");
    /// ```
    pub fn body_text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// Takes the body out of the request.
    ///
    /// ```
    /// # use mayfly_guest::http::Request;
    /// let req = Request::new("POST", "/", vec![], b"data".to_vec());
    /// assert_eq!(req.into_body(), b"data");
    /// ```
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

/// An HTTP response: a status, headers and a body.
///
/// ```
/// use mayfly_guest::http::Response;
///
/// let res = Response::new(201)
///     .with_header("location", "/jobs/7")
///     .with_body("created\n");
/// assert_eq!(res.status(), 201);
/// assert_eq!(res.body(), b"created\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::new(204).status(), 204);
    /// ```
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `200 OK` with a `text/plain` body.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// let res = Response::text("hello\n");
    /// assert_eq!(res.header("content-type"), Some("text/plain; charset=utf-8"));
    /// ```
    pub fn text(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// A `200 OK` with an `application/json` body you have already serialized.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// let res = Response::json(r#"{"ok":true}"#);
    /// assert_eq!(res.header("content-type"), Some("application/json"));
    /// ```
    pub fn json(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "application/json")
            .with_body(body.into())
    }

    /// A `404 Not Found`.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::not_found().status(), 404);
    /// ```
    pub fn not_found() -> Self {
        Response::new(404).with_body("not found\n")
    }

    /// Replaces the status.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::text("gone").with_status(410).status(), 410);
    /// ```
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header (a name may appear more than once).
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// let res = Response::new(200).with_header("cache-control", "no-store");
    /// assert_eq!(res.header("cache-control"), Some("no-store"));
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::new(200).with_body(vec![0u8; 3]).body().len(), 3);
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::not_found().status(), 404);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header as text, looked up case-insensitively.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::json("1").header("Content-Type"), Some("application/json"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body.
    ///
    /// ```
    /// # use mayfly_guest::http::Response;
    /// assert_eq!(Response::text("hi").body(), b"hi");
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// What a handler may return.
///
/// ```
/// use mayfly_guest::http::{IntoResponse, Response};
///
/// assert_eq!("hi".into_response(), Response::text("hi"));
/// let failed: Result<Response, String> = Err("disk full".into());
/// assert_eq!(failed.into_response().status(), 500);
/// ```
pub trait IntoResponse {
    /// Turns the value into a response.
    ///
    /// ```
    /// use mayfly_guest::http::IntoResponse;
    /// assert_eq!(String::from("hi").into_response().body(), b"hi");
    /// ```
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

/// An `Err` is logged to stderr (so it reaches the host log with the request
/// id) and answered with a bare 500: internals do not leak to clients.
impl<T: IntoResponse, E: fmt::Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(value) => value.into_response(),
            Err(err) => {
                eprintln!("handler error: {err}");
                Response::new(500).with_body("internal server error\n")
            }
        }
    }
}

/// Runs a handler on one incoming request. Called by the code that
/// `#[http_handler]` generates.
#[doc(hidden)]
pub fn __dispatch<R: IntoResponse>(
    request: IncomingRequest,
    response_out: ResponseOutparam,
    handler: fn(Request) -> R,
) {
    let response = match read_request(request) {
        Ok(request) => handler(request).into_response(),
        Err(err) => Response::new(400).with_body(format!("bad request: {err}\n")),
    };
    send_response(response, response_out);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        WitMethod::Get => "GET".to_string(),
        WitMethod::Head => "HEAD".to_string(),
        WitMethod::Post => "POST".to_string(),
        WitMethod::Put => "PUT".to_string(),
        WitMethod::Delete => "DELETE".to_string(),
        WitMethod::Connect => "CONNECT".to_string(),
        WitMethod::Options => "OPTIONS".to_string(),
        WitMethod::Trace => "TRACE".to_string(),
        WitMethod::Patch => "PATCH".to_string(),
        WitMethod::Other(other) => other,
    };
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let headers = request.headers().entries();
    let body = request
        .consume()
        .map_err(|()| "request body was already taken".to_string())?;
    let body = read_body(body)?;
    Ok(Request {
        method,
        path_with_query,
        headers,
        body,
    })
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "request body stream was already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(format!("reading the body: {}", err.to_debug_string()))
                }
            }
        }
        // The stream is a child of the body and must be dropped before it.
    }
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

fn send_response(response: Response, response_out: ResponseOutparam) {
    let headers = match Fields::from_list(&response.headers) {
        Ok(fields) => fields,
        Err(err) => {
            eprintln!("response has an invalid header ({err:?}); answering 500 instead");
            return send_response(Response::new(500), response_out);
        }
    };
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        eprintln!(
            "response status {} is not a valid HTTP status; answering 500 instead",
            response.status
        );
        return send_response(Response::new(500), response_out);
    }
    let body = outgoing.body().expect("a new response has a body");
    ResponseOutparam::set(response_out, Ok(outgoing));
    {
        let stream = body.write().expect("a new body has a stream");
        // `blocking_write_and_flush` takes at most 4096 bytes per call.
        for chunk in response.body.chunks(4096) {
            if let Err(err) = stream.blocking_write_and_flush(chunk) {
                eprintln!("client went away while the response was written: {err:?}");
                return;
            }
        }
    }
    if let Err(err) = OutgoingBody::finish(body, None) {
        eprintln!("finishing the response body failed: {err:?}");
    }
}
