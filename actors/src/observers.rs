//! The [`Observer`]s registered on a server, and how an [`Event`] reaches them.

use std::sync::Arc;

use crate::event::{Event, Observer};
use crate::protocol::Protocol;

/// The observers registered on a server.
pub(crate) struct Observers<P: Protocol>(Vec<Arc<dyn Observer<P>>>);

impl<P: Protocol> Observers<P> {
    pub(crate) fn new(observers: Vec<Arc<dyn Observer<P>>>) -> Self {
        Self(observers)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn emit(&self, event: Event<'_, P>) {
        for observer in &self.0 {
            observer.on_event(&event);
        }
    }
}
