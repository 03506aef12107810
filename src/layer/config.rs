//! A layer made from a [`Config`]: each setting given is the builder
//! method of its name.

use super::StampedeLayer;
use crate::{
    config::{Config, ConfigError},
    key::check_pattern,
    request::{NoReplay, Replay},
    store::Store,
};

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl<St: Store> StampedeLayer<St, NoReplay> {
    /// A layer over `store` with `config`'s settings: for each one given,
    /// the builder method of its name, and the builder's default for the
    /// rest. With the `config` feature.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_stampede::ConfigError> {
    /// use std::time::Duration;
    /// use tower_stampede::{Config, MemoryStore, Policy, StampedeLayer};
    ///
    /// let mut config = Config::default();
    /// config.policy = Some(Policy::xfetch(Duration::from_secs(60)));
    /// let layer = StampedeLayer::from_config(MemoryStore::new(), &config)?;
    /// // The same as:
    /// let layer = StampedeLayer::new(MemoryStore::new()).policy(Policy::xfetch(Duration::from_secs(60)));
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A size too large for this machine, a route pattern the table
    /// refuses (a file read by [`Config::from_toml`] has neither), or a
    /// route with `cache_posts`, which needs a layer that reads request
    /// bodies: for those, [`replay_requests`](StampedeLayer::replay_requests)
    /// first, then [`with_config`](StampedeLayer::with_config).
    pub fn from_config(store: St, config: &Config) -> Result<Self, ConfigError> {
        Self::new(store).with_config(config)
    }

    /// This layer with `config`'s settings, each given one as the builder
    /// method of its name: what it gives replaces what was set before.
    ///
    /// # Errors
    ///
    /// As [`from_config`](Self::from_config).
    pub fn with_config(self, config: &Config) -> Result<Self, ConfigError> {
        apply(self, config, false)
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl<St: Store, F, B> StampedeLayer<St, Replay<F, B>> {
    /// This layer, which reads request bodies, with `config`'s settings,
    /// `cache_posts` routes included; as
    /// [`with_config`](StampedeLayer::with_config) otherwise.
    ///
    /// ```
    /// # fn main() -> Result<(), tower_stampede::ConfigError> {
    /// use tower_stampede::{Config, MemoryStore, StampedeLayer};
    ///
    /// let config = Config::from_toml(r#"
    ///     [[routes]]
    ///     path = "/graphql"
    ///     policy = { kind = "ttl", ttl = "30s" }
    ///     cache_posts = true
    /// "#)?;
    /// let layer = StampedeLayer::new(MemoryStore::new())
    ///     .replay_requests(axum::body::Body::new)
    ///     .with_config(&config)?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A size too large for this machine, or a route pattern the table
    /// refuses.
    pub fn with_config(self, config: &Config) -> Result<Self, ConfigError> {
        apply(self, config, true)
    }
}

/// `config` onto `layer`, whose requests' bodies are read if `reads`.
fn apply<St: Store, R>(
    mut layer: StampedeLayer<St, R>,
    config: &Config,
    reads: bool,
) -> Result<StampedeLayer<St, R>, ConfigError> {
    if let Some(policy) = &config.policy {
        layer = layer.policy(policy.clone());
    }
    if let Some(key) = &config.key {
        layer = layer.key(key.clone());
    }
    for (i, route) in config.routes.iter().enumerate() {
        let pattern = route.path.as_str();
        check_pattern(pattern)
            .map_err(|error| ConfigError::new(format!("routes[{i}].path"), error.to_string()))?;
        if let Some(policy) = &route.policy {
            layer = layer.route(pattern, policy.clone());
        }
        if let Some(key) = &route.key {
            layer = layer.route_key(pattern, key.clone());
        }
        if route.ignore_cookies {
            layer = layer.ignore_cookies(pattern);
        }
        if route.cache_posts {
            if !reads {
                return Err(ConfigError::new(
                    format!("routes[{i}].cache_posts"),
                    "needs a layer that reads request bodies: `replay_requests` first, then `with_config`",
                ));
            }
            layer.config().reads.insert(pattern, ());
        }
    }
    let bytes = |field: &str, value: u64| {
        usize::try_from(value).map_err(|_| {
            ConfigError::new(
                field,
                format!("{value} bytes is more than this machine can address"),
            )
        })
    };
    if let Some(limit) = config.max_body_bytes {
        layer = layer.max_body_bytes(bytes("max_body_bytes", limit)?);
    }
    if let Some(limit) = config.max_buffered_bytes {
        layer = layer.max_buffered_bytes(bytes("max_buffered_bytes", limit)?);
    }
    if let Some(limit) = config.max_request_bytes {
        layer = layer.max_request_bytes(bytes("max_request_bytes", limit)?);
    }
    // Each setting given is the builder method of its name.
    macro_rules! given {
        ($($setting:ident),*) => {
            $(if let Some(value) = config.$setting {
                layer = layer.$setting(value);
            })*
        };
    }
    given!(
        fallback_max_bytes,
        max_body_wait,
        max_waiters,
        max_refreshes,
        store_timeout,
        store_retry_after,
        lock_ttl,
        lock_wait,
        pass_for,
        honor_no_cache
    );
    if let Some(tag) = &config.tag_header {
        layer = layer.tag_header(tag.header());
    }
    Ok(layer)
}
