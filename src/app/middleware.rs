//! Middleware: async functions around the rest of the pipeline, and any `tower::Layer`.
//!
//! Middleware added to a [`Router`](crate::app::Router) with `layer` runs in registration order
//! on the way in and in reverse order on the way out (the first one added is the outermost), and
//! it sees every message, routed or not. A middleware short-circuits by returning a response
//! without calling [`Next::run`].

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceExt};

use crate::app::handler::BoxFuture;
use crate::app::service::Route;
use crate::app::{IntoResponse, Request, Response};

/// The rest of the pipeline, handed to a [`from_fn`] middleware.
pub struct Next {
    inner: Route,
}

impl Next {
    /// Runs the rest of the pipeline (inner middleware, then the router and the handler).
    pub async fn run(self, request: Request) -> Response {
        match self.inner.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Next")
    }
}

/// Middleware from an async function `(Request, Next) -> impl IntoResponse`.
///
/// ```
/// use mllp::app::{from_fn, Next, Request, Response, Router};
///
/// async fn audit(req: Request, next: Next) -> Response {
///     let kind = req.message().message_code().unwrap_or("?").to_owned();
///     let response = next.run(req).await;
///     tracing::debug!(hl7.message_type = %kind, accepted = response.is_accepted());
///     response
/// }
/// let router = Router::new().route("*", |_req: Request| async {}).layer(from_fn(audit));
/// # let _ = router;
/// ```
pub fn from_fn<F, Fut, R>(f: F) -> FromFnLayer<F>
where
    F: Fn(Request, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    FromFnLayer { f }
}

/// The `tower::Layer` made by [`from_fn`].
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFnLayer")
    }
}

impl<F, S> Layer<S> for FromFnLayer<F>
where
    F: Clone,
    S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Service = FromFn<F>;

    fn layer(&self, inner: S) -> Self::Service {
        FromFn {
            f: self.f.clone(),
            inner: crate::app::service::into_route(inner),
        }
    }
}

/// The service made by [`FromFnLayer`].
#[derive(Clone)]
pub struct FromFn<F> {
    f: F,
    inner: Route,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn")
    }
}

impl<F, Fut, R> Service<Request> for FromFn<F>
where
    F: Fn(Request, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let next = Next {
            inner: self.inner.clone(),
        };
        let fut = (self.f)(request, next);
        Box::pin(async move { Ok(fut.await.into_response()) })
    }
}
