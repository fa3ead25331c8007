//! The dispatcher: routes a message to a handler by its MSH-9 trigger event.

use std::fmt;
use std::time::Duration;

use tower::{BoxError, Layer, Service};

use crate::ack::ErrorCode;
use crate::app::future::BoxFuture;
use crate::app::handler::Handler;
use crate::app::service::Route;
use crate::app::{Request, Response};

/// A route pattern over MSH-9: `"ADT^A01"`, `"ADT^*"`, `"*^A01"` or `"*"`.
///
/// `"ADT"` alone means `"ADT^*"`. Matching is exact and case-sensitive on MSH-9.1 (message code)
/// and MSH-9.2 (trigger event), as HL7 codes are upper case by definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePattern {
    code: Option<String>,
    event: Option<String>,
}

/// A route pattern that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern {pattern:?}: expected CODE^EVENT, CODE^*, *^EVENT, CODE or *")]
pub struct RoutePatternError {
    pattern: String,
}

impl RoutePattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// When the pattern is empty, has more than two `^`-separated parts, or a part contains
    /// characters other than ASCII letters and digits.
    pub fn parse(pattern: &str) -> Result<Self, RoutePatternError> {
        let err = || RoutePatternError {
            pattern: pattern.to_owned(),
        };
        let part = |s: &str| -> Result<Option<String>, RoutePatternError> {
            match s {
                "*" => Ok(None),
                s if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    Ok(Some(s.to_owned()))
                }
                _ => Err(err()),
            }
        };
        let mut parts = pattern.split('^');
        let code = part(parts.next().ok_or_else(err)?)?;
        let event = match parts.next() {
            Some(event) => part(event)?,
            None => None,
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self { code, event })
    }

    /// Whether a message with this MSH-9.1 code and MSH-9.2 event matches.
    pub fn matches(&self, code: Option<&str>, event: Option<&str>) -> bool {
        self.matches_bytes(code.map(str::as_bytes), event.map(str::as_bytes))
    }

    fn matches_bytes(&self, code: Option<&[u8]>, event: Option<&[u8]>) -> bool {
        fn part(want: &Option<String>, got: Option<&[u8]>) -> bool {
            match want {
                None => true,
                Some(want) => got == Some(want.as_bytes()),
            }
        }
        part(&self.code, code) && part(&self.event, event)
    }

    /// The message code this pattern names, or `None` for a wildcard.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The trigger event this pattern names, or `None` for a wildcard.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.event) {
            (None, None) => f.write_str("*"),
            (code, event) => write!(
                f,
                "{}^{}",
                code.as_deref().unwrap_or("*"),
                event.as_deref().unwrap_or("*")
            ),
        }
    }
}

impl std::str::FromStr for RoutePattern {
    type Err = RoutePatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

type LayerFn = Box<dyn Fn(Route) -> Route + Send + Sync>;

/// Routes messages to handlers by trigger event, with middleware around them.
///
/// Routes are tried in registration order and the first match wins. A message no route matches
/// goes to the fallback, which by default answers AR with ERR-3 = 200 (unsupported message type)
/// when no route names its message code, or 201 (unsupported event code) when one does, or when
/// a route takes any code (`*^A01`): the type is then supported, only not with this event.
///
/// ```
/// use mllp::app::{from_fn, Next, Request, Router};
/// use mllp::hl7::Message;
///
/// let router = Router::new()
///     .route("ADT^A01", |msg: Message| async move { let _ = msg; })
///     .route("ADT^*", |_req: Request| async {})
///     .layer(from_fn(|req: Request, next: Next| next.run(req)));
/// let routes: Vec<String> = router.routes().map(|p| p.to_string()).collect();
/// assert_eq!(routes, ["ADT^A01", "ADT^*"]);
/// ```
///
/// # State
///
/// Application state (a database pool, a client, counters) is given once with
/// [`with_state`](Self::with_state) and handed to every handler that takes
/// [`State<S>`](crate::app::State) as its first argument, as with axum. `S` is the state's type: `()`
/// (the default) until `with_state` is called. Unlike axum, the state is given *before* the
/// routes that use it, so the routes are built at once and a handler that needs a state the
/// router does not have is a compile error.
pub struct Router<S = ()> {
    routes: Vec<(RoutePattern, Route)>,
    /// Each route's own handler deadline, by index in `routes`.
    deadlines: Vec<Option<Duration>>,
    fallback: Option<Route>,
    layers: Vec<LayerFn>,
    errors: Vec<RoutePatternError>,
    state: S,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Router {
    /// A router with no routes and no state: every message gets the default fallback's AR.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            deadlines: Vec::new(),
            fallback: None,
            layers: Vec::new(),
            errors: Vec::new(),
            state: (),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// Gives the router a state, handed to the handlers registered after this call that take
    /// [`State<S2>`](crate::app::State) first (`|State(db): State<Db>, req: Request| ..`). The state is
    /// cloned for each such message: wrap what is costly to clone in an `Arc`. Routes
    /// registered before keep the state they were built with. Default is no state (`()`).
    #[must_use]
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S2) -> Router<S2> {
        Router {
            routes: self.routes,
            deadlines: self.deadlines,
            fallback: self.fallback,
            layers: self.layers,
            errors: self.errors,
            state,
        }
    }

