//! `window-count`: counts events per key and window (an aggregate).
//!
//! Emits `{"<key_name>": key, "<count_name>": n, "window_start": ms,
//! "window_end": ms}` per window. Config: `key_name` (default `key`),
//! `count_name` (default `count`). A key that is a JSON number (as
//! `key_by` on a numeric field gives) is written as a number.
//!
//! Flink's `SELECT auction, count(*), window_start FROM TUMBLE(…) GROUP BY
//! auction, window_start, window_end` is this operator with `key_by =
//! "auction"` and a tumbling window.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use weir_guest::window::{Aggregate, Window};
use weir_guest::{Config, Error, Event, Output};

/// The aggregate.
pub struct WindowCount {
    key_name: String,
    count_name: String,
}

/// A result row, written straight into the output: the key is a JSON
/// number when it is one.
struct Row<'a> {
    names: &'a WindowCount,
    key: Result<&'a RawValue, &'a str>,
    count: u64,
    window: &'a Window<'a>,
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        match self.key {
            Ok(number) => map.serialize_entry(&self.names.key_name, number)?,
            Err(text) => map.serialize_entry(&self.names.key_name, text)?,
        }
        map.serialize_entry(&self.names.count_name, &self.count)?;
        map.serialize_entry("window_start", &self.window.start)?;
        map.serialize_entry("window_end", &self.window.end)?;
        map.end()
    }
}

impl Aggregate for WindowCount {
    type Acc = u64;

    fn new(config: &Config) -> Result<Self, Error> {
        Ok(WindowCount {
            key_name: config.get("key_name").unwrap_or("key").to_string(),
            count_name: config.get("count_name").unwrap_or("count").to_string(),
        })
    }

    fn add(&mut self, acc: &mut u64, _event: &Event<'_>) -> Result<(), Error> {
        *acc += 1;
        Ok(())
    }

    fn merge(&mut self, acc: &mut u64, other: u64) {
        *acc += other;
    }

    fn result(&mut self, window: &Window<'_>, acc: u64, out: &mut Output) -> Result<(), Error> {
        let key = window.key_str()?;
        let numeric = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        let key = match numeric {
            true => serde_json::from_str::<&RawValue>(key).map_err(|_| key),
            false => Err(key),
        };
        let row = Row {
            names: self,
            key,
            count: acc,
            window,
        };
        window.emit_json(out, &row)
    }
}

weir_guest::export_aggregate!(WindowCount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_window() {
        let out = weir_guest::testing::run_aggregate::<WindowCount>(
            &[("key_name", "auction")],
            10_000,
            &[
                ("1007", 1, "{}"),
                ("1007", 9_999, "{}"),
                ("x", 5, "{}"),
                ("1007", 10_000, "{}"),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"auction":1007,"count":2,"window_start":0,"window_end":10000}"#,
                r#"{"auction":"x","count":1,"window_start":0,"window_end":10000}"#,
                r#"{"auction":1007,"count":1,"window_start":10000,"window_end":20000}"#,
            ]
        );
    }
}
