//! `filter-bots`: drops events whose user agent marks a bot.
//!
//! Config: `field` (default `user_agent`), the JSON field holding the user
//! agent; `patterns` (default `bot,crawler,spider,slurp`), comma-separated,
//! matched case-insensitively anywhere in the user agent. Events without the
//! field are kept.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct FilterBots {
    field: String,
    patterns: Vec<String>,
}

impl Operator for FilterBots {
    fn new(config: &Config) -> Result<Self, Error> {
        let patterns: Vec<String> = config
            .get("patterns")
            .unwrap_or("bot,crawler,spider,slurp")
            .split(',')
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if patterns.is_empty() {
            return Err(Error::new("`patterns` names no pattern"));
        }
        Ok(FilterBots {
            field: config.get("field").unwrap_or("user_agent").to_string(),
            patterns,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Fields<'a>(#[serde(borrow)] HashMap<Cow<'a, str>, serde_json::Value>);
        let Fields(fields) = event.json()?;
        let is_bot = match fields.get(self.field.as_str()) {
            Some(serde_json::Value::String(agent)) => {
                let agent = agent.to_lowercase();
                self.patterns.iter().any(|p| agent.contains(p.as_str()))
            }
            _ => false,
        };
        if !is_bot {
            out.forward(event);
        }
        Ok(())
    }
}

weir_guest::export_operator!(FilterBots);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::run;

    #[test]
    fn drops_bots_keeps_people_and_events_without_an_agent() {
        let out = run::<FilterBots>(
            &[],
            &[
                r#"{"user_agent":"Mozilla/5.0"}"#,
                r#"{"user_agent":"Googlebot/2.1"}"#,
                r#"{"page":"/"}"#,
                r#"{"user_agent":"YandexSpider"}"#,
            ],
        )
        .unwrap();
        assert_eq!(out, [r#"{"user_agent":"Mozilla/5.0"}"#, r#"{"page":"/"}"#]);
    }

    #[test]
    fn field_and_patterns_are_configurable() {
        let out = run::<FilterBots>(
            &[("field", "ua"), ("patterns", "curl")],
            &[r#"{"ua":"curl/8"}"#, r#"{"ua":"Googlebot"}"#],
        )
        .unwrap();
        assert_eq!(out, [r#"{"ua":"Googlebot"}"#]);
    }
}
