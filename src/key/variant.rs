//! `Vary` variants: the request headers a key's responses vary on, learned
//! from the responses, so that each variant has a key (and a flight, a lock
//! and an entry) of its own.
//!
//! # Memory
//!
//! What is learned is bounded by bytes, and not by how long keys are:
//! keys are the client's to make long (the default key holds the forwarded
//! hosts, which a request may make hundreds of KB), and each response that
//! varies is learned from, stored or not. So the table holds each key as
//! its SHA-256, and at most [`BUDGET`] (8 MiB) of names, each key weighed
//! as its names and [`PER_KEY`] bytes of the table's own records; when
//! full, moka's admission keeps the keys asked for most. A key's names
//! leave after [`IDLE`] without a request for it. A key whose names are
//! forgotten shares the plain key until a response names them again: one
//! origin call, not a wrong answer.
//!
//! Holding the keys themselves, however weighed, would not do: moka frees
//! a removed entry only once no thread can still be reading it, and in a
//! run of 1000 keys of 240 KB the entries it had evicted but not yet freed
//! held up to 130 MiB, in a table weighed at 8 MiB.

use std::{
    mem::size_of_val,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{HeaderMap, HeaderName};
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::rules::vary::normalise;

/// The most the learned names may hold, in bytes as [`weigh`] counts them:
/// 8 MiB. `Vary: Accept-Encoding` is on most responses of a service that
/// compresses, so the table tends to hold a row for every live key; at
/// about 330 bytes a key, 8 MiB is some 25 000 keys, as many as the default
/// memory store (128 MiB) holds of 5 KiB entries.
pub(crate) const BUDGET: u64 = 8 * 1024 * 1024;

/// How long a key's names are kept without a request for it: an hour, so
/// that the names of keys an attacker made up, or that nobody asks for
/// any more, leave, and a busy key's are relearned at most hourly.
const IDLE: Duration = Duration::from_secs(60 * 60);

/// What the table keeps per key besides its names' slots and bytes:
/// moka's records of the entry (node, hash table slot, deque links), the
/// key's digest and the names' `Arc`. Measured on x86-64 with a counting
/// allocator over 2 000 to 20 000 keys: 301 to 323 bytes with one
/// standard name, which [`weigh`] counts as 335.
const PER_KEY: usize = 288;

/// How many bytes may be learned before the learner runs the table's
/// housekeeping, so that what is held past the budget between two
/// evictions stays an eighth of it: moka waits for 64 writes or more, and
/// the names are the origin's to make long.
const SETTLE_EVERY: u64 = BUDGET / 8;

/// A key as the table holds it: 32 bytes, however long the key.
type Digested = [u8; 32];

/// The SHA-256 of `primary`: keys that differ never share a row, whoever
/// chose them.
fn digest(primary: &str) -> Digested {
    Sha256::digest(primary.as_bytes()).into()
}

/// Most services vary on nothing: until one response varies, lookups cost a
/// load of one flag, and building a layer allocates nothing here.
#[derive(Default)]
pub(crate) struct Varies {
    /// Made when the first response varies; until then, one load says so.
    learned: OnceLock<Cache<Digested, Arc<[HeaderName]>>>,
    /// Bytes learned since the table's housekeeping last ran here.
    unsettled: AtomicU64,
}

/// The bytes a key's `names` cost the table.
fn weigh(names: &[HeaderName]) -> u32 {
    // A custom name's bytes; a standard one has none, and is counted as if
    // it had (it is short).
    let names = size_of_val(names) + names.iter().map(|n| n.as_str().len()).sum::<usize>();
    u32::try_from(PER_KEY + names).unwrap_or(u32::MAX)
}

/// The table, made with the first response that varies.
fn table() -> Cache<Digested, Arc<[HeaderName]>> {
    Cache::builder()
        .max_capacity(BUDGET)
        .weigher(|_: &Digested, names: &Arc<[HeaderName]>| weigh(names))
        .time_to_idle(IDLE)
        .build()
}

impl Varies {
    /// Knows nothing yet, and holds nothing.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn names(&self, primary: &str) -> Option<Arc<[HeaderName]>> {
        self.learned.get()?.get(&digest(primary))
    }

    /// The key of `request`'s variant of `primary`, once `primary`'s
    /// responses are known to vary: the primary key and the normalised
    /// values of the named headers. `None` while nothing is known.
    pub(crate) fn key(&self, primary: &str, request: &HeaderMap) -> Option<String> {
        let names = self.names(primary)?;
        let mut key = String::from(primary);
        key.push_str(VARIANT);
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                key.push(';');
            }
            key.push_str(name.as_str());
            key.push('=');
            key.push_str(&normalise(request, name)?);
        }
        key.push(']');
        Some(key)
    }

    /// Remembers what `primary`'s responses vary on, within [`BUDGET`].
    pub(crate) fn learn(&self, primary: &str, names: &[HeaderName]) {
        if names.is_empty() {
            return;
        }
        let key = digest(primary);
        if let Some(learned) = self.learned.get()
            && learned.get(&key).is_some_and(|known| *known == *names)
        {
            return;
        }
        let weight = weigh(names);
        if u64::from(weight) > BUDGET {
            // It would only push every other key's names out.
            return;
        }
        let learned = self.learned.get_or_init(table);
        learned.insert(key, names.into());
        let weight = u64::from(weight);
        if self.unsettled.fetch_add(weight, Ordering::Relaxed) + weight >= SETTLE_EVERY {
            self.unsettled.store(0, Ordering::Relaxed);
            learned.run_pending_tasks();
        }
    }
}

