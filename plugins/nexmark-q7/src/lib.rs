//! `nexmark-q7`: Nexmark query 7, the highest bid per window.
//!
//! Use with a tumbling window (10 s in Nexmark) and no `key_by`: one
//! window over all bids. Emits `{"auction": a, "price": p, "bidder": b,
//! "date_time": t, "window_start": s, "window_end": e}` for the highest
//! bid (the earliest among equal prices, then the lowest auction id, so
//! the result does not depend on arrival order). Events whose `type` is
//! present and not `"bid"` are ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use weir_guest::window::{Aggregate, Window};
use weir_guest::{Config, Error, Event, Output};

/// The aggregate.
pub struct Q7;

/// The best bid so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Best {
    seen: bool,
    price: u64,
    date_time: i64,
    auction: u64,
    bidder: u64,
}

impl Best {
    fn beats(&self, other: &Best) -> bool {
        !other.seen
            || (
                self.price,
                std::cmp::Reverse(self.date_time),
                std::cmp::Reverse(self.auction),
            ) > (
                other.price,
                std::cmp::Reverse(other.date_time),
                std::cmp::Reverse(other.auction),
            )
    }
}

#[derive(Deserialize)]
struct Bid<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    auction: Option<u64>,
    bidder: Option<u64>,
    price: Option<u64>,
}

#[derive(Serialize)]
struct Row {
    auction: u64,
    price: u64,
    bidder: u64,
    date_time: i64,
    window_start: i64,
    window_end: i64,
}

impl Aggregate for Q7 {
    type Acc = Best;

    fn new(_: &Config) -> Result<Self, Error> {
        Ok(Q7)
    }

    fn add(&mut self, acc: &mut Best, event: &Event<'_>) -> Result<(), Error> {
        let bid: Bid = event.json()?;
        if bid.kind.as_deref().is_some_and(|k| k != "bid") {
            return Ok(());
        }
        let candidate = Best {
            seen: true,
            price: bid.price.ok_or("bid without `price`")?,
            date_time: event.timestamp(),
            auction: bid.auction.ok_or("bid without `auction`")?,
            bidder: bid.bidder.ok_or("bid without `bidder`")?,
        };
        if candidate.beats(acc) {
            *acc = candidate;
        }
        Ok(())
    }

    fn merge(&mut self, acc: &mut Best, other: Best) {
        if other.seen && other.beats(acc) {
            *acc = other;
        }
    }

    fn result(&mut self, window: &Window<'_>, acc: Best, out: &mut Output) -> Result<(), Error> {
        if !acc.seen {
            return Ok(());
        }
        window.emit_json(
            out,
            &Row {
                auction: acc.auction,
                price: acc.price,
                bidder: acc.bidder,
                date_time: acc.date_time,
                window_start: window.start,
                window_end: window.end,
            },
        )
    }
}

weir_guest::export_aggregate!(Q7);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_bid_and_breaks_ties_by_time() {
        let out = weir_guest::testing::run_aggregate::<Q7>(
            &[],
            10_000,
            &[
                ("", 5, r#"{"auction":1,"bidder":7,"price":50}"#),
                ("", 3, r#"{"auction":2,"bidder":8,"price":90}"#),
                ("", 1, r#"{"auction":3,"bidder":9,"price":90}"#),
                ("", 2, r#"{"type":"person","id":4}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"auction":3,"price":90,"bidder":9,"date_time":1,"window_start":0,"window_end":10000}"#
            ]
        );
    }
}
