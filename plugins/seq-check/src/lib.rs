//! `seq-check`: a keyed process function numbering each key's events.
//!
//! Key it by any field (`key_by = "key"`). Each event comes out as
//! `{"key": …, "n": n, "event": <the input value>}`, where `n` counts the
//! key's events 1, 2, 3, … in host-owned value state. After crashes and
//! restores, a key's `n` running 1..=N with no gap and no repeat shows that
//! every event was processed exactly once, in order (the exactly-once soak
//! test's oracle).

use weir_guest::keyed::{Context, KeyedProcess};
use weir_guest::{Config, Emit, Error, Event, Output};

/// The function.
pub struct SeqCheck;

impl KeyedProcess for SeqCheck {
    fn new(_config: &Config) -> Result<Self, Error> {
        Ok(SeqCheck)
    }

    fn process(
        &mut self,
        event: &Event<'_>,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), Error> {
        let n: u64 = ctx.value()?.unwrap_or(0) + 1;
        ctx.set_value(&n)?;
        let key = serde_json::to_string(ctx.key_str()?)?;
        let line = format!(
            "{{\"key\":{key},\"n\":{n},\"event\":{}}}",
            event.value_str()?
        );
        out.emit(Emit::like(event).with_value(line.as_bytes()));
        Ok(())
    }
}

weir_guest::export_keyed_process!(SeqCheck);

#[cfg(test)]
mod tests {
    #[test]
    fn each_key_counts_on_its_own() {
        let input = [
            ("a", 0, r#"{"key":"a"}"#),
            ("b", 1, r#"{"key":"b"}"#),
            ("a", 2, r#"{"key":"a"}"#),
        ];
        let out = weir_guest::testing::run_keyed::<super::SeqCheck>(&[], &input).unwrap();
        assert_eq!(
            out,
            [
                r#"{"key":"a","n":1,"event":{"key":"a"}}"#,
                r#"{"key":"b","n":1,"event":{"key":"b"}}"#,
                r#"{"key":"a","n":2,"event":{"key":"a"}}"#,
            ]
        );
    }
}
