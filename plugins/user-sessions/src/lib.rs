//! `user-sessions`: session analysis per user (a whole-window function).
//!
//! Key by user and use a session window (e.g. a 30-minute gap). For each
//! session, emits `{"user": …, "session_start": ms, "session_end": ms,
//! "duration_ms": last - first event, "events": n, "pages": [distinct
//! pages in order of first visit]}`. Config: `page_field` (default
//! `page`).

use serde::Serialize;
use weir_guest::window::{Window, WindowFunction};
use weir_guest::{Config, Error, Event, Output};

/// The function.
pub struct UserSessions {
    page_field: String,
}

#[derive(Serialize)]
struct Session<'a> {
    user: &'a str,
    session_start: i64,
    session_end: i64,
    duration_ms: i64,
    events: usize,
    pages: Vec<String>,
}

impl WindowFunction for UserSessions {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(UserSessions {
            page_field: config.get("page_field").unwrap_or("page").to_string(),
        })
    }

    fn process(
        &mut self,
        window: &Window<'_>,
        events: &[Event<'_>],
        out: &mut Output,
    ) -> Result<(), Error> {
        let mut pages: Vec<String> = Vec::new();
        for event in events {
            let value: serde_json::Map<String, serde_json::Value> = event.json()?;
            if let Some(page) = value.get(&self.page_field).and_then(|p| p.as_str())
                && !pages.iter().any(|p| p == page)
            {
                pages.push(page.to_string());
            }
        }
        let first = events.first().map_or(window.start, Event::timestamp);
        let last = events.last().map_or(window.start, Event::timestamp);
        window.emit_json(
            out,
            &Session {
                user: window.key_str()?,
                session_start: window.start,
                session_end: window.end,
                duration_ms: last - first,
                events: events.len(),
                pages,
            },
        )
    }
}

weir_guest::export_window!(UserSessions);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_window_of_events() {
        let out = weir_guest::testing::run_window::<UserSessions>(
            &[],
            1000,
            &[
                ("ann", 30, r#"{"page":"/b"}"#),
                ("ann", 10, r#"{"page":"/a"}"#),
                ("ann", 50, r#"{"page":"/a"}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"user":"ann","session_start":0,"session_end":1000,"duration_ms":40,"events":3,"pages":["/a","/b"]}"#
            ]
        );
    }
}
