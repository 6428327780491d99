//! Counts requests in guest memory. Every response says 1: each request runs
//! in a fresh instance, so nothing survives from one request to the next.

use std::sync::atomic::{AtomicU64, Ordering};

use mayfly_guest::http::{Request, Response};

static SERVED: AtomicU64 = AtomicU64::new(0);

#[mayfly_guest::http_handler]
fn handle(_req: Request) -> Response {
    let count = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    Response::text(format!("{count}\n"))
}
