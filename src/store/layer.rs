//! [`StoreLayer`]: store every message before the handler runs.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use tower::{BoxError, Layer, Service};

use crate::ack::ErrorCode;
use crate::app::{Next, Request, Response, Route, from_fn};
use crate::store::{Receipt, Record, Store, StoreId};

/// What [`StoreLayer`] does with a message the store recognised as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DuplicatePolicy {
    /// Acknowledge it (AA/CA) without calling the handler when the handler accepted the stored
    /// copy. The default. A resend of a copy the handler did not accept (it answered AE/AR, or
    /// failed, or timed out) is handled again, as with [`Handle`](Self::Handle): answering it
    /// AA from the store would claim a success the handler never gave. What the handler
    /// answered is remembered in memory, for the last 65,536 copies it did not accept; after a
    /// restart a resend of a copy refused before it is acknowledged from the store.
    #[default]
    Acknowledge,
    /// Call the handler anyway, with [`Stored`] saying it is a duplicate, for handlers whose
    /// failure on the first copy must be retried on the resend.
    Handle,
}

/// Put in the request's [`Extensions`](crate::app::Extensions) by [`StoreLayer`]: what the
/// store did with this message (its id, whether it is a duplicate or reuses a control id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored(pub Receipt);

/// Middleware that appends every message to a [`Store`] before the rest of the pipeline runs,
/// and answers from what the store says:
///
/// - stored: the handler runs (and sees [`Stored`] in the request's extensions);
/// - a duplicate: AA/CA, the handler is not called, nothing is stored again, and
///   `mllp.server.duplicates` is counted (see [`DuplicatePolicy`] for the other choice); but
///   when the handler did not accept the stored copy (AE, AR, a failure or a timeout), the
///   resend is handled again rather than answered AA from the store;
/// - the store failed: AE/CE with ERR-3 207 ("message could not be stored"), never a success
///   ACK; the handler is not called.
///
/// A store that starts failing is logged once at `error` with the cause, and once at `info`
/// when it recovers; in between, each refused message is logged at `debug`. Logs carry the
/// store id, MSH-9 and MSH-10 only.
///
/// Added with [`Router::layer`](crate::app::Router::layer), it sees every message that reaches
/// the router, routed or not.
#[derive(Clone)]
pub struct StoreLayer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    duplicates: DuplicatePolicy,
    /// Stored copies whose handler has not accepted them (yet).
    unaccepted: Unaccepted,
    failing: AtomicBool,
    /// Given with [`StoreLayer::meter`]: counted here whatever the server's meter.
    counters: Option<Counters>,
    /// The global meter provider's, made at the first count of a server without a meter.
    global: OnceLock<Counters>,
}

/// The layer's two counters, on one meter.
#[derive(Clone)]
struct Counters {
    duplicates: Counter<u64>,
    reused: Counter<u64>,
}

impl Counters {
    fn new(meter: &Meter) -> Self {
        Self {
            duplicates: meter
                .u64_counter("mllp.server.duplicates")
                .with_description(
                    "Messages recognised as resends of a stored message and not stored \
                     again (acknowledged from the store, or handled again)",
                )
                .with_unit("{message}")
                .build(),
            reused: meter
                .u64_counter("mllp.server.reused_control_ids")
                .with_description(
                    "Messages stored although another message from the same sender with the \
                     same control id and other content was stored inside the window",
                )
                .with_unit("{message}")
                .build(),
        }
    }
}

impl fmt::Debug for StoreLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLayer")
            .field("store", &self.inner.store.describe())
            .field("duplicates", &self.inner.duplicates)
            .finish()
    }
}

impl StoreLayer {
    /// Stores into `store`, with [`DuplicatePolicy::Acknowledge`]. Its two counters,
    /// `mllp.server.duplicates` and `mllp.server.reused_control_ids`, go where the server's own
    /// metrics go: the meter given to
    /// [`ServerBuilder::meter`](crate::ServerBuilder::meter), or, for a server without one, the
    /// global meter provider (scope `mllp`). [`meter`](Self::meter) overrides that.
    pub fn new(store: impl Store) -> Self {
        Self::build(Arc::new(store), DuplicatePolicy::default(), None)
    }

