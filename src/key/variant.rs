//! `Vary` variants: the request headers a key's responses vary on, learned
//! from the responses, so that each variant has a key (and a flight, a lock
//! and an entry) of its own.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{HeaderMap, HeaderName};

use crate::rules::vary::normalise;

/// How many keys' `Vary` names are remembered; past it the memory starts
/// over (variants then share the plain key until their names are seen
/// again).
const REMEMBERED: usize = 100_000;

/// Most services vary on nothing: until one response varies, lookups cost a
/// load of one flag, and building a layer allocates nothing here.
#[derive(Default)]
pub(crate) struct Varies {
    any: AtomicBool,
    learned: RwLock<HashMap<String, Arc<[HeaderName]>>>,
}

impl Varies {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn names(&self, primary: &str) -> Option<Arc<[HeaderName]>> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let learned = self.learned.read().unwrap_or_else(PoisonError::into_inner);
        learned.get(primary).cloned()
    }

    /// The key of `request`'s variant of `primary`, once `primary`'s
    /// responses are known to vary: the primary key and the normalised
    /// values of the named headers. `None` while nothing is known.
    pub(crate) fn key(&self, primary: &str, request: &HeaderMap) -> Option<String> {
        let names = self.names(primary)?;
        let mut key = String::from(primary);
        key.push_str(" vary[");
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

    /// Remembers what `primary`'s responses vary on.
    pub(crate) fn learn(&self, primary: &str, names: &[HeaderName]) {
        if names.is_empty() || self.names(primary).is_some_and(|known| *known == *names) {
            return;
        }
        let mut learned = self.learned.write().unwrap_or_else(PoisonError::into_inner);
        if learned.len() >= REMEMBERED {
            learned.clear();
        }
        learned.insert(primary.to_owned(), names.into());
        self.any.store(true, Ordering::Relaxed);
    }
}

/// The tag every variant of `primary` is stored with, so that invalidating
/// `primary` reaches them all. It has a space, which tags taken from a
/// response header never have.
pub(crate) fn variant_tag(primary: &str) -> String {
    format!("variant-of {primary}")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

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
    fn a_variant_tag_cannot_be_a_response_tag() {
        assert!(variant_tag("GET a/").contains(' '));
    }
}
