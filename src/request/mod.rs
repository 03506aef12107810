//! The request stages: each request goes to exactly one, chosen by its
//! [`Plan`](crate::plan::Plan).
//!
//! | stage | requests |
//! | --- | --- |
//! | `forward` | those the cache leaves alone, and those it sends on |
//! | `write` | unsafe methods: forwarded, then their target invalidated |
//! | `post_read` | `POST` reads: the body read and digested, then as `lookup` |
//! | `lookup` | cacheable requests: hit, stale with a refresh, or miss (lead or wait) |
//! | `wait` | requests collapsed onto another's flight |

mod forward;
mod lookup;
mod post_read;
mod wait;
mod write;

pub(crate) use lookup::{at_once, lookup};
pub use post_read::{NoReplay, Replay};
pub(crate) use post_read::{Reader, post_read};
pub(crate) use write::write;
