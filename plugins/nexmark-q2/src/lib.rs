//! `nexmark-q2`: Nexmark query 2, selection.
//!
//! `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.
//! Config: `modulus` (default `123`). Events whose `type` field is present
//! and not `"bid"` are dropped.

use weir_guest::batch::json::Value;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct Q2 {
    modulus: u64,
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
        // Three fields of the row, read in place in one walk.
        let [kind, auction, price] = event.fields().pick(["type", "auction", "price"])?;
        if !is_bid(kind)? {
            return Ok(());
        }
        let auction = unsigned(auction, "auction")?;
        let price = unsigned(price, "price")?;
        if auction % self.modulus != 0 {
            return Ok(());
        }
        out.emit_object(event, |row| {
            row.u64("auction", auction);
            row.u64("price", price);
            Ok(())
        })
    }
}

/// Rows without a `type` (or with `null`) are bids, as in the bid-shaped
/// generator; Nexmark's own rows say `"bid"`.
fn is_bid(kind: Option<Value<'_>>) -> Result<bool, Error> {
    match kind {
        Some(kind) if !kind.is_null() => Ok(kind.as_str()? == "bid"),
        _ => Ok(true),
    }
}

fn unsigned(value: Option<Value<'_>>, name: &str) -> Result<u64, Error> {
    let value = value.ok_or_else(|| format!("bid without `{name}`"))?;
    value
        .as_u64()
        .ok_or_else(|| format!("`{name}` is not an unsigned integer").into())
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

    #[test]
    fn drops_other_types_and_explains_bad_rows() {
        let out = weir_guest::testing::run::<Q2>(
            &[("modulus", "2")],
            &[
                r#"{"type":"person","auction":2,"price":1}"#,
                r#"{"price":7,"auction":4,"type":"bid"}"#,
            ],
        )
        .unwrap();
        assert_eq!(out, [r#"{"auction":4,"price":7}"#]);
        let err =
            weir_guest::testing::run::<Q2>(&[], &[r#"{"auction":-1,"price":1}"#]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`auction` is not an unsigned integer"),
            "{err}"
        );
    }
}
