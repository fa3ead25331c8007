//! The futures the application layer's services return, in their own file as in tower: handlers
//! and routes both return them, and neither owns them.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::app::Response;

/// A boxed, `Send` future, as returned by handler services.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of a [`Route`](crate::app::Route) (or a
/// [`HandlerService`](crate::app::HandlerService)) called as a `tower::Service`.
pub struct RouteFuture(Pending);

impl RouteFuture {
    pub(crate) fn new(response: BoxFuture<Response>) -> Self {
        RouteFuture(Pending::Shared(response))
    }

    /// The call of a tower service (a [`Route`](crate::app::Route) of the tower kind).
    pub(crate) fn tower(response: BoxFuture<Result<Response, Infallible>>) -> Self {
        RouteFuture(Pending::Tower(response))
    }
}

enum Pending {
    Shared(BoxFuture<Response>),
    Tower(BoxFuture<Result<Response, Infallible>>),
}

impl fmt::Debug for RouteFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RouteFuture")
    }
}

impl Future for RouteFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Pending::Shared(f) => f.as_mut().poll(cx).map(Ok),
            Pending::Tower(f) => f.as_mut().poll(cx),
        }
    }
}
