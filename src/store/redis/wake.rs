//! Push wake-up across replicas: one pub/sub connection per store, outside
//! the pool, subscribed to one channel on which every lock release publishes
//! its key; waiters register per key in a local map.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tracing::debug;

// shuttle's under `--cfg shuttle`, so that the models drive this registry.
use crate::sync::{Mutex, MutexGuard};

#[cfg(all(test, shuttle))]
mod model;

/// How long to wait before reconnecting after a failure, doubling up to
/// [`MAX_RECONNECT`].
const FIRST_RECONNECT: Duration = Duration::from_millis(50);
const MAX_RECONNECT: Duration = Duration::from_secs(2);

pub(super) struct Wakeups {
    channel: String,
    /// Where to subscribe; tried in turn (the nodes of a cluster).
    clients: Vec<redis::Client>,
    waiters: Mutex<HashMap<String, Waiting>>,
    started: AtomicBool,
    subscribed: watch::Sender<bool>,
    /// Dropped with the store: tells the subscriber task to end.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

struct Waiting {
    signals: Arc<Signals>,
    count: usize,
}

/// What a waiter is told.
#[derive(Default)]
pub(super) struct Signals {
    /// The key's lock was released: a publish arrived.
    pub(super) released: Notify,
    /// Publishes may have been missed (the subscription came back): look at
    /// the lock again.
    pub(super) recheck: Notify,
}

/// A waiter's place in the map; leaving drops the key when it was the last.
pub(super) struct Registration {
    wakeups: Arc<Wakeups>,
    tag: String,
    pub(super) signals: Arc<Signals>,
}

impl Wakeups {
    pub(super) fn new(channel: String, clients: Vec<redis::Client>) -> Self {
        let (tx, rx) = watch::channel(());
        Self {
            channel,
            clients,
            waiters: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
            subscribed: watch::Sender::new(false),
            _alive: tx,
            alive: rx,
        }
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the subscriber connection is up and subscribed.
    pub(super) fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    /// Returns once the subscriber connection is subscribed.
    pub(super) async fn subscribed(&self) {
        let mut subscribed = self.subscribed.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = subscribed.wait_for(|up| *up).await;
    }

    /// Whether pushes can arrive at all.
    pub(super) fn can_push(&self) -> bool {
        !self.clients.is_empty()
    }

    /// Starts the subscriber task on first use, on the caller's runtime.
    pub(super) fn start(self: &Arc<Self>) {
        // A plain load first: this runs on every read, and a swap would make
        // every core write the same cache line.
        if self.clients.is_empty()
            || self.started.load(Ordering::Acquire)
            || self.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(subscribe(Arc::downgrade(self), self.alive.clone()));
    }

    pub(super) fn register(self: &Arc<Self>, tag: &str) -> Registration {
        let mut waiters = self.waiters();
        let waiting = waiters.entry(tag.to_owned()).or_insert_with(|| Waiting {
            signals: Arc::default(),
            count: 0,
        });
        waiting.count += 1;
        Registration {
            wakeups: Arc::clone(self),
            tag: tag.to_owned(),
            signals: Arc::clone(&waiting.signals),
        }
    }

    fn wake(&self, tag: &str) {
        if let Some(waiting) = self.waiters().get(tag) {
            waiting.signals.released.notify_waiters();
        }
    }

    /// After a gap in the subscription, pushes may have been missed:
    /// everyone re-checks.
    fn recheck_all(&self) {
        for waiting in self.waiters().values() {
            waiting.signals.recheck.notify_waiters();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiters = self.wakeups.waiters();
        if let Some(waiting) = waiters.get_mut(&self.tag) {
            waiting.count -= 1;
            if waiting.count == 0 {
                waiters.remove(&self.tag);
            }
        }
    }
}

/// Held by the subscriber task: when the task ends for any reason other
/// than the store's drop (the runtime it was spawned on shut down, taking
/// its tasks with it), the store learns that it is not subscribed, its
/// waiters re-check, and the next call starts a new subscriber.
struct Running(Weak<Wakeups>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(this) = self.0.upgrade() {
            this.subscribed.send_replace(false);
            this.started.store(false, Ordering::Release);
            this.recheck_all();
        }
    }
}

/// The subscriber task: connects, subscribes, and turns each published key
/// into a wake-up, reconnecting with back-off until the store is dropped.
async fn subscribe(wakeups: Weak<Wakeups>, mut alive: watch::Receiver<()>) {
    let _running = Running(wakeups.clone());
    let mut backoff = FIRST_RECONNECT;
    let mut attempt = 0usize;
    loop {
        let Some(this) = wakeups.upgrade() else { return };
        let client = this.clients[attempt % this.clients.len()].clone();
        let channel = this.channel.clone();
        drop(this);
        attempt += 1;

        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            result = tokio::time::timeout(MAX_RECONNECT, connected) => result,
            _ = alive.changed() => return,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                let Some(this) = wakeups.upgrade() else { return };
                this.subscribed.send_replace(true);
                debug!(channel, "subscribed for wake-ups");
                this.recheck_all();
                drop(this);
                backoff = FIRST_RECONNECT;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = alive.changed() => return,
                    };
                    let Some(message) = message else { break };
                    let Some(this) = wakeups.upgrade() else { return };
                    if let Ok(tag) = std::str::from_utf8(message.get_payload_bytes()) {
                        this.wake(tag);
                    }
                }
                debug!(channel, "wake-up subscription lost; reconnecting");
            }
            Ok(Err(error)) => debug!(channel, %error, "cannot subscribe for wake-ups"),
            Err(_) => debug!(channel, "subscribing for wake-ups timed out"),
        }
        if let Some(this) = wakeups.upgrade() {
            this.subscribed.send_replace(false);
            this.recheck_all();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = alive.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_RECONNECT);
    }
}
