//! `nexmark-q1`: Nexmark query 1, currency conversion.
//!
//! `SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid`.
//! Config: `rate` (default `0.908`). Events whose `type` field is present and
//! not `"bid"` (Nexmark persons and auctions) are dropped.

use weir_guest::batch::json::Value;
use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct Q1 {
    rate: f64,
}

impl Operator for Q1 {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(Q1 {
            rate: config.parse_or("rate", 0.908)?,
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        // The fields of the row, read in place in one walk; `channel` and
        // `url` are stepped over.
        let [kind, auction, bidder, price, date_time, extra] =
            event
                .fields()
                .pick(["type", "auction", "bidder", "price", "date_time", "extra"])?;
        if !is_bid(kind)? {
            return Ok(());
        }
        let auction = unsigned(auction, "auction")?;
        let bidder = unsigned(bidder, "bidder")?;
        let price = unsigned(price, "price")?;
        let date_time = required(date_time, "date_time")?
            .as_i64()
            .ok_or("`date_time` is not an integer")?;
        out.emit_object(event, |row| {
            row.u64("auction", auction);
            row.u64("bidder", bidder);
            row.f64("price", price as f64 * self.rate);
            row.i64("date_time", date_time);
            match extra.filter(|e| !e.is_null()) {
                // A string is copied as the input wrote it.
                Some(extra) if extra.is_str() => row.raw("extra", extra),
                Some(_) => return Err("`extra` is not a string".into()),
                None => row.str("extra", ""),
            }
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

#[inline(always)]
fn required<'a>(value: Option<Value<'a>>, name: &str) -> Result<Value<'a>, Error> {
    value.ok_or_else(|| format!("bid without `{name}`").into())
}

#[inline(always)]
fn unsigned(value: Option<Value<'_>>, name: &str) -> Result<u64, Error> {
    required(value, name)?
        .as_u64()
        .ok_or_else(|| format!("`{name}` is not an unsigned integer").into())
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

    #[test]
    fn reads_fields_in_any_order_and_keeps_extra_as_written() {
        let out = weir_guest::testing::run::<Q1>(
            &[("rate", "0.5")],
            &[
                r#"{"extra":"a\"b","date_time":-5,"price":3,"bidder":2,"auction":1,"type":"bid"}"#,
                r#"{"auction":1,"bidder":2,"price":4,"date_time":5,"type":null}"#,
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"auction":1,"bidder":2,"price":1.5,"date_time":-5,"extra":"a\"b"}"#,
                r#"{"auction":1,"bidder":2,"price":2.0,"date_time":5,"extra":""}"#,
            ]
        );
    }

    #[test]
    fn bad_rows_are_errors_naming_the_field() {
        let err = |row: &str| {
            weir_guest::testing::run::<Q1>(&[], &[row])
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"auction":1,"bidder":2,"date_time":5}"#).contains("without `price`"));
        assert!(err(r#"{"auction":1.5,"bidder":2,"price":1,"date_time":5}"#).contains("`auction`"));
        assert!(
            err(r#"{"auction":1,"bidder":2,"price":1,"date_time":"x"}"#).contains("`date_time`")
        );
        assert!(
            err(r#"{"auction":1,"bidder":2,"price":1,"date_time":5,"extra":3}"#)
                .contains("`extra`")
        );
        assert!(err(r#"{"auction":1 "bidder":2}"#).contains("byte 13"));
    }
}
