//! `window-count`: counts events per key and window (an aggregate).
//!
//! Emits `{"<key_name>": key, "<count_name>": n, "window_start": ms,
//! "window_end": ms}` per window. Config: `key_name` (default `key`),
//! `count_name` (default `count`). A key that is a JSON integer of up to
//! 64 bits (as `key_by` on an integer field gives) is written as a number.
//!
//! Flink's `SELECT auction, count(*), window_start FROM TUMBLE(…) GROUP BY
//! auction, window_start, window_end` is this operator with `key_by =
//! "auction"` and a tumbling window.

use weir_guest::batch::json::{parse_i64, parse_u64};
use weir_guest::window::{Aggregate, Window};
use weir_guest::{Config, Error, Event, Output};

/// The aggregate.
pub struct WindowCount {
    key_name: String,
    count_name: String,
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
        window.emit_object(out, |row| {
            // A key that is an integer (as `key_by` on a numeric field
            // gives) stays a number.
            if let Some(n) = parse_u64(key.as_bytes()) {
                row.u64(&self.key_name, n);
            } else if let Some(n) = parse_i64(key.as_bytes()) {
                row.i64(&self.key_name, n);
            } else {
                row.str(&self.key_name, key);
            }
            row.u64(&self.count_name, acc);
            row.i64("window_start", window.start);
            row.i64("window_end", window.end);
            Ok(())
        })
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
                ("007", 6, "{}"),
                ("-5", 7, "{}"),
                ("1007", 10_000, "{}"),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"auction":-5,"count":1,"window_start":0,"window_end":10000}"#,
                r#"{"auction":"007","count":1,"window_start":0,"window_end":10000}"#,
                r#"{"auction":1007,"count":2,"window_start":0,"window_end":10000}"#,
                r#"{"auction":"x","count":1,"window_start":0,"window_end":10000}"#,
                r#"{"auction":1007,"count":1,"window_start":10000,"window_end":20000}"#,
            ]
        );
    }
}