    /// [`StoreLayer::new`] for a store already behind an `Arc`.
    pub fn shared(store: Arc<dyn Store>) -> Self {
        Self::build(store, DuplicatePolicy::default(), None)
    }

    /// What to do with duplicates. Default is [`DuplicatePolicy::Acknowledge`].
    pub fn duplicates(self, policy: DuplicatePolicy) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                store: inner.store.clone(),
                duplicates: policy,
                failing: AtomicBool::new(false),
                unaccepted: Unaccepted::default(),
                counters: inner.counters.clone(),
                global: OnceLock::new(),
            }),
        }
    }

    /// Counts into `meter`, whatever meter the server that runs this layer was given. Default:
    /// the server's (see [`new`](Self::new)).
    pub fn meter(self, meter: &Meter) -> Self {
        Self::build(
            self.inner.store.clone(),
            self.inner.duplicates,
            Some(Counters::new(meter)),
        )
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn build(
        store: Arc<dyn Store>,
        duplicates: DuplicatePolicy,
        counters: Option<Counters>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                duplicates,
                failing: AtomicBool::new(false),
                unaccepted: Unaccepted::default(),
                counters,
                global: OnceLock::new(),
            }),
        }
    }
}

impl Inner {
    /// The counters for a message of `request`: this layer's own, else its server's (made
    /// again at each count: counts are rare, and the SDK returns the instrument it has), else
    /// the global provider's.
    fn counters(&self, request: &Request) -> std::borrow::Cow<'_, Counters> {
        if let Some(counters) = &self.counters {
            return std::borrow::Cow::Borrowed(counters);
        }
        match request.server_meter() {
            Some(meter) => std::borrow::Cow::Owned(Counters::new(meter)),
            None => std::borrow::Cow::Borrowed(
                self.global
                    .get_or_init(|| Counters::new(&crate::telemetry::meter())),
            ),
        }
    }

    async fn handle(self: Arc<Self>, mut request: Request, next: Next) -> Response {
        let record = Record::from_request(&request);
        let result = self.store.append(record).await;
        let msg = request.message();
        let message_type = msg.message_code().unwrap_or_default();
        let trigger_event = msg.trigger_event().unwrap_or_default();
        let control_id = msg.control_id_text().unwrap_or_default();
        let control_id = crate::hl7::logged_control_id(&control_id);
        let control_id = control_id.as_ref();
        let receipt = match result {
            Ok(receipt) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(store = %self.store.describe(), "store recovered: messages are stored again");
                }
                receipt
            }
            Err(error) => {
                let error = crate::store::error_chain(&error);
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        %error,
                        "message could not be stored; answering AE"
                    );
                } else {
                    tracing::error!(
                        store = %self.store.describe(),
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        %error,
                        "store failed: messages are answered AE (not stored) until it recovers"
                    );
                }
                return Response::error(
                    ErrorCode::ApplicationInternalError,
                    "message could not be stored",
                );
            }
        };
        // The message log line names it (`store.id`; for a duplicate, the copy stored first),
        // when the log is on.
        request.set_store_id(receipt.id().as_str());
        // For the two counters: MSH-9.1 bucketed as the server's metrics do (made only when
        // one counts: most messages are neither).
        let type_attribute = || {
            [KeyValue::new(
                "hl7.message_type",
                crate::telemetry::code_value(msg.message_code_bytes()),
            )]
        };
        match &receipt {
            Receipt::Duplicate { of } => {
                self.counters(&request).duplicates.add(1, &type_attribute());
                let accepted_before = !self.unaccepted.contains(of);
                if self.duplicates == DuplicatePolicy::Acknowledge && accepted_before {
                    tracing::info!(
                        store.id = %of,
                        hl7.message_type = message_type,
                        hl7.trigger_event = trigger_event,
                        hl7.control_id = control_id,
                        "duplicate of a stored message: acknowledged, not stored again"
                    );
                    return Response::accept();
                }
                tracing::info!(
                    store.id = %of,
                    hl7.message_type = message_type,
                    hl7.trigger_event = trigger_event,
                    hl7.control_id = control_id,
                    handler.accepted_before = accepted_before,
                    "duplicate of a stored message: handled again, not stored again"
                );
            }
            Receipt::Stored {
                id,
                reused_control_id: true,
            } => {
                self.counters(&request).reused.add(1, &type_attribute());
                tracing::warn!(
                    store.id = %id,
                    hl7.message_type = message_type,
                    hl7.trigger_event = trigger_event,
                    hl7.control_id = control_id,
                    "control id reused with other content: stored and flagged"
                );
            }
            Receipt::Stored { id, .. } => {
                tracing::debug!(
                    store.id = %id,
                    hl7.message_type = message_type,
                    hl7.trigger_event = trigger_event,
                    hl7.control_id = control_id,
                    "message stored"
                );
            }
        }
        // Until the handler accepts it, a resend is handled again rather than acknowledged
        // from the store; a handler that never answers (it timed out, or panicked: this future
        // is dropped) leaves it refused.
        let mut handling = self.unaccepted.begin(receipt.id().clone());
        request.extensions_mut().insert(Stored(receipt));
        let response = next.run(request).await;
        handling.accepted = response.is_accepted();
        response
    }
}

