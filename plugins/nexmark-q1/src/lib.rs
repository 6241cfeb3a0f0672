//! `nexmark-q1`: Nexmark query 1, currency conversion.
//!
//! `SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid`.
//! Config: `rate` (default `0.908`). Events whose `type` field is present and
//! not `"bid"` (Nexmark persons and auctions) are dropped.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct Q1 {
    rate: f64,
}

#[derive(Deserialize)]
struct Bid<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    auction: Option<u64>,
    bidder: Option<u64>,
    price: Option<u64>,
    date_time: Option<i64>,
    #[serde(borrow, default)]
    extra: Cow<'a, str>,
}

#[derive(Serialize)]
struct Converted<'a> {
    auction: u64,
    bidder: u64,
    price: f64,
    date_time: i64,
    extra: &'a str,
}

impl Operator for Q1 {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(Q1 {
            rate: config.parse_or("rate", 0.908)?,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let bid: Bid = event.json()?;
        if bid.kind.as_deref().is_some_and(|k| k != "bid") {
            return Ok(());
        }
        let auction = bid.auction.ok_or("bid without `auction`")?;
        let bidder = bid.bidder.ok_or("bid without `bidder`")?;
        let price = bid.price.ok_or("bid without `price`")?;
        let date_time = bid.date_time.ok_or("bid without `date_time`")?;
        out.emit_json(
            event,
            &Converted {
                auction,
                bidder,
                price: price as f64 * self.rate,
                date_time,
                extra: &bid.extra,
            },
        )
    }
}

weir_guest::export_operator!(Q1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_price_and_drops_non_bids() {
        let out = weir_guest::testing::run::<Q1>(
            &[],
            &[
                r#"{"auction":1,"bidder":2,"price":1000,"channel":"c","url":"u","date_time":5,"extra":"x"}"#,
                r#"{"type":"person","id":1}"#,
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [r#"{"auction":1,"bidder":2,"price":908.0,"date_time":5,"extra":"x"}"#]
        );
    }
}
