//! HTTP/1 plumbing on hyper: the accept loop with graceful shutdown, JSON responses, bounded
//! request bodies, and the client the control plane calls compute_ctl with.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub type Body = Full<Bytes>;
pub type HttpClient = Client<HttpConnector, Body>;

/// Largest request body accepted: hook and configure bodies are a few KiB.
const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("responses serialize to JSON");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// The whole body, or a message saying why not.
pub async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("could not read the request body (at most {MAX_BODY} bytes): {e}"))
}

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, request: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// A server accepting connections, and its background tasks, until [`Running::stop`].
pub struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs `task` beside the server; it must end once its token is cancelled.
    pub(crate) fn also<F: Future<Output = ()> + Send + 'static>(&mut self, task: impl FnOnce(CancellationToken) -> F) {
        self.tasks.push(tokio::spawn(task(self.stop.clone())));
    }

    /// Stops accepting and the background tasks, lets in-flight requests finish (up to a
    /// deadline), and returns.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            // They only end by cancellation; a panic in one has already been reported.
            let _ = task.await;
        }
    }
}

pub fn spawn(listener: TcpListener, handler: Arc<impl Handler>) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, handler, stop.clone()));
    Ok(Running { addr, stop, tasks: vec![task] })
}

async fn accept_loop(listener: TcpListener, handler: Arc<impl Handler>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::info!("accepting a connection failed: {e}");
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result
                && !e.is_incomplete_message()
            {
                tracing::info!("connection from {peer} failed: {e}");
            }
        });
    }
    let drained = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!("{} connection(s) still open after {}s; closing them", connections.len(), DRAIN.as_secs());
    }
}
