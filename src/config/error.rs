//! Reading a file, and what is wrong with one: the field's path, its line,
//! and what the file should say instead.

use std::{error::Error, fmt};

use serde::de::DeserializeOwned;

/// A configuration that could not be read: it names the field (as a path,
/// `routes[1].policy.gone`), the line for a file, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    line: Option<usize>,
    message: String,
}

impl ConfigError {
    /// The path of the field at fault, such as `routes[1].policy`; empty
    /// for the document as a whole.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The line of the file at fault, counted from 1, when it is known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the path and line.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl Error for ConfigError {}

/// The path serde_path_to_error tracked, `.`-joined, with `[n]` for
/// sequence indices.
fn path_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

pub(super) fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| toml_error(text, &error, String::new()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = path_of(error.path());
        toml_error(text, error.inner(), path)
    })
}

fn toml_error(text: &str, error: &toml::de::Error, path: String) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    ConfigError {
        path,
        line,
        message: error.message().trim_end().to_owned(),
    }
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_error(error.inner(), path_of(error.path())))?;
    deserializer
        .end()
        .map_err(|error| json_error(&error, String::new()))?;
    Ok(value)
}

fn json_error(error: &serde_json::Error, path: String) -> ConfigError {
    ConfigError {
        path,
        line: Some(error.line()).filter(|line| *line > 0),
        message: json_message(error),
    }
}

/// serde_json's message without the position it appends (the error
/// carries the line apart).
fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
