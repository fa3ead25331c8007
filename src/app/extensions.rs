//! A type map for per-message data passed from middleware and plugins to handlers.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// Typed per-message data: at most one value of each type, like `http::Extensions`.
///
/// Middleware and plugins insert values (an authenticated partner, a tenant, a parsed patient
/// key); handlers read them with [`Extensions::get`].
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a value, returning the previous value of that type, if any.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.map
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// The value of type `T`, if one was inserted.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// A mutable reference to the value of type `T`, if one was inserted.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.map.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.map
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for Extensions {
    // Values may be anything, patient data included: only the count is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Tenant(&'static str);

    /// One value per type; insert replaces and hands back the old one.
    #[test]
    fn insert_get_replace_remove() {
        let mut ext = Extensions::new();
        assert!(ext.get::<Tenant>().is_none());
        assert_eq!(ext.insert(Tenant("a")), None);
        assert_eq!(ext.insert(7u32), None);
        assert_eq!(ext.insert(Tenant("b")), Some(Tenant("a")));
        assert_eq!(ext.get::<Tenant>(), Some(&Tenant("b")));
        *ext.get_mut::<u32>().unwrap() += 1;
        assert_eq!(ext.remove::<u32>(), Some(8));
        assert_eq!(ext.len(), 1);
        assert_eq!(format!("{ext:?}"), "Extensions { len: 1 }");
    }
}
