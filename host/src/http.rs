//! The HTTP process type: a hyper server that runs every request in a fresh
//! instance of a component exporting `wasi:http/incoming-handler`.
//!
//! Per request, in this order: take an admission permit (none left: 503 at
//! once), check and read the body (too big: 413), build a store and
//! instantiate from the `InstancePre` made at start, call the handler, stream
//! its response, drop the instance. The permit is taken before anything else
//! so a burst can never exhaust the instance pool.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::instance::{new_store, GuestState, InstanceConfig, Interrupted};
use crate::lifecycle::Shutdown;

/// The export every web component must have (any 0.2.x version).
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// A component ready to handle requests: linked and pre-instantiated once,
/// instantiated per request.
pub struct Handler {
    engine: Engine,
    pre: ProxyPre<GuestState>,
    config: InstanceConfig,
    shutdown: Shutdown,
}

/// Why a request got no response from the guest.
#[derive(Debug)]
pub enum GuestFailure {
    /// Stopped by the host (deadline or shutdown).
    Interrupted(Interrupted),
    /// Trapped, ran out of memory, or never answered.
    Failed(anyhow::Error),
    /// The request cannot be given to a guest (no usable Host, say).
    BadRequest(anyhow::Error),
}

impl GuestFailure {
    fn status(&self) -> StatusCode {
        match self {
            GuestFailure::Interrupted(Interrupted::Deadline) => StatusCode::GATEWAY_TIMEOUT,
            GuestFailure::Interrupted(Interrupted::Shutdown) => StatusCode::SERVICE_UNAVAILABLE,
            GuestFailure::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GuestFailure::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl Handler {
    /// Links `component` with all of WASI 0.2 and wasi:http, and checks that
    /// it is a web component.
    pub fn new(
        engine: &Engine,
        component: &Component,
        config: InstanceConfig,
        shutdown: Shutdown,
    ) -> Result<Handler> {
        crate::engine::require_export(
            engine,
            component,
            INCOMING_HANDLER,
            "a web process type needs a component built for the wasi:http/proxy world, \
             for example with `#[mayfly_guest::http_handler]`",
        )?;
        let mut linker = Linker::<GuestState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        crate::services::add_to_linker(&mut linker, false)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context(
                "the component imports something mayfly does not provide \
                 (mayfly provides WASI 0.2, wasi:http 0.2, wasi:keyvalue, wasi:config and mayfly:process/queue)",
            )?;
        let pre = ProxyPre::new(pre).map_err(anyhow::Error::from)?;
        Ok(Handler {
            engine: engine.clone(),
            pre,
            config,
            shutdown,
        })
    }

    /// Runs one request in a fresh instance. The instance lives until its
    /// response body is written (or it is stopped); `permit`, if any, is
    /// released only then.
    pub async fn handle(
        &self,
        request: Request<Full<Bytes>>,
        request_id: &str,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Response<HyperOutgoingBody>, GuestFailure> {
        let mut store = new_store(&self.engine, &self.config, request_id, &self.shutdown, None);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let setup = (|| {
            let mut http = wasmtime_wasi_http::WasiHttpView::http(store.data_mut());
            let request = http.new_incoming_request(Scheme::Http, request)?;
            let out = http.new_response_outparam(sender)?;
            wasmtime::Result::Ok((request, out))
        })();
        let (request, out) =
            setup.map_err(|e: wasmtime::Error| GuestFailure::BadRequest(e.into()))?;
        let pre = self.pre.clone();

        // The guest runs in its own task: it may keep writing the body after
        // the response head has gone out.
        let stop = store.data().stop();
        let task = tokio::spawn(async move {
            let _permit = permit;
            stop.guard(async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            })
            .await
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(GuestFailure::Failed(anyhow::anyhow!(
                "the guest answered with an error instead of a response: {code:?}"
            ))),
            // The guest dropped the outparam without setting it: it trapped,
            // was stopped, or returned without answering.
            Err(_) => Err(match task.await {
                Ok(Ok(())) => GuestFailure::Failed(anyhow::anyhow!(
                    "the guest returned without setting a response"
                )),
                Ok(Err(err)) => match Interrupted::of(&err) {
                    Some(why) => GuestFailure::Interrupted(why),
                    None => {
                        GuestFailure::Failed(anyhow::Error::from(err).context("the guest trapped"))
                    }
                },
                Err(join) => GuestFailure::Failed(anyhow::anyhow!("the guest task failed: {join}")),
            }),
        }
    }
}

/// The limits of a web process, from the manifest.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub process: String,
    pub host: String,
    pub port: u16,
    pub concurrency: u32,
    pub max_body: u64,
    pub grace: std::time::Duration,
    /// Share the port with other processes of the formation (SO_REUSEPORT).
    pub reuse_port: bool,
}

/// Binds the listening socket, with an error that says what to do when the
/// port is taken.
pub fn bind(config: &ServerConfig) -> Result<TcpListener> {
    let ip: std::net::IpAddr = config
        .host
        .parse()
        .with_context(|| format!("`{}` is not an IP address to listen on", config.host))?;
    let addr = SocketAddr::new(ip, config.port);
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("cannot create a TCP socket")?;
    socket.set_reuseaddr(true)?;
    if config.reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    match socket.bind(addr) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {} is already in use on {}: stop the process that holds it, \
             or choose another port with PORT=NNNN or `port` in the manifest",
            config.port,
            config.host
        ),
        Err(err) => return Err(err).with_context(|| format!("cannot listen on {addr}")),
    }
    socket
        .listen(1024)
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves until shutdown: accepts connections, runs each request through
/// `handler`, then drains.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<()> {
    let service = Arc::new(Service {
        handler,
        permits: Arc::new(Semaphore::new(config.concurrency as usize)),
        max_body: config.max_body,
        next_id: AtomicU64::new(0),
        id_prefix: format!("{:06x}", std::process::id() & 0xff_ffff),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off, do not die.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = shutdown.draining() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.call(req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("connection ended with an error: {err}");
            }
        });
    }

