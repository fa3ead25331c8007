//! Handlers: plain async functions from a message to an outcome.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use crate::ack::Diagnostic;
use crate::app::future::{BoxFuture, RouteFuture};
use crate::app::{IntoResponse, Request, Response};
use crate::hl7::Message;

/// An async function that handles a message.
///
/// Implemented for `Fn(Request) -> impl Future<Output = impl IntoResponse>` and, for handlers
/// that need nothing but the message, `Fn(Message) -> impl Future<Output = impl IntoResponse>`.
/// The type parameter only tells those two apart; you never name it.
///
/// ```
/// use mllp::app::{HandlerError, Request, Router};
/// async fn admit(req: Request) -> Result<(), HandlerError> {
///     let _pid = req.message().segment("PID").ok_or_else(|| {
///         HandlerError::reject(mllp::ack::ErrorCode::RequiredFieldMissing, "no PID segment")
///     })?;
///     Ok(())
/// }
/// let router = Router::new().route("ADT^A01", admit);
/// # let _ = router;
///
/// // A handler is a plain async function: call it directly in a unit test.
/// let message = mllp::hl7::Message::parse(bytes::Bytes::from_static(
///     b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102030405||ADT^A01|MSG001|P|2.5.1\r",
/// ))?;
/// let peer = "127.0.0.1:40000".parse()?;
/// let local = "127.0.0.1:2575".parse()?;
/// let request = Request::new(message, mllp::ConnectionInfo::new(1, peer, local, false, None));
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let error = runtime.block_on(admit(request)).unwrap_err();
/// assert!(error.is_reject());
/// assert_eq!(error.text(), "no PID segment");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Handler<T>: Clone + Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, request: Request) -> BoxFuture<Response>;
}

impl<F, Fut, R> Handler<(Request,)> for F
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request) -> BoxFuture<Response> {
        if !request.has_uncarried_diagnostics() {
            let fut = self(request);
            return Box::pin(async move { fut.await.into_response() });
        }
        let attached = request.uncarried_diagnostics();
        let fut = self(request);
        Box::pin(async move { with_attached(fut.await.into_response(), attached) })
    }
}

impl<F, Fut, R> Handler<(Message,)> for F
where
    F: Fn(Message) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request) -> BoxFuture<Response> {
        if !request.has_uncarried_diagnostics() {
            let fut = self(request.into_message());
            return Box::pin(async move { fut.await.into_response() });
        }
        let attached = request.uncarried_diagnostics();
        let fut = self(request.into_message());
        Box::pin(async move { with_attached(fut.await.into_response(), attached) })
    }
}

/// A [`Handler`] as a `tower::Service`, so tower layers can wrap it.
pub struct HandlerService<H, T> {
    handler: H,
    _marker: PhantomData<fn() -> T>,
}

/// Turns a handler into a `tower::Service<Request>` (for [`Router::route_service`] with layers).
///
/// [`Router::route_service`]: crate::app::Router::route_service
pub fn handler_service<H, T>(handler: H) -> HandlerService<H, T>
where
    H: Handler<T>,
{
    HandlerService {
        handler,
        _marker: PhantomData,
    }
}

impl<H: Clone, T> Clone for HandlerService<H, T> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            _marker: PhantomData,
        }
    }
}

impl<H, T> fmt::Debug for HandlerService<H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerService")
    }
}

impl<H, T> tower::Service<Request> for HandlerService<H, T>
where
    H: Handler<T>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> RouteFuture {
        RouteFuture::new(self.handler.call(request))
    }
}

/// The handler's response with the diagnostics middleware attached to its request before it
/// (theirs first, as they came first).
fn with_attached(mut response: Response, attached: Vec<Diagnostic>) -> Response {
    if !attached.is_empty() {
        response.diagnostics_mut().splice(0..0, attached);
    }
    response
}
