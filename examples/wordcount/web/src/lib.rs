//! `POST /jobs` with a text enqueues a word count and answers 202 with the
//! job's location; `GET /jobs/{id}` answers the count once a worker stored it.

use mayfly_guest::http::{Request, Response};
use mayfly_guest::kv::Store;
use mayfly_guest::queue;

#[mayfly_guest::http_handler]
fn handle(req: Request) -> Response {
    match (req.method(), req.path()) {
        ("POST", "/jobs") => match queue::enqueue("wordcount", req.body()) {
            Ok(id) => Response::new(202)
                .with_header("location", format!("/jobs/{id}"))
                .with_header("content-type", "application/json")
                .with_body(format!("{{\"id\":\"{id}\",\"state\":\"queued\"}}\n")),
            Err(err) => Response::new(503).with_body(format!("cannot enqueue: {err}\n")),
        },
        ("GET", path) if path.starts_with("/jobs/") => {
            let id = &path["/jobs/".len()..];
            let store = match Store::open("wordcount") {
                Ok(store) => store,
                Err(err) => return Response::new(503).with_body(format!("{err}\n")),
            };
            match store.get(id) {
                Ok(Some(words)) => Response::json(format!(
                    "{{\"id\":\"{id}\",\"state\":\"done\",\"words\":{}}}\n",
                    String::from_utf8_lossy(&words)
                )),
                Ok(None) => Response::json(format!("{{\"id\":\"{id}\",\"state\":\"pending\"}}\n"))
                    .with_status(202),
                Err(err) => Response::new(503).with_body(format!("{err}\n")),
            }
        }
        _ => Response::not_found(),
    }
}
