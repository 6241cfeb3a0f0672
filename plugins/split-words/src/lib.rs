//! `split-words`: a flat-map from a text field to one event per word.
//!
//! Config: `field` (default `text`). Each word (a run of letters, digits or
//! apostrophes, lower-cased) becomes `{"word": "..."}`, with the input's key,
//! timestamp and headers. Events without the field yield nothing.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct SplitWords {
    field: String,
}

#[derive(Serialize)]
struct Word<'a> {
    word: &'a str,
}

impl Operator for SplitWords {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(SplitWords {
            field: config.get("field").unwrap_or("text").to_string(),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Fields<'a>(#[serde(borrow)] HashMap<Cow<'a, str>, serde_json::Value>);
        let Fields(fields) = event.json()?;
        let Some(serde_json::Value::String(text)) = fields.get(self.field.as_str()) else {
            return Ok(());
        };
        for word in text
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .map(|w| w.trim_matches('\''))
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            out.emit_json(event, &Word { word: &word })?;
        }
        Ok(())
    }
}

weir_guest::export_operator!(SplitWords);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::run;

    #[test]
    fn one_event_per_word() {
        let out =
            run::<SplitWords>(&[], &[r#"{"text":"Hello, world! It's   me."}"#, r#"{}"#]).unwrap();
        assert_eq!(
            out,
            [
                r#"{"word":"hello"}"#,
                r#"{"word":"world"}"#,
                r#"{"word":"it's"}"#,
                r#"{"word":"me"}"#
            ]
        );
    }
}
