//! HTTP plumbing: the server (axum, with tower-http's body limit and request timeout, and a
//! graceful shutdown that lets in-flight requests finish), and the client the control plane
//! calls compute_ctl and the storage controller with.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::StatusCode;
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The body of the requests the control plane sends.
pub type Body = Full<Bytes>;
pub type HttpClient = Client<HttpConnector, Body>;

/// Largest body accepted or read: hook, configure and answer bodies are a few KiB.
pub const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);
/// How long one request may take: longer than a hook's retries of compute_ctl (8 s); the
/// storage controller retries the 503 it then gets.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The whole body of an answer, or a message saying why not.
pub async fn read_body(body: Incoming) -> Result<Bytes, String> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("could not read the body (at most {MAX_BODY} bytes): {e}"))
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

/// Serves `router` on `listener`, with the body limit and request timeout, until stopped.
pub fn spawn(listener: TcpListener, router: axum::Router) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let router = router
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT));
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            served = server => if let Err(e) = served { tracing::info!("the server stopped: {e}") },
            () = deadline => tracing::info!("requests still in flight after {}s; closing them", DRAIN.as_secs()),
        }
    });
    Ok(Running { addr, stop, tasks: vec![task] })
}
