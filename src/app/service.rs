//! The type-erased service plumbing under routes and middleware.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::ack::ErrorCode;
use crate::app::handler::BoxFuture;
use crate::app::{Request, Response};

/// A type-erased, cloneable request pipeline: what a route, a fallback or a whole layered
/// router is once built.
pub(crate) type Route = BoxCloneSyncService<Request, Response, Infallible>;

/// Makes any `Service<Request, Response = Response>` a [`Route`]: errors become AE with
/// ERR-3 = 207, and a stateful service is shared, not cloned (see [`Shared`]).
pub(crate) fn into_route<S>(service: S) -> Route
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(Shared::new(service))
}

/// The response for a failed tower service: AE, ERR-3 = 207, with a text that names the kind of
/// failure and nothing else (tower errors carry no payload, but user errors might).
pub(crate) fn error_response(error: BoxError) -> Response {
    let text = if error.is::<tower::timeout::error::Elapsed>() {
        "processing timed out"
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        "receiver overloaded, retry later"
    } else {
        "application internal error"
    };
    tracing::debug!(error.kind = text, "request pipeline returned an error");
    Response::error(ErrorCode::ApplicationInternalError, text)
}

/// One instance of a service shared by every connection, behind an async mutex held only for
/// `poll_ready` + `call` (the returned future runs unlocked, so requests still run concurrently).
///
/// Tower's stateful middleware (`RateLimit`, `ConcurrencyLimit`'s readiness) keeps its state in
/// the instance that was made ready; cloning it per request would give each request a fresh
/// limiter. Sharing one instance is what `tower::buffer::Buffer` does, without a worker task.
pub(crate) struct Shared<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
}

impl<S> Shared<S> {
    fn new(service: S) -> Self {
        Self {
            inner: Arc::new(tokio::sync::Mutex::new(service)),
        }
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> Service<Request> for Shared<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness of the shared instance is awaited inside `call`, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let fut = {
                let mut service = inner.lock().await;
                match service.ready().await {
                    Ok(ready) => ready.call(request),
                    Err(error) => return Ok(error_response(error.into())),
                }
            };
            Ok(fut.await.unwrap_or_else(|e| error_response(e.into())))
        })
    }
}
