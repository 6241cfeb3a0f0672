//! `nexmark-q2`: Nexmark query 2, selection.
//!
//! `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.
//! Config: `modulus` (default `123`). Events whose `type` field is present
//! and not `"bid"` are dropped.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct Q2 {
    modulus: u64,
}

#[derive(Deserialize)]
struct Bid<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    auction: Option<u64>,
    price: Option<u64>,
}

#[derive(Serialize)]
struct Selected {
    auction: u64,
    price: u64,
}

impl Operator for Q2 {
    fn new(config: &Config) -> Result<Self, Error> {
        let modulus = config.parse_or("modulus", 123u64)?;
        if modulus == 0 {
            return Err(Error::new("`modulus` must be at least 1"));
        }
        Ok(Q2 { modulus })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let bid: Bid = event.json()?;
        if bid.kind.as_deref().is_some_and(|k| k != "bid") {
            return Ok(());
        }
        let auction = bid.auction.ok_or("bid without `auction`")?;
        let price = bid.price.ok_or("bid without `price`")?;
        if auction % self.modulus != 0 {
            return Ok(());
        }
        out.emit_json(event, &Selected { auction, price })
    }
}

weir_guest::export_operator!(Q2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_auctions_divisible_by_the_modulus() {
        let out = weir_guest::testing::run::<Q2>(
            &[],
            &[
                r#"{"auction":246,"bidder":2,"price":10,"date_time":5}"#,
                r#"{"auction":247,"bidder":2,"price":10,"date_time":5}"#,
            ],
        )
        .unwrap();
        assert_eq!(out, [r#"{"auction":246,"price":10}"#]);
        assert!(weir_guest::testing::run::<Q2>(&[("modulus", "0")], &[]).is_err());
    }
}
