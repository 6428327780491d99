//! A guest that never returns from `/`. mayfly stops it at its deadline
//! (epoch interruption: the loop has no host call to await) and answers 504,
//! while other requests, such as `/ok`, are served as usual.

use mayfly_guest::http::{Request, Response};

#[mayfly_guest::http_handler]
fn handle(req: Request) -> Response {
    if req.path() == "/ok" {
        return Response::text("ok\n");
    }
    // Flushed before the loop, so a test knows the spinner is running.
    println!("spinning");
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