    /// The router's state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Routes messages matching `pattern` to `handler`.
    ///
    /// An invalid pattern is reported when the server is built (`ConfigError`), not here.
    #[must_use]
    pub fn route<H, T>(self, pattern: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let route = handler_route(handler, self.state.clone());
        self.push(pattern, route, None)
    }

    /// Like [`route`](Self::route), with this route's own handler deadline instead of the
    /// server's `handler_timeout` (default 60 s).
    ///
    /// The deadline behaves exactly like `handler_timeout`, because it is one: it is given to
    /// the runtime per message (the route is picked from MSH-9 before the handler starts), so
    /// past it the handler task is aborted, the message is answered per the server's
    /// `handler_failure` policy (AE 207 by default), and it is reported as a handler failure
    /// (`Failure::TimedOut`, the `mllp.message.exception` event, `error.type = timeout` on the
    /// span, `mllp.server.handler.exceptions`). It runs from the handler task's start, so the
    /// router's middleware is inside it, as with `handler_timeout`. It may be longer than
    /// `handler_timeout` as well as shorter. A zero deadline is a `ConfigError` at `bind()`.
    ///
    /// A `tower::timeout::Timeout` layer around a route is not the same: its expiry is an
    /// ordinary error answered AE 207 by the ACK stage, with no exception event and no
    /// handler-failure policy, and the handler's task is not aborted but dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mllp::app::{Request, Router};
    ///
    /// let router = Router::new()
    ///     .route_with_timeout("ORU^R01", |_req: Request| async {}, Duration::from_secs(5))
    ///     .route("ADT^*", |_req: Request| async {}); // the server's handler_timeout
    /// # let _ = router;
    /// ```
    #[must_use]
    pub fn route_with_timeout<H, T>(self, pattern: &str, handler: H, timeout: Duration) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let route = handler_route(handler, self.state.clone());
        self.push(pattern, route, Some(timeout))
    }

