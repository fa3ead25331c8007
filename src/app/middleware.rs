//! Middleware: async functions around the rest of the pipeline, and any `tower::Layer`.
//!
//! Middleware added to a [`Router`](crate::app::Router) with `layer` runs in registration order
//! on the way in and in reverse order on the way out (the first one added is the outermost), and
//! it sees every message, routed or not. A middleware short-circuits by returning a response
//! without calling [`Next::run`].

use std::fmt;
use std::future::Future;

use tower::{BoxError, Layer, Service};

use crate::app::service::Route;
use crate::app::{MiddlewareResponse, Request, Response};

/// The rest of the pipeline, handed to a [`from_fn`] middleware.
pub struct Next {
    inner: Route,
}

impl Next {
    /// Runs the rest of the pipeline (inner middleware, then the router and the handler).
    pub fn run(self, request: Request) -> impl Future<Output = Response> + Send + 'static {
        self.inner.run(request)
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Next")
    }
}

/// Middleware from an async function `(Request, Next) -> impl MiddlewareResponse`: it returns
/// the response `next.run(req).await` gave, or one of its own ([`MiddlewareResponse`] says
/// which types; not `()`, which would answer AA whatever the handler said).
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
/// assert_eq!(router.routes().map(ToString::to_string).collect::<Vec<_>>(), ["*"]);
/// ```
pub fn from_fn<F, Fut, R>(f: F) -> FromFnLayer<F>
where
    F: Fn(Request, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: MiddlewareResponse,
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

impl<F, Fut, R, S> Layer<S> for FromFnLayer<F>
where
    F: Fn(Request, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: MiddlewareResponse,
    S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// A shared [`Route`]: the function is called in place for every message, with no clone of
    /// the pipeline and no readiness round.
    type Service = Route;

    fn layer(&self, inner: S) -> Route {
        let f = self.f.clone();
        let inner = Route::from_service(inner);
        Route::shared(move |request| {
            let next = Next {
                inner: inner.clone(),
            };
            let fut = f(request, next);
            Box::pin(async move { fut.await.into_response() })
        })
    }
}
