//! Durations, sizes and header names as people write them in
//! configuration files: `"60s"`, `"500ms"`, `"2m"`, `"1h30m"`; `"64MiB"`,
//! `"512KiB"`, or a number of bytes; `"x-tenant"`.

use std::{fmt::Write, time::Duration};

use http::HeaderName;

use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// The longest duration a setting takes: anything longer is a typo (a
/// `ms` dropped), not a wish.
const LONGEST: Duration = Duration::from_secs(366 * 24 * 60 * 60);

const UNITS: [(&str, u64); 5] = [
    ("d", 24 * 60 * 60 * 1000),
    ("h", 60 * 60 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Reads `text` as one or more `<whole number><unit>` parts, units `ms`,
/// `s`, `m`, `h` and `d`, at most a year in all.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: write a whole number and a unit (ms, s, m, h, d), as in \"500ms\", \"60s\" or \"1h30m\""
        )
    };
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative: a duration is 0s or more"));
    }
    let (mut rest, mut millis) = (text.trim(), 0_u64);
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let unit = &rest[digits..digits + unit_len];
        let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(bad)?;
        millis = number
            .checked_mul(*scale)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(|| too_long(text))?;
        rest = &rest[digits + unit_len..];
    }
    let duration = Duration::from_millis(millis);
    if duration > LONGEST {
        return Err(too_long(text));
    }
    Ok(duration)
}

fn too_long(text: &str) -> String {
    format!("{text:?} is longer than a year: is a unit missing (\"500ms\", not \"500\")?")
}

/// `duration` as [`parse`] reads it, in the largest units that write it
/// exactly: `90s` is `"1m30s"`.
pub(crate) fn format(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, scale) in UNITS {
        if millis >= scale {
            let _ = write!(text, "{}{unit}", millis / scale);
            millis %= scale;
        }
    }
    text
}

/// Reads a size: a number of bytes, or a string such as `"64MiB"`,
/// `"512KiB"`, `"1GiB"`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a size: write bytes, or a whole number and KiB, MiB or GiB, as in \"64MiB\"")
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let number: u64 = text[..split].parse().map_err(|_| bad())?;
    let scale: u64 = match &text[split..] {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// `name` as a header name, or what is wrong with it.
pub(crate) fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

/// A size in a file: bytes, or a string [`parse_size`] reads.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

pub mod duration {
    //! `#[serde(with = "tower_stampede::config::duration", default)]` for
    //! an `Option<Duration>` field of an application's own file, written
    //! as this crate's files write durations (`"500ms"`, `"1h30m"`).
    use super::*;

    /// Writes the duration as [`parse_duration`](crate::config::parse_duration) reads it.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads a duration as [`parse_duration`](crate::config::parse_duration) does.
    ///
    /// # Errors
    ///
    /// What is wrong with the text, as the deserializer's error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(Some).map_err(D::Error::custom)
    }
}

pub mod size {
    //! `#[serde(with = "tower_stampede::config::size", default)]` for an
    //! `Option<u64>` of bytes in an application's own file: a number, or
    //! `"64MiB"`.
    use super::*;

    /// Writes the size as a number of bytes.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => serializer.serialize_u64(*bytes),
            None => serializer.serialize_none(),
        }
    }

    /// Reads a size as [`parse_size`](crate::config::parse_size) does, or a number.
    ///
    /// # Errors
    ///
    /// What is wrong with the text, as the deserializer's error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        match SizeText::deserialize(deserializer)? {
            SizeText::Bytes(bytes) => Ok(Some(bytes)),
            SizeText::Text(text) => parse_size(&text).map(Some).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("60s", ms(60_000)),
            ("2m", ms(120_000)),
            ("1h30m", ms(5_400_000)),
            ("1d", ms(86_400_000)),
            ("0s", ms(0)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
            assert_eq!(parse(&format(want)), Ok(want), "{text} written back");
        }
        assert_eq!(format(ms(90_500)), "1m30s500ms");
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (text, says) in [
            ("60", "not a duration"),
            ("s", "not a duration"),
            ("1.5s", "not a duration"),
            ("10 s", "not a duration"),
            ("5w", "not a duration"),
            ("", "not a duration"),
            ("-5s", "negative"),
            ("400d", "longer than a year"),
            ("99999999999999999999s", "not a duration"),
            ("9999999999999999d", "longer than a year"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("64MB").expect_err("MB").contains("not a size"));
        assert!(parse_size("99999999999GiB").is_err());
    }
}
