//! What a connector's constructor is given: whether the call is an offline
//! check (`velo validate` and `velo explain` connect to nothing), the object
//! stores of the process by URL, and a way to run a client library's
//! blocking calls (Kafka metadata, a schema registry request, a file's
//! schema inference) off the runtime's threads.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use object_store::registry::{DefaultObjectStoreRegistry, ObjectStoreRegistry};

use crate::{ConnectorError, Result};

/// A boxed future, as connector constructors return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The context of a connector's construction.
#[derive(Clone)]
pub struct ConnectorContext {
    offline: bool,
    stores: Arc<dyn ObjectStoreRegistry>,
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