    // Stop accepting: new connections are refused from here on.
    drop(listener);
    let started = Instant::now();
    tracing::info!(
        "{} stopped accepting; finishing in-flight requests",
        config.process
    );
    // Idle keep-alive connections close now, busy ones after their response.
    shutdown.finish(config.grace, graceful.shutdown()).await;
    tracing::info!(
        "{} drained in {:.0} ms",
        config.process,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

struct Service {
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    max_body: u64,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Service {
    async fn call(&self, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let mut busy = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "server is at capacity, retry shortly\n",
            );
            busy.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            return busy;
        };
        let request_id = format!(
            "{}-{:x}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let too_big = || {
            plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is larger than {} bytes\n", self.max_body),
            )
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = req
            .headers()
            .get(hyper::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if declared.is_some_and(|len| len > self.max_body) && expects_continue {
            // The client waits for our go-ahead: refuse before it uploads.
            return too_big();
        }
        let (parts, body) = req.into_parts();
        // A client that stalls mid-body holds an admission permit: bound the
        // upload by the request deadline, and give it up at shutdown.
        let deadline = self.handler.config.deadline;
        let read = tokio::select! {
            read = tokio::time::timeout(deadline, read_body(body, self.max_body)) => read,
            () = self.handler.shutdown.cancelled() => {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down\n");
            }
        };
        let Ok(read) = read else {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            );
        };
        let body = match read {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return too_big(),
            Err(BodyError::Read(err)) => {
                tracing::debug!("reading a request body failed: {err}");
                return plain(StatusCode::BAD_REQUEST, "cannot read the request body\n");
            }
        };
        let request = Request::from_parts(parts, Full::new(body));
        match self
            .handler
            .handle(request, &request_id, Some(permit))
            .await
        {
            Ok(response) => response,
            Err(failure) => {
                let status = failure.status();
                match &failure {
                    GuestFailure::Interrupted(why) => {
                        tracing::warn!("{} {request_id} | {why}", self.handler.config.process)
                    }
                    GuestFailure::Failed(err) => {
                        tracing::error!("{} {request_id} | {err:#}", self.handler.config.process)
                    }
                    GuestFailure::BadRequest(err) => {
                        tracing::debug!(
                            "{} {request_id} | bad request: {err:#}",
                            self.handler.config.process
                        )
                    }
                }
                let text = match status {
                    StatusCode::GATEWAY_TIMEOUT => "the handler ran past its deadline\n",
                    StatusCode::SERVICE_UNAVAILABLE => "the server is shutting down\n",
                    StatusCode::BAD_REQUEST => {
                        "the request cannot be handled (is its Host header valid?)\n"
                    }
                    _ => "the handler failed\n",
                };
                let mut response = plain(status, text);
                if let Ok(value) = request_id.parse() {
                    response.headers_mut().insert("x-request-id", value);
                }
                response
            }
        }
    }
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Most a client may go on sending after its body is known to be too large.
/// Reading it (and throwing it away) before answering 413 lets a client that
/// writes its whole body before reading the answer actually see the 413: a
/// close with unread data would reset the connection under it instead.
const DISCARD_LIMIT: u64 = 16 << 20;

/// Reads the whole body, at most `max_body` bytes of it.
async fn read_body(mut body: Incoming, max_body: u64) -> Result<Bytes, BodyError> {
    let mut collected = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) if seen > max_body => return Err(BodyError::TooLarge),
            Err(err) => return Err(BodyError::Read(err)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen > max_body {
            if seen > max_body + DISCARD_LIMIT {
                return Err(BodyError::TooLarge);
            }
            continue;
        }
        collected.extend_from_slice(&data);
    }
    if seen > max_body {
        return Err(BodyError::TooLarge);
    }
    Ok(collected.freeze())
}

fn plain(status: StatusCode, text: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