/// The store ids of copies whose handler has not accepted them: those being handled now, and
/// the last [`UNACCEPTED_KEPT`] it refused (AE, AR, a failure, a timeout).
#[derive(Default)]
struct Unaccepted(std::sync::Mutex<UnacceptedIds>);

#[derive(Default)]
struct UnacceptedIds {
    in_flight: std::collections::HashSet<StoreId>,
    refused: std::collections::HashSet<StoreId>,
    /// The order they were refused in, for forgetting the oldest (an id accepted since stays
    /// here until its turn, and is forgotten then with nothing to remove).
    order: std::collections::VecDeque<StoreId>,
}

/// How many refused (or unanswered) copies [`Unaccepted`] remembers.
const UNACCEPTED_KEPT: usize = 65_536;

impl Unaccepted {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnacceptedIds> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, id: &StoreId) -> bool {
        let ids = self.lock();
        ids.in_flight.contains(id) || ids.refused.contains(id)
    }

    /// Notes that the copy `id` is being handled; the result says, when dropped, how it ended.
    fn begin(&self, id: StoreId) -> Handling<'_> {
        self.lock().in_flight.insert(id.clone());
        Handling {
            unaccepted: self,
            id,
            accepted: false,
        }
    }
}

/// One copy being handled. Dropped, it leaves the in-flight set and, unless `accepted` was
/// set, joins the refused ones (also when the handler's future is dropped unfinished).
struct Handling<'a> {
    unaccepted: &'a Unaccepted,
    id: StoreId,
    accepted: bool,
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        let mut guard = self.unaccepted.lock();
        let ids = &mut *guard;
        ids.in_flight.remove(&self.id);
        if self.accepted {
            ids.refused.remove(&self.id);
        } else if ids.refused.insert(self.id.clone()) {
            ids.order.push_back(self.id.clone());
            while ids.order.len() > UNACCEPTED_KEPT {
                if let Some(old) = ids.order.pop_front() {
                    ids.refused.remove(&old);
                }
            }
        }
    }
}

impl<S> Layer<S> for StoreLayer
where
    S: Service<Request, Response = Response> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Service = Route;

    fn layer(&self, inner: S) -> Route {
        let this = self.inner.clone();
        from_fn(move |request: Request, next: Next| this.clone().handle(request, next)).layer(inner)
    }
}
