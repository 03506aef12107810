//! A [`DefaultKey`] as a configuration file writes it, each option named
//! as its builder method is:
//!
//! ```toml
//! headers = ["x-tenant"]
//! cookies = ["lang"]
//! without_query = true
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use super::{DefaultKey, cookie_name_is_valid};
use crate::human::header_name;

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    without_query: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    without_authority: bool,
}

/// Written as a table of its options (the module's example); with the
/// `config` feature.
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl Serialize for DefaultKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Written {
            headers: self.headers.iter().map(|name| name.as_str().to_owned()).collect(),
            cookies: self.cookies.clone(),
            without_query: self.without_query,
            without_authority: self.without_authority,
        }
        .serialize(serializer)
    }
}

/// Read from a table of its options (the module's example): a header or
/// cookie name that cannot be one is an error naming it, where the builder
/// methods panic; with the `config` feature.
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl<'de> Deserialize<'de> for DefaultKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = Written::deserialize(deserializer)?;
        let mut key = Self::new();
        for name in &written.headers {
            let header = header_name(name).map_err(|e| D::Error::custom(format!("`headers`: {e}")))?;
            key.headers.push(header);
        }
        for name in &written.cookies {
            if !cookie_name_is_valid(name) {
                return Err(D::Error::custom(format!(
                    "`cookies`: {name:?} is not a cookie name"
                )));
            }
        }
        key.cookies = written.cookies;
        key.without_query = written.without_query;
        key.without_authority = written.without_authority;
        Ok(key)
    }
}
