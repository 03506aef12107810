//! A policy as a configuration file writes it: a table with its `kind` and
//! the options that kind takes, each named as its builder method is.
//!
//! ```toml
//! kind = "swr"
//! fresh = "50s"
//! gone = "2m"
//! stale_if_error = "5m"
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use super::{Kind, Policy, origin::Targeted};
use crate::human::{self, duration, header_name};

/// The file's form of a policy: every option of every kind, checked
/// against its kind when read.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    kind: Name,
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beta: Option<f64>,
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    fresh: Option<Duration>,
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    gone: Option<Duration>,
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    max: Option<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    targeted: Vec<String>,
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    stale_if_error: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jitter: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    respect_origin: bool,
}

/// The kinds, as a file names them: the builder's constructors.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Name {
    #[default]
    Ttl,
    Xfetch,
    Swr,
    Origin,
    Bypass,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Xfetch => "xfetch",
            Self::Swr => "swr",
            Self::Origin => "origin",
            Self::Bypass => "bypass",
        }
    }
}

impl Written {
    /// The options given, by name.
    fn given(&self) -> [(&'static str, bool); 9] {
        [
            ("ttl", self.ttl.is_some()),
            ("beta", self.beta.is_some()),
            ("fresh", self.fresh.is_some()),
            ("gone", self.gone.is_some()),
            ("max", self.max.is_some()),
            ("targeted", !self.targeted.is_empty()),
            ("stale_if_error", self.stale_if_error.is_some()),
            ("jitter", self.jitter.is_some()),
            ("respect_origin", self.respect_origin),
        ]
    }

    fn policy(self) -> Result<Policy, String> {
        let kind = self.kind.as_str();
        let (needs, takes): (&[&str], &[&str]) = match self.kind {
            Name::Ttl => (&["ttl"], &["ttl", "stale_if_error", "jitter", "respect_origin"]),
            Name::Xfetch => (
                &["ttl"],
                &["ttl", "beta", "stale_if_error", "jitter", "respect_origin"],
            ),
            Name::Swr => (
                &["fresh", "gone"],
                &["fresh", "gone", "stale_if_error", "jitter", "respect_origin"],
            ),
            Name::Origin => (&["max"], &["max", "beta", "targeted", "stale_if_error", "jitter"]),
            Name::Bypass => (&[], &[]),
        };
        for (option, given) in self.given() {
            if given && !takes.contains(&option) {
                return Err(format!(
                    "`{option}` does not apply to a policy of kind \"{kind}\""
                ));
            }
            if !given && needs.contains(&option) {
                return Err(format!("a policy of kind \"{kind}\" needs `{option}`"));
            }
        }
        let beta = self.beta.map(fraction("beta", f64::MAX)).transpose()?;
        let jitter = self.jitter.map(fraction("jitter", 1.0)).transpose()?;
        let mut policy = match self.kind {
            Name::Ttl => Policy::ttl(self.ttl.unwrap_or_default()),
            Name::Xfetch => Policy::xfetch(self.ttl.unwrap_or_default()),
            Name::Swr => {
                let (fresh, gone) = (self.fresh.unwrap_or_default(), self.gone.unwrap_or_default());
                if gone < fresh {
                    return Err(format!(
                        "`gone` ({}) is before `fresh` ({}): both count from when the response was stored",
                        human::format(gone),
                        human::format(fresh)
                    ));
                }
                Policy::stale_while_revalidate(fresh, gone)
            }
            Name::Origin => Policy::origin(self.max.unwrap_or_default()),
            Name::Bypass => Policy::bypass(),
        };
        if let Some(beta) = beta {
            policy = policy.beta(beta);
        }
        // Read as written: the first is read first, as a list of targeted
        // fields is read.
        for name in self.targeted.iter().rev() {
            let field = header_name(name).map_err(|e| format!("`targeted`: {e}"))?;
            policy = policy.targeted(field);
        }
        if let Some(window) = self.stale_if_error {
            policy = policy.stale_if_error(window);
        }
        if let Some(jitter) = jitter {
            policy = policy.jitter(jitter);
        }
        if self.respect_origin {
            policy = policy.respect_origin();
        }
        Ok(policy)
    }
}

/// A check that `option` is a number from 0 to `most`.
fn fraction(option: &'static str, most: f64) -> impl Fn(f64) -> Result<f64, String> {
    move |value| {
        if value.is_finite() && (0.0..=most).contains(&value) {
            Ok(value)
        } else if most == 1.0 {
            Err(format!("`{option}` is {value}: it is a fraction from 0 to 1"))
        } else {
            Err(format!("`{option}` is {value}: it is a number, 0 or more"))
        }
    }
}

impl From<&Policy> for Written {
    fn from(policy: &Policy) -> Self {
        let mut written = Self {
            stale_if_error: (!policy.stale_if_error.is_zero()).then_some(policy.stale_if_error),
            jitter: (policy.jitter != 0.0).then_some(policy.jitter),
            respect_origin: policy.respect_origin,
            ..Self::default()
        };
        match policy.kind {
            Kind::Bypass => written.kind = Name::Bypass,
            Kind::Ttl { ttl } => (written.kind, written.ttl) = (Name::Ttl, Some(ttl)),
            Kind::XFetch { ttl, beta } => {
                (written.kind, written.ttl, written.beta) = (Name::Xfetch, Some(ttl), Some(beta));
            }
            Kind::Swr { fresh, gone } => {
                (written.kind, written.fresh, written.gone) = (Name::Swr, Some(fresh), Some(gone));
            }
            Kind::Origin { max, beta } => {
                (written.kind, written.max) = (Name::Origin, Some(max));
                written.beta = (beta != 0.0).then_some(beta);
                if let Targeted::Named(_) = policy.targeted {
                    let fields = policy.targeted_fields();
                    // The last is CDN-Cache-Control, which every origin
                    // policy reads.
                    let named = &fields[..fields.len().saturating_sub(1)];
                    written.targeted = named.iter().map(|name| name.as_str().to_owned()).collect();
                }
            }
        }
        written
    }
}

/// Written as a table of its kind and options (the module's example);
/// with the `config` feature.
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Written::from(self).serialize(serializer)
    }
}

/// Read from a table of its kind and options (the module's example): an
/// option its kind does not take, one it needs and lacks, `gone` before
/// `fresh`, or a `jitter` outside 0 to 1 is an error that names it; with
/// the `config` feature.
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Written::deserialize(deserializer)?
            .policy()
            .map_err(D::Error::custom)
    }
}
