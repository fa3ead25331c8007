//! The type-erased service plumbing under routes and middleware.
//!
//! Every route, fallback and layered router is a [`Route`]: a cloneable, type-erased
//! `tower::Service` that never fails (a failing service's error becomes an AE response). Each
//! message calls a fresh clone with `oneshot` (ready, then call), which is tower's contract and
//! what makes readiness-based middleware work: `LoadShed` over `ConcurrencyLimit` sheds when
//! the shared semaphore is exhausted. Middleware whose state lives in the instance rather than
//! behind an `Arc` (tower's `RateLimit`) must be put behind a `Buffer` so that every clone talks
//! to one instance, exactly as with axum.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

use crate::ack::ErrorCode;
use crate::app::{Request, Response};

/// A type-erased, cloneable request pipeline.
pub(crate) type Route = BoxCloneSyncService<Request, Response, Infallible>;

/// Makes any cloneable `Service<Request, Response = Response>` a [`Route`]: errors, from
/// `poll_ready` or from the call, become AE with ERR-3 = 207.
pub(crate) fn into_route<S>(service: S) -> Route
where
    S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(Infallibly {
        inner: service,
        not_ready: None,
    })
}

/// The response for a failed tower service: AE, ERR-3 = 207, with a text that names the kind
/// of failure and nothing else (a user error's text might carry anything).
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

/// Wraps a fallible service into one whose errors are responses.
#[derive(Clone)]
struct Infallibly<S> {
    inner: S,
    /// `poll_ready` failed: the next call answers with this error instead of calling.
    not_ready: Option<Response>,
}

impl<S> Service<Request> for Infallibly<S>
where
    S: Service<Request, Response = Response>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                self.not_ready = Some(error_response(error.into()));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(response) = self.not_ready.take() {
            return Box::pin(async move { Ok(response) });
        }
        let fut = self.inner.call(request);
        Box::pin(async move { Ok(fut.await.unwrap_or_else(|e| error_response(e.into()))) })
    }
}