    fn push(mut self, pattern: &str, route: Route, deadline: Option<Duration>) -> Self {
        match RoutePattern::parse(pattern) {
            Ok(pattern) => {
                self.routes.push((pattern, route));
                self.deadlines.push(deadline);
            }
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Routes messages matching `pattern` to a `tower::Service`: a handler wrapped in per-route
    /// middleware (`ServiceBuilder::new().layer(..).service(handler_service(h))`), for example.
    /// Service errors become AE with ERR-3 = 207.
    #[must_use]
    pub fn route_service<Svc>(self, pattern: &str, service: Svc) -> Self
    where
        Svc: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        Svc::Error: Into<BoxError>,
        Svc::Future: Send + 'static,
    {
        self.push(pattern, Route::from_service(service), None)
    }

    /// Replaces the default fallback for messages no route matches. Default is AR with ERR-3 =
    /// 201 (unsupported event code) when a route names the message's type or takes any type, and
    /// 200 (unsupported message type) otherwise; the text names the trigger.
    #[must_use]
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.fallback = Some(handler_route(handler, self.state.clone()));
        self
    }

    /// Adds middleware around the whole router: any `tower::Layer` (tower's `RateLimit`,
    /// `ConcurrencyLimit`, `LoadShed` and `Timeout` included) or [`from_fn`] middleware.
    ///
    /// Layers run in registration order on the way in and in reverse on the way out: the first
    /// one added is the outermost (as in tower's `ServiceBuilder`; axum's `Router::layer` is the
    /// other way round). They see every message, routed or not. Errors from a layer become AE
    /// with ERR-3 = 207.
    ///
    /// Where a [`StoreLayer`](crate::store::StoreLayer) goes decides what is stored: added
    /// first, it stores every message, including the ones a later validation layer refuses (the
    /// record of what was received); added after the validation, it stores only what passed.
    /// Either way a resend of a refused message is handled again, never answered AA from the
    /// store.
    ///
    /// Each message runs through a fresh clone of the layered service (tower's contract), so
    /// middleware that keeps its state in the instance, such as tower's `RateLimit`, must sit
    /// behind a `Buffer` to be shared: `ServiceBuilder::new().buffer(64).rate_limit(..)`.
    ///
    /// [`from_fn`]: crate::app::from_fn
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<BoxError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            Route::from_service(layer.layer(inner))
        }));
        self
    }

    /// The route patterns in match order (the fallback is not listed).
    pub fn routes(&self) -> impl Iterator<Item = &RoutePattern> {
        self.routes.iter().map(|(pattern, _)| pattern)
    }

    /// The same routes and layers without the state (every route already holds what it
    /// needs), as the server takes them.
    pub fn without_state(self) -> Router {
        self.with_state(())
    }

    /// Builds the request pipeline (the dispatcher wrapped in the layers) and the per-route
    /// deadlines.
    pub(crate) fn into_service(self) -> Result<(Route, Deadlines), RoutePatternError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let deadlines = Deadlines::new(
            self.routes
                .iter()
                .zip(&self.deadlines)
                .map(|((pattern, _), deadline)| (pattern.clone(), *deadline))
                .collect(),
        );
        let known_codes: Vec<String> = self
            .routes
            .iter()
            .filter_map(|(p, _)| p.code.clone())
            .collect();
        let any_code_known = self.routes.iter().any(|(p, _)| p.code.is_none());
        let dispatch = Dispatch {
            routes: self.routes,
            fallback: self.fallback,
            known_codes,
            any_code_known,
        };
        let mut service = Route::shared(move |request| dispatch.call(request));
        // The first layer registered must end up outermost, so wrap from the last one inwards.
        for layer in self.layers.iter().rev() {
            service = layer(service);
        }
        Ok((service, deadlines))
    }
}

/// The per-route handler deadlines, looked up by MSH-9 the way the dispatcher picks a route
/// (first match in registration order), before the handler starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deadlines {
    /// Every route's pattern and deadline, or empty when no route has its own deadline (then
    /// the lookup costs nothing).
    routes: Vec<(RoutePattern, Option<Duration>)>,
}

impl Deadlines {
    fn new(routes: Vec<(RoutePattern, Option<Duration>)>) -> Self {
        if routes.iter().all(|(_, deadline)| deadline.is_none()) {
            return Self::default();
        }
        Self { routes }
    }

    /// The deadline of the route a message of this MSH-9.1 and MSH-9.2 goes to, if it has one.
    pub(crate) fn for_message(
        &self,
        code: Option<&[u8]>,
        event: Option<&[u8]>,
    ) -> Option<Duration> {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches_bytes(code, event))
            .and_then(|(_, deadline)| *deadline)
    }

    /// Whether a route's deadline is zero.
    pub(crate) fn has_zero(&self) -> bool {
        self.routes
            .iter()
            .any(|(_, d)| d.is_some_and(|d| d.is_zero()))
    }
}

/// The innermost stage: picks the route and calls it.
struct Dispatch {
    routes: Vec<(RoutePattern, Route)>,
    fallback: Option<Route>,
    /// The message codes routes name: an unrouted message of one of them gets 201, not 200.
    known_codes: Vec<String>,
    /// A route takes any message code (`*^A01`): every unrouted message gets 201.
    any_code_known: bool,
}

