//! Reads back what joblab's jobs recorded:
//! - `GET /kv/KEY`: the value, or 404
//! - `GET /sum/PREFIX`: how many keys start with PREFIX, and the sum of their
//!   values as numbers (`runs:` → jobs that finished, and how often)
//! - `POST /enqueue/PAYLOAD`: enqueue a lab job from a web guest

use mayfly_guest::http::{Request, Response};
use mayfly_guest::kv::Store;

#[mayfly_guest::http_handler]
fn handle(req: Request) -> Result<Response, mayfly_guest::kv::Error> {
    let store = Store::open("lab")?;
    let path = req.path();
    if let Some(key) = path.strip_prefix("/kv/") {
        return Ok(match store.get(key)? {
            Some(value) => Response::new(200).with_body(value),
            None => Response::not_found(),
        });
    }
    if let Some(prefix) = path.strip_prefix("/sum/") {
        let (mut count, mut sum, mut max) = (0u64, 0u64, 0u64);
        for key in store.keys()?.into_iter().filter(|k| k.starts_with(prefix)) {
            let value = store.get(&key)?.unwrap_or_default();
            let n: u64 = String::from_utf8_lossy(&value).parse().unwrap_or(0);
            count += 1;
            sum += n;
            max = max.max(n);
        }
        return Ok(Response::json(format!(
            "{{\"count\":{count},\"sum\":{sum},\"max\":{max}}}"
        )));
    }
    if let Some(payload) = path.strip_prefix("/enqueue/") {
        return Ok(match mayfly_guest::queue::enqueue("lab", payload) {
            Ok(id) => Response::new(202).with_body(id),
            Err(err) => Response::new(503).with_body(err.to_string()),
        });
    }
    Ok(Response::not_found())
}
