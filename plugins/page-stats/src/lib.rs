//! `page-stats`: the real-time dashboard aggregate — page views and
//! unique users per page and window.
//!
//! Key the stream by page (`key_by = "page"`); each event's `user` field
//! (config `user_field`) counts towards unique users. Emits
//! `{"page": …, "views": n, "unique_users": n, "window_start": ms,
//! "window_end": ms}`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use weir_guest::window::{Aggregate, Window};
use weir_guest::{Config, Error, Event, Output};

/// The aggregate.
pub struct PageStats {
    user_field: String,
}

/// Views and the set of users seen.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    views: u64,
    users: BTreeSet<String>,
}

#[derive(Serialize)]
struct Row<'a> {
    page: &'a str,
    views: u64,
    unique_users: usize,
    window_start: i64,
    window_end: i64,
}

impl Aggregate for PageStats {
    type Acc = Stats;

    fn new(config: &Config) -> Result<Self, Error> {
        Ok(PageStats {
            user_field: config.get("user_field").unwrap_or("user").to_string(),
        })
    }

    fn add(&mut self, acc: &mut Stats, event: &Event<'_>) -> Result<(), Error> {
        let value: serde_json::Map<String, serde_json::Value> = event.json()?;
        let user = match value.get(&self.user_field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => {
                return Err(Error::new(format!("no `{}` field", self.user_field)));
            }
            Some(other) => other.to_string(),
        };
        acc.views += 1;
        acc.users.insert(user);
        Ok(())
    }

    fn merge(&mut self, acc: &mut Stats, other: Stats) {
        acc.views += other.views;
        acc.users.extend(other.users);
    }

    fn result(&mut self, window: &Window<'_>, acc: Stats, out: &mut Output) -> Result<(), Error> {
        window.emit_json(
            out,
            &Row {
                page: window.key_str()?,
                views: acc.views,
                unique_users: acc.users.len(),
                window_start: window.start,
                window_end: window.end,
            },
        )
    }
}

weir_guest::export_aggregate!(PageStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_views_and_distinct_users() {
        let out = weir_guest::testing::run_aggregate::<PageStats>(
            &[],
            60_000,
            &[
                ("/", 1, r#"{"user":"a"}"#),
                ("/", 2, r#"{"user":"b"}"#),
                ("/", 3, r#"{"user":"a"}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [r#"{"page":"/","views":3,"unique_users":2,"window_start":0,"window_end":60000}"#]
        );
        let err = weir_guest::testing::run_aggregate::<PageStats>(&[], 10, &[("/", 1, "{}")]);
        assert!(err.unwrap_err().to_string().contains("`user`"));
    }
}
