//! Handlers: plain async functions from a message (and, optionally, the router's state) to an
//! outcome.

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
/// Implemented for async functions and closures of these shapes, where the future's output is
/// anything [`IntoResponse`]:
///
/// - `Fn(Request)`, and `Fn(Message)` for handlers that need nothing but the message;
/// - `Fn(State<S>, Request)` and `Fn(State<S>, Message)`, for handlers that use the router's
///   state (given with [`Router::with_state`](crate::app::Router::with_state), as in axum).
///
/// The type parameter `T` only tells those shapes apart and `S` is the router's state type
/// (`()` without one); you never name them. A handler may return `()` (AA), a
/// [`Response`], a [`HandlerError`](crate::app::HandlerError), or a `Result` of those whose
/// error converts into `HandlerError`: `HandlerError` itself, `String`, `&'static str`, any
/// `std::error::Error + Send + Sync + 'static`, `Box<dyn Error + Send + Sync>` or
/// `anyhow::Error` (anything `Into<tower::BoxError>`, given AE 207 with a generic text). A
/// closure that only panics is a handler too (answered per the handler-failure policy).
///
/// A closure that does not fit says so when the router is built:
///
/// ```compile_fail,E0277
/// use mllp::app::{Request, Router};
/// // `u32` is not an answer: the error explains what a handler may return.
/// let router = Router::new().route("ADT^A01", |_req: Request| async { 7u32 });
/// ```
///
/// ```compile_fail,E0277
/// use mllp::app::{Request, Router, State};
/// // A handler that takes `State<S>` needs `Router::with_state(S)` before its route.
/// let router = Router::new().route("ADT^A01", |_s: State<u8>, _req: Request| async {});
/// ```
///
/// ```compile_fail,E0277
/// use mllp::app::Router;
/// // A handler takes a `Request` or a `Message`, not the raw bytes.
/// let router = Router::new().route("ADT^A01", |_raw: bytes::Bytes| async {});
/// ```
///
/// ```
/// use mllp::app::{HandlerError, Request, Router};
/// async fn admit(req: Request) -> Result<(), HandlerError> {
///     let _pid = req.message().segment("PID").ok_or_else(|| {
///         HandlerError::reject(mllp::ack::ErrorCode::SegmentSequenceError, "no PID segment")
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an mllp handler",
    label = "not a handler",
    note = "a handler is an async fn or closure taking `Request` or `Message` (or `State<S>` first, then one of those), whose future returns `()`, `Response`, `HandlerError`, or `Result<_, E>` with `E` one of `HandlerError`, `String`, `&'static str`, any `std::error::Error + Send + Sync + 'static`, `Box<dyn Error + Send + Sync>`, `anyhow::Error`",
    note = "a handler that takes `State<S>` needs `Router::with_state(S)` before its route; its future must be `Send + 'static` (move what it needs into an `async move` block)"
)]
pub trait Handler<T, S = ()>: Clone + Send + Sync + 'static {
    /// Handles one request, with the router's state (`()` when it has none).
    fn call(&self, request: Request, state: S) -> BoxFuture<Response>;
}

/// The router's state, handed to a handler that takes it as its first argument (axum's `State`
/// extractor). Set it with [`Router::with_state`](crate::app::Router::with_state); it is cloned
/// for each message, so make it cheap to clone (an `Arc`, a pool handle).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use mllp::app::{Request, Router, State};
///
/// #[derive(Clone, Default)]
/// struct Lab {
///     admitted: Arc<AtomicU64>,
/// }
///
/// async fn admit(State(lab): State<Lab>, _req: Request) {
///     lab.admitted.fetch_add(1, Ordering::Relaxed);
/// }
///
/// let router = Router::new().with_state(Lab::default()).route("ADT^A01", admit);
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S> std::ops::Deref for State<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.0
    }
}

/// Calls a handler future and turns its output into a response, with the diagnostics that
/// middleware attached to the request before it (theirs first).
fn respond<Fut, R>(attached: Option<Vec<Diagnostic>>, fut: Fut) -> BoxFuture<Response>
where
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    match attached {
        None => Box::pin(async move { fut.await.into_response() }),
        Some(attached) => {
            Box::pin(async move { with_attached(fut.await.into_response(), attached) })
        }
    }
}

fn attached(request: &Request) -> Option<Vec<Diagnostic>> {
    request
        .has_uncarried_diagnostics()
        .then(|| request.uncarried_diagnostics())
}

impl<F, Fut, R, S> Handler<(Request,), S> for F
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request, _state: S) -> BoxFuture<Response> {
        let attached = attached(&request);
        respond(attached, self(request))
    }
}

impl<F, Fut, R, S> Handler<(Message,), S> for F
where
    F: Fn(Message) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request, _state: S) -> BoxFuture<Response> {
        let attached = attached(&request);
        respond(attached, self(request.into_message()))
    }
}

impl<F, Fut, R, S> Handler<(State<S>, Request), S> for F
where
    F: Fn(State<S>, Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request, state: S) -> BoxFuture<Response> {
        let attached = attached(&request);
        respond(attached, self(State(state), request))
    }
}

impl<F, Fut, R, S> Handler<(State<S>, Message), S> for F
where
    F: Fn(State<S>, Message) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    fn call(&self, request: Request, state: S) -> BoxFuture<Response> {
        let attached = attached(&request);
        respond(attached, self(State(state), request.into_message()))
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
        RouteFuture::new(self.handler.call(request, ()))
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
