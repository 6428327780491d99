//! Misbehaviours on demand, to see how mayfly contains them:
//!
//! - `/alloc/N` touches N MiB of memory (past `memory`: the instance dies, 500)
//! - `/sleep/MS` holds its instance for MS milliseconds (fills `concurrency`)
//! - `/trap` panics (500, the host keeps serving)
//! - `/echo` answers with the size of the body it read
//! - `/env/NAME` answers with an environment variable, or 404

use mayfly_guest::http::{Request, Response};

#[mayfly_guest::http_handler]
fn handle(req: Request) -> Response {
    let mut parts = req.path().trim_start_matches('/').splitn(2, '/');
    match (parts.next().unwrap_or(""), parts.next()) {
        ("alloc", Some(mib)) => {
            let mib: usize = mib.parse().unwrap_or(1);
            let mut blocks = Vec::new();
            for _ in 0..mib {
                blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
            Response::text(format!("allocated {} MiB\n", blocks.len()))
        }
        ("sleep", Some(ms)) => {
            let ms: u64 = ms.parse().unwrap_or(100);
            println!("sleeping {ms} ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text(format!("slept {ms} ms\n"))
        }
        ("trap", _) => panic!("asked to trap"),
        ("echo", _) => Response::text(format!("{} bytes\n", req.body().len())),
        ("env", Some(name)) => match std::env::var(name) {
            Ok(value) => Response::text(value),
            Err(_) => Response::not_found(),
        },
        _ => Response::not_found(),
    }
}