/// What follows the primary key in a variant's key.
const VARIANT: &str = " vary[";

/// Whether `key` is the key of one of `primary`'s variants. A custom key
/// function could make a primary key that looks like a variant of another:
/// then the two share invalidations, which costs an origin call, not a
/// wrong answer.
pub(crate) fn is_variant_of(key: &str, primary: &str) -> bool {
    key.strip_prefix(primary)
        .is_some_and(|rest| rest.starts_with(VARIANT))
}

/// The tag every variant of `primary` is stored with, so that invalidating
/// `primary` reaches them all. It has a space, which tags taken from a
/// response header never have.
pub(crate) fn variant_tag(primary: &str) -> String {
    format!("variant-of {primary}")
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header::ACCEPT_ENCODING};

    use super::*;

    impl Varies {
        /// The bytes the table holds now, pending evictions included.
        fn held_bytes(&self) -> u64 {
            self.learned.get().map_or(0, |learned| {
                learned.iter().map(|(_, names)| u64::from(weigh(&names))).sum()
            })
        }
    }

    /// Learns `count` keys of `len` bytes, each varying on one name,
    /// checking twenty times on the way that what is held between two
    /// evictions stays near the budget, and calling `also` after each.
    fn learn_many(varies: &Varies, count: usize, len: usize, also: impl Fn()) {
        let mut key = "k".repeat(len);
        for i in 0..count {
            key.replace_range(..8, &format!("{i:08}"));
            varies.learn(&key, &[ACCEPT_ENCODING]);
            if i % (count / 20) == 0 {
                let held = varies.held_bytes();
                assert!(
                    held <= BUDGET + SETTLE_EVERY,
                    "{held} bytes held after {i} keys, budget {BUDGET}"
                );
            }
            also();
        }
    }

    fn settled(varies: &Varies) -> u64 {
        varies.learned.get().expect("learned").run_pending_tasks();
        varies.held_bytes()
    }

    /// The attack: 1000 keys of 240 KB, as requests with four 60 KB
    /// `X-Forwarded-Host` lines make, each of whose responses varies.
    #[test]
    fn learned_names_stay_within_their_budget() {
        let varies = Varies::new();
        learn_many(&varies, 1000, 240 * 1024, || {});
        let held = settled(&varies);
        assert!(held <= BUDGET, "{held} bytes held, budget {BUDGET}");
        let per_key = u64::from(weigh(&[ACCEPT_ENCODING]));
        assert_eq!(held, 1000 * per_key, "a key's length costs the table nothing");
    }

    /// More keys than the budget holds (some 25 000): the table evicts down
    /// to it, and stays full.
    #[test]
    fn a_full_table_evicts_to_its_budget() {
        let varies = Varies::new();
        learn_many(&varies, 30_000, 64, || {});
        let held = settled(&varies);
        assert!(held <= BUDGET, "{held} bytes held, budget {BUDGET}");
        assert!(held > BUDGET / 2, "the table is used, not emptied: {held}");
    }

    #[test]
    fn a_key_in_use_keeps_its_names_through_a_flood() {
        let varies = Varies::new();
        let en = request(&[("accept-encoding", "gzip")]);
        varies.learn("GET a/", &[ACCEPT_ENCODING]);
        learn_many(&varies, 30_000, 64, || {
            assert!(varies.key("GET a/", &en).is_some(), "names forgotten");
        });
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn variants_have_keys_once_the_names_are_known() {
        let varies = Varies::new();
        let en = request(&[("accept-language", "en")]);
        assert_eq!(varies.key("GET a/", &en), None);
        varies.learn(
            "GET a/",
            &[http::header::ACCEPT_LANGUAGE, http::header::ACCEPT_ENCODING],
        );
        assert_eq!(
            varies.key("GET a/", &en).as_deref(),
            Some("GET a/ vary[accept-language=en;accept-encoding=]")
        );
        let noisy = request(&[("accept-language", " EN "), ("accept-encoding", "GZIP,  br")]);
        let tidy = request(&[
            ("accept-language", "en"),
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br"),
        ]);
        assert_eq!(varies.key("GET a/", &noisy), varies.key("GET a/", &tidy));
        assert_ne!(varies.key("GET a/", &en), varies.key("GET a/", &tidy));
    }

    #[test]
    fn a_variant_key_is_known_as_its_primarys() {
        let varies = Varies::new();
        varies.learn("GET a/p", &[http::header::ACCEPT_LANGUAGE]);
        let variant = varies.key("GET a/p", &HeaderMap::new()).expect("names are known");
        assert!(is_variant_of(&variant, "GET a/p"));
        assert!(
            !is_variant_of(&variant, "GET a/"),
            "a prefix of the primary is not it"
        );
        assert!(
            !is_variant_of("GET a/p", "GET a/p"),
            "the primary is not its own variant"
        );
    }

    #[test]
    fn a_variant_tag_cannot_be_a_response_tag() {
        assert!(variant_tag("GET a/").contains(' '));
    }
}
