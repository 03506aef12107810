//! The near cache's link to Redis: one RESP3 connection per store, outside
//! the pool, on which Redis reports every write under the store's entry
//! prefix (`CLIENT TRACKING ON BCAST PREFIX <prefix> NOLOOP`). Its pushes
//! are applied as the connection reads them, in order. The near cache is on
//! only while this connection is confirmed and answers its pings: a lost
//! connection, an unanswered ping or a task that ends turn it off and empty
//! it before anything else is read.
//!
//! In a cluster, each master reports the writes to its own slots: one such
//! connection goes to every master, the near cache is on only while all of
//! them are, and it is emptied whenever the set of masters changes (a
//! failover, a node added or removed), as a reconnection would.
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

use redis::{AsyncConnectionConfig, ConnectionAddr, PushInfo, Value, aio::MultiplexedConnection};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::near::Near;
use crate::store::NearStats;

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
    /// Where to connect: the server, or a cluster's seed nodes (RESP3).
    clients: Vec<redis::Client>,
    cluster: bool,
    prefix: String,
    started: AtomicBool,
    /// This Redis cannot push invalidations: no task is started again.
    unsupported: AtomicBool,
    /// Dropped with the store: tells the task to end.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

impl Tracking {
    /// Tracking of the keys that start with `prefix`, on RESP3 connections
    /// made like `clients`' (a cluster's: to each of its masters).
    pub(super) fn new(
        near: Near,
        clients: &[redis::Client],
        cluster: bool,
        prefix: String,
    ) -> redis::RedisResult<Self> {
        let clients = clients
            .iter()
            .map(|client| resp3(client.get_connection_info().clone()))
            .collect::<redis::RedisResult<_>>()?;
        let (tx, rx) = watch::channel(());
        Ok(Self {
            near: Arc::new(near),
            clients,
            cluster,
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

    /// Returns once Redis tracks writes for the near cache, or has refused
    /// to (then the store runs without one).
    pub(super) async fn tracking(&self) {
        let mut updates = self.near.updates();
        let settled = |stats: &NearStats| stats.tracking || self.unsupported.load(Ordering::Acquire);
        // The sender lives as long as `self`: this cannot fail.
        let _ = updates.wait_for(settled).await;
    }
}

fn resp3(info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
    let settings = (info.redis_settings().clone()).set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
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

/// One round of tracking: the connections, all confirmed.
struct Tracked {
    conns: Vec<MultiplexedConnection>,
    /// A cluster's masters when the round began, as `CLUSTER SLOTS` named
    /// them; none for a single server.
    masters: Vec<String>,
}

async fn track(tracking: Weak<Tracking>, mut alive: watch::Receiver<()>) {
    let _running = Running(tracking.clone());
    let mut backoff = FIRST_RECONNECT;
    let mut connection = 0;
    loop {
        connection += 1;
        let Some(this) = tracking.upgrade() else { return };
        let (clients, cluster) = (this.clients.clone(), this.cluster);
        let (prefix, near) = (this.prefix.clone(), Arc::clone(&this.near));
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
        let tracked = tokio::select! {
            tracked = tokio::time::timeout(DEADLINE * 2, open(&clients, cluster, &config, &prefix)) => tracked,
            _ = alive.changed() => return,
        };
        match tracked {
            Ok(Ok(mut tracked)) => {
                near.tracked_by(connection);
                debug!(prefix, "near cache on: Redis tracks the store's entries");
                backoff = FIRST_RECONNECT;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(PING_EVERY) => {}
                        _ = alive.changed() => return,
                    }
                    if !healthy(&mut tracked).await {
                        break;
                    }
                }
                debug!(
                    prefix,
                    "tracking lost, unanswered or the cluster changed: near cache off"
                );
            }
            // Refused, not failed: a Redis before 6 (no RESP3, `HELLO`
            // unknown), or an ACL that denies tracking. Asking again would
            // only be refused again.
            Ok(Err(error)) if matches!(error.code(), Some("ERR" | "NOPERM")) => {
                warn!(%error, "Redis refused to report writes (RESP3 and CLIENT TRACKING, Redis 6 or later): no near cache");
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

/// Opens a tracking connection to the server, or to each of a cluster's
/// masters (found through the first seed node that answers).
async fn open(
    clients: &[redis::Client],
    cluster: bool,
    config: &AsyncConnectionConfig,
    prefix: &str,
) -> redis::RedisResult<Tracked> {
    let (targets, masters) = if cluster {
        let masters = discover(clients).await?;
        let seed = clients[0].get_connection_info();
        let targets = (masters.iter())
            .map(|master| resp3(seed.clone().set_addr(at(seed.addr(), master))))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        (targets, masters)
    } else {
        (clients[..1].to_vec(), Vec::new())
    };
    let mut conns = Vec::with_capacity(targets.len());
    for target in &targets {
        let mut conn = target
            .get_multiplexed_async_connection_with_config(config)
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
            .arg(prefix)
            .arg("NOLOOP");
        on.query_async::<()>(&mut conn).await?;
        conns.push(conn);
    }
    Ok(Tracked { conns, masters })
}

/// Whether every tracking connection answers a ping within the deadline,
/// and a cluster still has the masters it had.
async fn healthy(tracked: &mut Tracked) -> bool {
    for conn in &mut tracked.conns {
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(DEADLINE, ping.query_async::<()>(conn)).await;
        if !matches!(answer, Ok(Ok(()))) {
            return false;
        }
    }
    if tracked.masters.is_empty() {
        return true;
    }
    let now = tokio::time::timeout(DEADLINE, masters(&mut tracked.conns[0])).await;
    matches!(now, Ok(Ok(masters)) if masters == tracked.masters)
}

/// A cluster's masters, asked of the first seed node that answers.
async fn discover(seeds: &[redis::Client]) -> redis::RedisResult<Vec<String>> {
    // A connection of its own: the pushes are for the tracking ones.
    let plain = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(DEADLINE))
        .set_response_timeout(Some(DEADLINE));
    let mut failure = None;
    for seed in seeds {
        match seed.get_multiplexed_async_connection_with_config(&plain).await {
            Ok(mut conn) => return masters(&mut conn).await,
            Err(error) => failure = Some(error),
        }
    }
    Err(failure.unwrap_or_else(|| (redis::ErrorKind::Client, "no cluster node given").into()))
}

/// The masters that `CLUSTER SLOTS` names, as `host:port`, sorted.
async fn masters(conn: &mut MultiplexedConnection) -> redis::RedisResult<Vec<String>> {
    let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters: Vec<String> = slots
        .iter()
        .filter_map(|range| match range {
            Value::Array(range) => match range.get(2) {
                Some(Value::Array(master)) => {
                    let host = master
                        .first()
                        .and_then(|h| redis::from_redis_value_ref::<String>(h).ok())?;
                    let port = master
                        .get(1)
                        .and_then(|p| redis::from_redis_value_ref::<u16>(p).ok())?;
                    Some(format!("{host}:{port}"))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    masters.sort();
    masters.dedup();
    Ok(masters)
}

/// The address of `master` (`host:port`), connected to as `seed` is (TLS
/// or not).
fn at(seed: &ConnectionAddr, master: &str) -> ConnectionAddr {
    let (host, port) = master.rsplit_once(':').unwrap_or((master, "6379"));
    let (host, port) = (host.to_owned(), port.parse().unwrap_or(6379));
    match seed {
        ConnectionAddr::TcpTls {
            insecure, tls_params, ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    }
}
