//! The store observer: [`Observed`] wraps a store and reports how long each
//! call took (the `tokengate_store_duration_seconds{op}` histogram,
//! docs/reference/metrics.md). Its `TokenStore` impl is generated from the
//! trait's own declaration (`token_store!` in `store/mod.rs`), so a new
//! store method is one edit and is observed like the rest.

use std::sync::Arc;
use std::time::Duration;

/// Told of every call through an [`Observed`] store.
pub trait StoreObserver: Send + Sync + std::fmt::Debug + 'static {
    /// The call `op` (a method name, or its label) took `took`.
    fn observed(&self, op: &'static str, took: Duration);
}

/// A store that reports every call of the store it wraps to an observer.
#[derive(Debug)]
pub struct Observed<S: ?Sized> {
    pub(super) inner: Arc<S>,
    pub(super) observer: Arc<dyn StoreObserver>,
}

impl<S: ?Sized> Observed<S> {
    /// Wraps `inner`, reporting to `observer`.
    pub fn new(inner: Arc<S>, observer: Arc<dyn StoreObserver>) -> Self {
        Self { inner, observer }
    }
}

/// Declares the `TokenStore` trait and, from the same list, its
/// implementation for [`Observed`]: each async method timed and reported
/// under the label after its `=>`. The few plain (not async) methods are
/// not timed: declared under `plain`, passed on under `observed`.
macro_rules! token_store {
    (
        $(#[$trait_meta:meta])*
        pub trait TokenStore {
            $(
                $(#[$meta:meta])*
                async fn $name:ident(&$self_:ident $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty
                    => $op:literal $body:tt
            )*
        }
        plain { $($plain:tt)* }
        observed { $($observed:tt)* }
    ) => {
        $(#[$trait_meta])*
        #[async_trait]
        pub trait TokenStore: Send + Sync + 'static {
            $(
                $(#[$meta])*
                // `self` as written in the declaration, so that a default
                // body's `self` is the same one.
                async fn $name(&$self_ $(, $arg: $ty)*) -> $ret $body
            )*
            $($plain)*
        }

        #[async_trait]
        impl<S: TokenStore + ?Sized> TokenStore for $crate::store::Observed<S> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let started = std::time::Instant::now();
                    let result = self.inner.$name($($arg),*).await;
                    self.observer.observed($op, started.elapsed());
                    result
                }
            )*
            $($observed)*
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Observed, StoreObserver};
    use crate::store::{MemoryStore, TokenStore};

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<&'static str>>);

    impl StoreObserver for Seen {
        fn observed(&self, op: &'static str, _: Duration) {
            self.0.lock().unwrap().push(op);
        }
    }

    /// Every async call is reported under its label (both listings as
    /// `list`, as the metrics have always named them); plain ones are not.
    #[tokio::test]
    async fn every_call_is_reported_under_its_label() {
        let seen = Arc::new(Seen::default());
        let store = Observed::new(Arc::new(MemoryStore::new()), seen.clone());
        store.ping().await.unwrap();
        store.list_by_account("acme").await.unwrap();
        store.list_page("acme", None, 10).await.unwrap();
        store.remove_dead(0).await.unwrap();
        assert_eq!(store.kind(), "memory");
        assert!(!store.shares_limits());
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["ping", "list", "list", "remove_dead"]
        );
    }
}
