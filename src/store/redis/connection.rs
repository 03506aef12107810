//! Connections to Redis: one multiplexed connection taken from the pool and
//! shared, replaced from the pool when it breaks.
//!
//! deadpool hands out each pooled connection to one holder at a time and
//! pings it at every checkout; a multiplexed connection already carries
//! concurrent commands, so sharing one avoids a round trip per command.

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use redis::{Cmd, FromRedisValue, RedisFuture, ScriptInvocation, Value, aio::ConnectionLike};

use crate::store::StoreError;

/// Where connections come from.
#[derive(Clone)]
pub(super) enum Pool {
    Single(deadpool_redis::Pool),
    #[cfg(feature = "redis-cluster")]
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection of either kind; cheap to clone.
#[derive(Clone)]
pub(super) enum Conn {
    Single(redis::aio::MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn is_broken(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}

pub(super) struct Connections {
    pool: Pool,
    shared: Mutex<Option<Conn>>,
    timeout: Duration,
}

impl Connections {
    pub(super) fn new(pool: Pool, timeout: Duration) -> Self {
        Self {
            pool,
            shared: Mutex::new(None),
            timeout,
        }
    }

    fn current(&self) -> Option<Conn> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn forget(&self) {
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let conn = match &self.pool {
            Pool::Single(pool) => Conn::Single(deadpool_redis::Connection::take(
                pool.get().await.map_err(StoreError::new)?,
            )),
            #[cfg(feature = "redis-cluster")]
            Pool::Cluster(pool) => Conn::Cluster(deadpool_redis::cluster::Connection::take(
                pool.get().await.map_err(StoreError::new)?,
            )),
        };
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `call` on the shared connection within the store's timeout. A
    /// connection that fails or stops answering is dropped, so the next call
    /// takes a fresh one from the pool; when the shared connection turns out
    /// dead (Redis restarted since), the call is tried once more on a fresh
    /// one at once.
    pub(super) async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let reused = self.current().is_some();
            match call(self.connect().await?).await {
                Ok(value) => Ok(value),
                Err(error) if is_broken(&error) => {
                    self.forget();
                    if !reused {
                        return Err(StoreError::new(error));
                    }
                    let retried = call(self.connect().await?).await;
                    retried.map_err(|error| {
                        if is_broken(&error) {
                            self.forget();
                        }
                        StoreError::new(error)
                    })
                }
                Err(error) => Err(StoreError::new(error)),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                self.forget();
                Err(StoreError::timeout())
            }
        }
    }

    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.run(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    pub(super) async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        self.run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(|mut conn| async move { script.invoke_async(&mut conn).await })
            .await
    }
}