impl Dispatch {
    fn unrouted(&self, code: Option<&str>, event: Option<&str>) -> Response {
        let trigger = format!("{}^{}", code.unwrap_or(""), event.unwrap_or(""));
        match code {
            Some(code) if self.any_code_known || self.known_codes.iter().any(|c| c == code) => {
                Response::reject(
                    ErrorCode::UnsupportedEventCode,
                    format!("unsupported event code: no route for {trigger}"),
                )
            }
            _ => Response::reject(
                ErrorCode::UnsupportedMessageType,
                format!("unsupported message type: no route for {trigger}"),
            ),
        }
    }

    fn call(&self, request: Request) -> BoxFuture<Response> {
        let message = request.message();
        let (code, event) = (message.message_code_bytes(), message.trigger_event_bytes());
        let route = self
            .routes
            .iter()
            .find(|(pattern, _)| pattern.matches_bytes(code, event))
            .map(|(_, route)| route)
            .or(self.fallback.as_ref());
        match route {
            Some(route) => route.run(request),
            None => {
                let message = request.message();
                // Decoded per MSH-18: a non-UTF-8 code is named, not reported as missing.
                let code = message.message_code_bytes().map(|c| message.decode_text(c));
                let event = message
                    .trigger_event_bytes()
                    .map(|e| message.decode_text(e));
                let response = self.unrouted(code.as_deref(), event.as_deref());
                Box::pin(std::future::ready(response))
            }
        }
    }
}

/// A handler as a shared route: called in place, one boxed future per message.
fn handler_route<H, T, S>(handler: H, state: S) -> Route
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    Route::shared(move |request| handler.call(request, state.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns parse, print back, and match with wildcards on either side.
    #[test]
    fn patterns_match_with_wildcards() {
        let p = |s: &str| RoutePattern::parse(s).unwrap();
        assert!(p("ADT^A01").matches(Some("ADT"), Some("A01")));
        assert!(!p("ADT^A01").matches(Some("ADT"), Some("A08")));
        assert!(p("ADT^*").matches(Some("ADT"), Some("A08")));
        assert!(p("ADT").matches(Some("ADT"), None));
        assert!(p("*^A01").matches(Some("ORU"), Some("A01")));
        assert!(!p("*^A01").matches(Some("ORU"), None));
        assert!(p("*").matches(None, None));
        assert_eq!(p("ADT").to_string(), "ADT^*");
        assert_eq!(p("*^R01").to_string(), "*^R01");
        assert_eq!(p("*^*").to_string(), "*");
        for bad in ["", "^", "ADT^", "A^B^C", "AD T", "ADT^A0|"] {
            assert!(
                RoutePattern::parse(bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
    }

    /// A bad pattern does not panic at registration; it is reported when the router is built.
    #[test]
    fn invalid_pattern_is_reported_at_build() {
        let router = Router::new().route("ADT^A01^X", |_r: Request| async {});
        assert!(router.into_service().is_err());
    }

    /// A message gets the deadline of the route the dispatcher would pick: the first match,
    /// even when that route has none.
    #[test]
    fn deadlines_follow_the_first_matching_route() {
        let s = Duration::from_secs;
        let (_, deadlines) = Router::new()
            .route("ADT^A01", |_r: Request| async {})
            .route_with_timeout("ADT^*", |_r: Request| async {}, s(5))
            .route_with_timeout("*", |_r: Request| async {}, s(9))
            .into_service()
            .unwrap();
        let get = |c: &str, e: &str| deadlines.for_message(Some(c.as_bytes()), Some(e.as_bytes()));
        assert_eq!(get("ADT", "A01"), None);
        assert_eq!(get("ADT", "A08"), Some(s(5)));
        assert_eq!(get("ORU", "R01"), Some(s(9)));
        let (_, none) = Router::new()
            .route("*", |_r: Request| async {})
            .into_service()
            .unwrap();
        assert!(none.routes.is_empty());
    }
}
