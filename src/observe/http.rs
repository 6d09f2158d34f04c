//! The agent's small HTTP server: `GET /metrics` and `GET /healthz`, nothing
//! else. HTTP/1 only, a bounded number of connections, each bounded in time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Heartbeat, Metrics, prometheus_text};
use crate::transfer::Engine;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;
/// However slow the client, a connection ends after this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request may read.
struct State {
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    heartbeat: Heartbeat,
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    heartbeat: Heartbeat,
    stop: CancellationToken,
) {
    let state = Arc::new(State {
        metrics,
        engine,
        heartbeat,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!("metrics: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!(%peer, "metrics: connection ended: {e}"),
                Err(_) => debug!(%peer, "metrics: connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let st = state.clone();
            // The ledger and the outbound folders are read with blocking calls.
            let body = tokio::task::spawn_blocking(move || {
                st.metrics.refresh(&st.engine);
                st.metrics.openmetrics()
            })
            .await
            .unwrap_or_default();
            let (body, kind) = if openmetrics {
                (body, OPENMETRICS)
            } else {
                (prometheus_text(&body), PROMETHEUS_TEXT)
            };
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, kind)
                .body(Full::new(Bytes::from(body)))
                .expect("a valid response")
        }
        "/healthz" => {
            let age = state.heartbeat.age();
            if state.heartbeat.alive() {
                text(
                    StatusCode::OK,
                    format!("ok: the agent loop beat {} ms ago\n", age.as_millis()),
                )
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "stalled: the agent loop has not beaten for {} s (limit {} s)\n",
                        age.as_secs(),
                        state.heartbeat.stall_after.as_secs_f64()
                    ),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
