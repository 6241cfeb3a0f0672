//! `fraud-rule`: a keyed process function flagging cards with more than
//! `max_payments` payments within `window_ms` of event time.
//!
//! Key by card (`key_by = "card"`). Each payment is kept in the card's map
//! state (entry: its event time and arrival number); a payment that makes
//! the count within the window exceed `max_payments` emits
//! `{"card": …, "payments": n, "window_ms": T, "at": ts}`. An event-time
//! timer `window_ms` after each payment drops the payments that left the
//! window and clears the card's state once none is left, so idle cards cost
//! nothing. Defaults: `max_payments = 3`, `window_ms = 60000`.

use serde::Serialize;
use weir_guest::keyed::{Context, KeyedProcess, Timer};
use weir_guest::{Config, Error, Event, Output};

/// The function.
pub struct FraudRule {
    max_payments: usize,
    window_ms: i64,
}

#[derive(Serialize)]
struct Alert<'a> {
    card: &'a str,
    payments: usize,
    window_ms: i64,
    at: i64,
}

/// Map entry names sort by time: big-endian time (sign flipped), then a
/// per-card arrival number.
fn entry(ts: i64, n: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
    e[8..].copy_from_slice(&n.to_be_bytes());
    e
}

fn entry_time(e: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&e[..8]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

impl FraudRule {
    /// Drops payments at or before `before`; returns how many are left.
    fn prune(ctx: &mut Context<'_>, before: i64) -> usize {
        let old: Vec<Vec<u8>> = ctx
            .map_keys()
            .take_while(|e| entry_time(e) <= before)
            .map(<[u8]>::to_vec)
            .collect();
        for e in &old {
            ctx.map_remove(e);
        }
        ctx.map_len()
    }
}

impl KeyedProcess for FraudRule {
    fn new(config: &Config) -> Result<Self, Error> {
        let rule = FraudRule {
            max_payments: config.parse_or("max_payments", 3usize)?,
            window_ms: config.parse_or("window_ms", 60_000i64)?,
        };
        if rule.window_ms <= 0 {
            return Err(Error::new("`window_ms` must be positive"));
        }
        Ok(rule)
    }

    fn process(
        &mut self,
        event: &Event<'_>,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), Error> {
        let ts = event.timestamp();
        let arrivals: u64 = ctx.value()?.unwrap_or(0);
        ctx.set_value(&(arrivals + 1))?;
        ctx.map_put(&entry(ts, arrivals), &())?;
        let count = Self::prune(ctx, ts - self.window_ms);
        ctx.set_event_timer(ts + self.window_ms);
        if count > self.max_payments {
            let alert = Alert {
                card: ctx.key_str()?,
                payments: count,
                window_ms: self.window_ms,
                at: ts,
            };
            out.emit_json(event, &alert)?;
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        timer: Timer,
        ctx: &mut Context<'_>,
        _out: &mut Output,
    ) -> Result<(), Error> {
        if Self::prune(ctx, timer.time - self.window_ms) == 0 {
            ctx.clear();
        }
        Ok(())
    }
}

weir_guest::export_keyed_process!(FraudRule);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_payment_that_exceeds_the_limit_within_the_window() {
        let pay = r#"{"card":"c1","amount":5}"#;
        let out = weir_guest::testing::run_keyed::<FraudRule>(
            &[("max_payments", "2"), ("window_ms", "1000")],
            &[
                ("c1", 0, pay),
                ("c2", 100, pay),
                ("c1", 400, pay),
                ("c1", 900, pay),  // third within 1 s: alert
                ("c1", 2500, pay), // the window emptied: fresh start
                ("c1", 2600, pay),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            [r#"{"card":"c1","payments":3,"window_ms":1000,"at":900}"#]
        );
    }
}
