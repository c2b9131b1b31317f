//! Serving a hub on its own, without a web framework (the `server` feature, on by default).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::http::text;
use crate::{Hub, RemoteAddr};

/// Serves `hub` at `path` (for example `"/hub"`) until Ctrl-C or SIGTERM, then shuts down
/// gracefully (see [`Hub::shutdown`]). HTTP/1.1 and HTTP/2; needs the `server` feature.
pub async fn serve(listener: TcpListener, path: &str, hub: Hub) -> io::Result<()> {
    serve_with_shutdown(listener, path, hub, shutdown_signal()).await
}

/// Like [`serve`], but stops when `signal` completes.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    path: &str,
    hub: Hub,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let base = path.trim_end_matches('/').to_owned();
    let service = hub.service();
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Running out of file descriptors must not kill the server: back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let base = base.clone();
        let service = service.clone();
        let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(RemoteAddr(peer));
            let path = request.uri().path();
            let mounted = path == base
                || path
                    .strip_prefix(base.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            let future = mounted.then(|| service.clone().call(request));
            async move {
                match future {
                    Some(future) => future.await,
                    None => Ok::<_, Infallible>(text(StatusCode::NOT_FOUND, "Not Found")),
                }
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), handler);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    hub.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
