//! What a flight's leader hands its waiters.

use std::sync::Arc;

use crate::{body::Shared, entry::Entry};

/// The end of a flight, as its waiters see it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// A whole response others may have, and whether it was stored.
    Shared { entry: Arc<Entry>, stored: bool },
    /// A response others may have whose body is read from the origin as
    /// they read it: `head` has its status and headers (and no body);
    /// `kept` says whether it may still be stored.
    Streaming {
        head: Arc<Entry>,
        body: Arc<Shared>,
        kept: bool,
    },
    /// A response only the leader's client may have, and why: waiters go
    /// forward.
    Private(&'static str),
    /// The inner service failed or panicked.
    Failed,
    /// The inner service failed, and the last good response stands in for
    /// it (`stale_if_error`).
    LastGood(Arc<Entry>),
}
