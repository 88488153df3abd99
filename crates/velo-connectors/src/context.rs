//! What a connector's constructor is given: whether the call is an offline
//! check (`velo validate` and `velo explain` connect to nothing), the object
//! stores of the process by URL, and a way to run a client library's
//! blocking calls (Kafka metadata, a schema registry request, a file's
//! schema inference) off the runtime's threads, and the state a connector
//! crate shares between the sources and sinks it creates.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use object_store::registry::{DefaultObjectStoreRegistry, ObjectStoreRegistry};

use crate::{ConnectorError, Result};

/// A boxed future, as connector constructors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The context of a connector's construction.
#[derive(Clone)]
pub struct ConnectorContext {
    offline: bool,
    stores: Arc<dyn ObjectStoreRegistry>,
    /// One value per type, shared by every clone: [`Self::shared`].
    shared: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl fmt::Debug for ConnectorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorContext")
            .field("offline", &self.offline)
            .finish()
    }
}

impl Default for ConnectorContext {
    fn default() -> Self {
        Self::new(Arc::new(DefaultObjectStoreRegistry::new()))
    }
}

impl ConnectorContext {
    /// A context for running jobs, with the process's object stores.
    pub fn new(stores: Arc<dyn ObjectStoreRegistry>) -> Self {
        Self {
            offline: false,
            stores,
            shared: Arc::default(),
        }
    }

    /// The one `T` of this context and its clones, created on first use:
    /// how a connector crate shares state between the sources and sinks it
    /// creates (the Kafka consumers whose offsets a transactional Kafka sink
    /// commits), without a process-global.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        match Arc::clone(slot).downcast::<T>() {
            Ok(t) => t,
            // the slot is keyed by T's type id, so it holds a T
            Err(_) => unreachable!("a shared slot holds the type it is keyed by"),
        }
    }

    /// The same context for an offline check: a connector contacts no
    /// remote system, and refuses with an error starting with
    /// [`crate::registry::OFFLINE_MARK`] what it cannot know without one.
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// Whether this is an offline check.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The object stores of the process, by URL.
    pub fn object_stores(&self) -> &Arc<dyn ObjectStoreRegistry> {
        &self.stores
    }

    /// The runtime the connector runs on.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        tokio::runtime::Handle::current()
    }

    /// Runs `f`, a blocking call, on the runtime's blocking pool; a panic in
    /// it is an internal error.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            ConnectorError::Internal(format!(
                "a connector's setup failed: {}",
                if e.is_panic() {
                    crate::source::panic_text(e.into_panic().as_ref())
                } else {
                    e.to_string()
                }
            ))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct Counter(AtomicU32);

    #[test]
    fn shared_state_is_one_per_context_and_its_clones() {
        let ctx = ConnectorContext::default();
        ctx.shared::<Counter>().0.fetch_add(1, Ordering::Relaxed);
        let clone = ctx.clone().offline();
        assert_eq!(clone.shared::<Counter>().0.load(Ordering::Relaxed), 1);
        // another context (another engine in the process) has its own
        let other = ConnectorContext::default();
        assert_eq!(other.shared::<Counter>().0.load(Ordering::Relaxed), 0);
        // and another type its own slot
        assert_eq!(ctx.shared::<AtomicU32>().load(Ordering::Relaxed), 0);
    }
}
