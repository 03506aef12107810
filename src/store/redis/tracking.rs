//! The near cache's link to Redis: one RESP3 connection per store, outside
//! the pool, on which Redis reports every write under the store's entry
//! prefix (`CLIENT TRACKING ON BCAST PREFIX <prefix> NOLOOP`). Its pushes
//! are applied as the connection reads them, in order. The near cache is on
//! only while this connection is confirmed and answers its pings: a lost
//! connection, an unanswered ping or a task that ends turn it off and empty
//! it before anything else is read.
//!
//! The data pool is left as it is: tracking on pooled connections (with
//! `REDIRECT`) would stop silently when the connection that receives the
//! invalidations dies.

use std::{
    convert::Infallible,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{AsyncConnectionConfig, PushInfo};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::near::Near;

/// How often the tracking connection is pinged, and how long a ping (or
/// connecting) may take before the connection is taken for lost: a replica
/// cut off from Redis without a word serves from its near cache for at
/// most the sum, 1.5 s.
const PING_EVERY: Duration = Duration::from_millis(500);
const DEADLINE: Duration = Duration::from_secs(1);
/// The tracking connection's name in `CLIENT LIST`.
const NAME: &str = "tower-stampede-near-cache";
const FIRST_RECONNECT: Duration = Duration::from_millis(50);
const MAX_RECONNECT: Duration = Duration::from_secs(2);

pub(super) struct Tracking {
    pub(super) near: Arc<Near>,
    client: redis::Client,
    prefix: String,
    started: AtomicBool,
    /// This Redis cannot push invalidations: no task is started again.
    unsupported: AtomicBool,
    /// Dropped with the store: tells the task to end.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

impl Tracking {
    /// Tracking of the keys that start with `prefix`, on a RESP3 connection
    /// made like `client`'s.
    pub(super) fn new(near: Near, client: &redis::Client, prefix: String) -> redis::RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let settings = (info.redis_settings().clone()).set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let (tx, rx) = watch::channel(());
        Ok(Self {
            near: Arc::new(near),
            client,
            prefix,
            started: AtomicBool::new(false),
            unsupported: AtomicBool::new(false),
            _alive: tx,
            alive: rx,
        })
    }

    /// Starts the tracking task on first use, on the caller's runtime.
    pub(super) fn start(self: &Arc<Self>) {
        if self.started.load(Ordering::Acquire)
            || self.unsupported.load(Ordering::Acquire)
            || self.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(track(Arc::downgrade(self), self.alive.clone()));
    }

    /// Returns once Redis tracks writes for the near cache.
    pub(super) async fn tracking(&self) {
        let mut updates = self.near.updates();
        // The sender lives as long as `self`: this cannot fail.
        let _ = updates.wait_for(|stats| stats.tracking).await;
    }
}

/// Held by the tracking task: however it ends (the store dropped, or the
/// runtime it was spawned on shut down), the near cache is off and empty,
/// and the next call starts a new task.
struct Running(Weak<Tracking>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(this) = self.0.upgrade() {
            this.near.set_tracking(false);
            this.started.store(false, Ordering::Release);
        }
    }
}

async fn track(tracking: Weak<Tracking>, mut alive: watch::Receiver<()>) {
    let _running = Running(tracking.clone());
    let mut backoff = FIRST_RECONNECT;
    let mut connection = 0;
    loop {
        connection += 1;
        let Some(this) = tracking.upgrade() else { return };
        let (client, prefix, near) = (this.client.clone(), this.prefix.clone(), Arc::clone(&this.near));
        drop(this);

        let pushes = {
            let near = Arc::downgrade(&near);
            move |push: PushInfo| {
                if let Some(near) = near.upgrade() {
                    near.push(push, connection);
                }
                Ok::<(), Infallible>(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_push_sender(pushes)
            .set_connection_timeout(Some(DEADLINE))
            .set_response_timeout(Some(DEADLINE));
        let tracked = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            // Named, so that an operator can tell it in `CLIENT LIST`.
            let mut name = redis::cmd("CLIENT");
            name.arg("SETNAME").arg(NAME);
            name.query_async::<()>(&mut conn).await?;
            let mut on = redis::cmd("CLIENT");
            on.arg("TRACKING")
                .arg("ON")
                .arg("BCAST")
                .arg("PREFIX")
                .arg(&prefix)
                .arg("NOLOOP");
            on.query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let tracked = tokio::select! {
            tracked = tokio::time::timeout(DEADLINE * 2, tracked) => tracked,
            _ = alive.changed() => return,
        };
        match tracked {
            Ok(Ok(mut conn)) => {
                near.tracked_by(connection);
                debug!(prefix, "near cache on: Redis tracks the store's entries");
                backoff = FIRST_RECONNECT;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(PING_EVERY) => {}
                        _ = alive.changed() => return,
                    }
                    let ping = redis::cmd("PING");
                    let answer = tokio::time::timeout(DEADLINE, ping.query_async::<()>(&mut conn)).await;
                    if !matches!(answer, Ok(Ok(()))) {
                        break;
                    }
                }
                debug!(prefix, "tracking connection lost or unanswered: near cache off");
            }
            Ok(Err(error)) if error.to_string().contains("HELLO") => {
                warn!(%error, "this Redis cannot push invalidations (RESP3, Redis 6 or later): no near cache");
                if let Some(this) = tracking.upgrade() {
                    this.unsupported.store(true, Ordering::Release);
                }
                return;
            }
            Ok(Err(error)) => debug!(prefix, %error, "cannot track for the near cache"),
            Err(_) => debug!(prefix, "tracking for the near cache timed out"),
        }
        near.set_tracking(false);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = alive.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_RECONNECT);
    }
}
