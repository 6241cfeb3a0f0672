//! `hot-items`: the second half of Nexmark q5 — per window, the items with
//! the most bids.
//!
//! Input: per-item counts for a window, as `window-count` emits them
//! (`{"auction": a, "num": n, "window_start": s, "window_end": e}`), keyed
//! by `window_end` in a tumbling window of the first stage's slide. Emits
//! every item whose count equals the window's maximum: `{"auction": a,
//! "num": n, "window_start": s, "window_end": e}` (ties all win, as in
//! the Flink SQL with `num >= maxn`). Config: `item_field` (default
//! `auction`), `count_field` (default `num`).

use serde::{Deserialize, Serialize};
use weir_guest::batch::json::Value;
use weir_guest::window::{Aggregate, Window};
use weir_guest::{Config, Error, Event, Output};

/// The aggregate.
pub struct HotItems {
    item_field: String,
    count_field: String,
}

/// The best count so far and the items that have it, plus the bounds of
/// the first stage's window (from the first row: every row of a window
/// has the same).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Best {
    num: u64,
    items: Vec<u64>,
    window_start: i64,
    window_end: i64,
}

#[derive(Serialize)]
struct Row {
    auction: u64,
    num: u64,
    window_start: i64,
    window_end: i64,
}

impl HotItems {
    fn offer(best: &mut Best, item: u64, num: u64) {
        if num > best.num || best.items.is_empty() {
            best.num = num;
            best.items.clear();
        }
        if num == best.num && !best.items.contains(&item) {
            best.items.push(item);
        }
    }
}

impl Aggregate for HotItems {
    type Acc = Best;

    fn new(config: &Config) -> Result<Self, Error> {
        Ok(HotItems {
            item_field: config.get("item_field").unwrap_or("auction").to_string(),
            count_field: config.get("count_field").unwrap_or("num").to_string(),
        })
    }

    fn add(&mut self, acc: &mut Best, event: &Event<'_>) -> Result<(), Error> {
        let unsigned = |value: Option<Value<'_>>, name: &str| {
            value
                .and_then(|v| v.as_u64())
                .ok_or_else(|| Error::new(format!("no unsigned integer field `{name}`")))
        };
        let fields = event.fields();
        let names = [self.item_field.as_str(), self.count_field.as_str()];
        let (item, num) = if acc.items.is_empty() {
            // The first row of the window also gives its bounds (every
            // row of it has the same): four fields read in one walk.
            let [item, num, start, end] =
                fields.pick([names[0], names[1], "window_start", "window_end"])?;
            let time =
                |value: Option<Value<'_>>| value.and_then(|v| v.as_i64()).unwrap_or_default();
            acc.window_start = time(start);
            acc.window_end = time(end);
            (item, num)
        } else {
            // The others: a walk that stops at the count (the first two
            // fields of `window-count`'s rows).
            let [item, num] = fields.pick(names)?;
            (item, num)
        };
        let item = unsigned(item, &self.item_field)?;
        let num = unsigned(num, &self.count_field)?;
        Self::offer(acc, item, num);
        Ok(())
    }

    fn merge(&mut self, acc: &mut Best, other: Best) {
        if acc.items.is_empty() {
            acc.window_start = other.window_start;
            acc.window_end = other.window_end;
        }
        for item in other.items {
            Self::offer(acc, item, other.num);
        }
    }

    fn result(
        &mut self,
        window: &Window<'_>,
        mut acc: Best,
        out: &mut Output,
    ) -> Result<(), Error> {
        acc.items.sort_unstable();
        for auction in acc.items {
            window.emit_json(
                out,
                &Row {
                    auction,
                    num: acc.num,
                    window_start: acc.window_start,
                    window_end: acc.window_end,
                },
            )?;
        }
        Ok(())
    }
}

weir_guest::export_aggregate!(HotItems);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_item_with_the_top_count() {
        let row = |a: u64, n: u64| {
            format!(r#"{{"auction":{a},"num":{n},"window_start":0,"window_end":10}}"#)
        };
        let (a, b, c) = (row(1, 3), row(2, 5), row(3, 5));
        let out = weir_guest::testing::run_aggregate::<HotItems>(
            &[],
            2,
            &[("10", 9, &a), ("10", 9, &b), ("10", 9, &c)],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"auction":2,"num":5,"window_start":0,"window_end":10}"#,
                r#"{"auction":3,"num":5,"window_start":0,"window_end":10}"#,
            ]
        );
    }

    #[test]
    fn the_bounds_come_from_the_first_row_and_survive_a_merge() {
        // Rows after a window's first are read only up to the count.
        let rows = [
            r#"{"auction":1,"num":3,"window_start":0,"window_end":10}"#,
            r#"{"auction":2,"num":4,"window_start":"not read"}"#,
        ];
        let out = weir_guest::testing::run_aggregate::<HotItems>(
            &[],
            2,
            &[("10", 9, rows[0]), ("10", 9, rows[1])],
        )
        .unwrap();
        assert_eq!(
            out,
            [r#"{"auction":2,"num":4,"window_start":0,"window_end":10}"#]
        );
        let mut hot = HotItems::new(&Config::default()).unwrap();
        let mut empty = Best::default();
        let full = Best {
            num: 4,
            items: vec![2],
            window_start: 0,
            window_end: 10,
        };
        hot.merge(&mut empty, full);
        assert_eq!(
            (empty.num, empty.items, empty.window_start, empty.window_end),
            (4, vec![2], 0, 10)
        );
    }

    #[test]
    fn a_row_without_a_count_is_an_error_naming_the_field() {
        let row = r#"{"auction":1,"window_start":0,"window_end":10}"#;
        let err =
            weir_guest::testing::run_aggregate::<HotItems>(&[], 2, &[("10", 9, row)]).unwrap_err();
        assert!(
            err.to_string().contains("no unsigned integer field `num`"),
            "{err}"
        );
    }
}
