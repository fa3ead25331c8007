//! The type-erased service plumbing under routes and middleware.
//!
//! Every route, fallback and layered router is a [`Route`]: a cloneable, type-erased
//! `tower::Service` that never fails (a failing service's error becomes an AE response).
//!
//! A route is one of two kinds:
//! - **shared**: handlers, [`from_fn`](crate::app::from_fn) middleware and the dispatcher. They
//!   are always ready and keep no per-call state, so every message calls the one instance in
//!   place: one boxed future per stage, no clone, no readiness round.
//! - **tower**: any other `tower::Service` (a user's `tower::Layer`, a `route_service`). Each
//!   message calls a fresh clone with `oneshot` (ready, then call), which is tower's contract and
//!   what makes readiness-based middleware work: `LoadShed` over `ConcurrencyLimit` sheds when
//!   the shared semaphore is exhausted. Middleware whose state lives in the instance rather than
//!   behind an `Arc` (tower's `RateLimit`) must be put behind a `Buffer` so that every clone
//!   talks to one instance, exactly as with axum.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use std::future::Ready;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::ack::ErrorCode;
use crate::app::future::{BoxFuture, RouteFuture};
use crate::app::{Request, Response};

/// The type-erased request pipeline: what a [`Router::layer`](crate::app::Router::layer) wraps,
/// and what a [`Next`](crate::app::Next) calls.
///
/// A cloneable `tower::Service<Request, Response = Response, Error = Infallible>`: errors of
/// the services inside it have already become AE responses. Cloning one is cheap (a reference
/// count).
#[derive(Clone)]
pub struct Route(Kind);

type SharedFn = dyn Fn(Request) -> BoxFuture<Response> + Send + Sync;

#[derive(Clone)]
enum Kind {
    /// Always ready, no per-call state: called in place.
    Shared(Arc<SharedFn>),
    /// A tower service: a fresh clone per message, `poll_ready`, then `call`.
    Tower(BoxCloneSyncService<Request, Response, Infallible>),
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Shared(_) => "Route(shared)",
            Kind::Tower(_) => "Route(tower)",
        })
    }
}

impl Route {
    /// A route that is always ready and shared by every message.
    pub(crate) fn shared<F>(f: F) -> Route
    where
        F: Fn(Request) -> BoxFuture<Response> + Send + Sync + 'static,
    {
        Route(Kind::Shared(Arc::new(f)))
    }

    /// Makes any cloneable `Service<Request, Response = Response>` a route: errors, from
    /// `poll_ready` or from the call, become AE with ERR-3 = 207. A service that already is a
    /// `Route` is kept as it is.
    pub(crate) fn from_service<S>(service: S) -> Route
    where
        S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let mut slot = Some(service);
        if let Some(route) = (&mut slot as &mut dyn Any).downcast_mut::<Option<Route>>() {
            return route.take().expect("the slot is filled");
        }
        let service = slot.expect("the slot is filled");
        Route(Kind::Tower(BoxCloneSyncService::new(Infallibly {
            inner: service,
            not_ready: None,
        })))
    }

    /// Runs one message through the route: the per-message entry point.
    pub(crate) fn run(&self, request: Request) -> BoxFuture<Response> {
        match &self.0 {
            Kind::Shared(f) => f(request),
            Kind::Tower(service) => {
                let call = service.clone().oneshot(request);
                Box::pin(async move {
                    match call.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                })
            }
        }
    }
}

impl Service<Request> for Route {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match &mut self.0 {
            Kind::Shared(_) => Poll::Ready(Ok(())),
            Kind::Tower(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> RouteFuture {
        match &mut self.0 {
            Kind::Shared(f) => RouteFuture::new(f(request)),
            Kind::Tower(service) => RouteFuture::tower(service.call(request)),
        }
    }
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
    type Future = Either<Ready<Result<Response, Infallible>>, Map<S::Future, Absorb<S::Error>>>;

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
        // Not boxed here: `BoxCloneSyncService` boxes the call's future once.
        match self.not_ready.take() {
            Some(response) => Either::Left(std::future::ready(Ok(response))),
            None => Either::Right(self.inner.call(request).map(absorb::<S::Error>)),
        }
    }
}

type Absorb<E> = fn(Result<Response, E>) -> Result<Response, Infallible>;

/// A service error becomes its AE response.
fn absorb<E: Into<BoxError>>(result: Result<Response, E>) -> Result<Response, Infallible> {
    Ok(result.unwrap_or_else(|e| error_response(e.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route handed back as a tower service stays shared: `from_fn` around a handler costs no
    /// per-message clone.
    #[test]
    fn a_route_wrapped_again_stays_shared() {
        let shared = Route::shared(|_request| Box::pin(async { Response::accept() }));
        assert_eq!(
            format!("{:?}", Route::from_service(shared)),
            "Route(shared)"
        );
        let tower = Route::from_service(tower::service_fn(|_request: Request| async {
            Ok::<_, Infallible>(Response::accept())
        }));
        assert_eq!(format!("{tower:?}"), "Route(tower)");
    }
}
