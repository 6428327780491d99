//! The smallest web process type: answers every request with a greeting.

use mayfly_guest::http::{Request, Response};

#[mayfly_guest::http_handler]
fn handle(req: Request) -> Response {
    // The manifest's `env` is the only environment a guest sees.
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_string());
    println!("{} {}", req.method(), req.path());
    Response::text(format!("{greeting} from mayfly\n"))
}
