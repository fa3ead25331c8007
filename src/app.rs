//! The application layer: request context, handlers, middleware, the router (dispatcher) and
//! parser plugins.
//!
//! A message that was framed and parsed flows through, in order: the parser plugins (which may
//! attach diagnostics or reject), the router's middleware (first registered outermost), the
//! route chosen from MSH-9, and the handler. What comes back is a [`Response`]; the ACK stage
//! turns it into exactly one acknowledgment.

mod charsets;
mod extensions;
mod future;
pub(crate) mod handler;
mod middleware;
pub mod plugin;
mod request;
mod response;
mod router;
pub(crate) mod service;

pub use charsets::{Charsets, InvalidText};
pub use extensions::Extensions;
pub use future::{BoxFuture, RouteFuture};
pub use handler::{Handler, HandlerService, State, handler_service};
pub use middleware::{FromFnLayer, Next, from_fn};
pub use plugin::Plugin;
pub use request::Request;
pub(crate) use request::StoreIdSlot;
pub use response::{HandlerError, IntoResponse, MiddlewareResponse, Response, Status};
pub(crate) use router::Deadlines;
pub use router::{RoutePattern, RoutePatternError, Router};
pub use service::Route;
