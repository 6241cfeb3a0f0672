//! Operator configuration and the error type operators return.

use std::fmt;
use std::str::FromStr;

/// The operator's settings: `[operator.config]` in the pipeline file, or
/// `--config key=value` on `weir test`. Values are text; parse them with
/// [`Config::parse`] or [`Config::parse_or`].
///
/// ```
/// let config = weir_guest::Config::from_pairs([("field", "ua"), ("limit", "10")]);
/// assert_eq!(config.require("field")?, "ua");
/// assert_eq!(config.parse_or::<u32>("limit", 5)?, 10);
/// assert_eq!(config.parse_or::<u32>("other", 5)?, 5);
/// assert!(config.parse::<u32>("field").is_err());
/// # Ok::<(), weir_guest::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Builds a configuration from `(key, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// `key` is not set.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::new(format!("missing config setting `{key}`")))
    }

    /// `key` parsed as a `T`, or `None` when it is not set.
    ///
    /// # Errors
    /// `key` is set but does not parse as a `T`.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T::Err: fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| Error::new(format!("config setting `{key}` = {v:?}: {e}")))
            })
            .transpose()
    }

    /// `key` parsed as a `T`, or `default` when it is not set.
    ///
    /// # Errors
    /// `key` is set but does not parse as a `T`.
    pub fn parse_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T::Err: fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// Every `(key, value)` pair, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// An operator's error: a message for the person running the pipeline. The
/// host adds the operator's name and the event's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(format!("JSON: {e}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Self {
        Error::new(format!("not UTF-8: {e}"))
    }
}
