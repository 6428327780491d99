//! A `wasi:http/proxy` component written straight against wit-bindgen, without
//! mayfly's SDK, and linked with the proxy adapter so that it imports nothing
//! but the proxy world. Any component of this shape runs on mayfly unchanged.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:http/proxy@0.2.12",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct RawHandler;

impl Guest for RawHandler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(200).expect("valid status");
        let body = response.body().expect("body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("stream");
            let text = format!("raw wasi:http component at {path}\n");
            out.blocking_write_and_flush(text.as_bytes())
                .expect("write");
        }
        OutgoingBody::finish(body, None).expect("finish");
    }
}

export!(RawHandler);
