//! `enrich`: adds a field with a value from config to every JSON object.
//!
//! Config: `field` (required), the name of the field to set; `value`
//! (required), its value as a string, or `json` instead of `value` to give
//! raw JSON (`json = "42"`, `json = "{\"tier\":1}"`). Field order is kept;
//! an existing field of that name is overwritten.

use weir_guest::{Config, Error, Event, Operator, Output};

/// The operator.
pub struct Enrich {
    field: String,
    value: serde_json::Value,
}

impl Operator for Enrich {
    fn new(config: &Config) -> Result<Self, Error> {
        let field = config.require("field")?.to_string();
        let value = match (config.get("value"), config.get("json")) {
            (Some(v), None) => serde_json::Value::String(v.to_string()),
            (None, Some(raw)) => serde_json::from_str(raw)
                .map_err(|e| Error::new(format!("config setting `json` = {raw:?}: {e}")))?,
            _ => return Err(Error::new("set exactly one of `value` and `json`")),
        };
        Ok(Enrich { field, value })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Output) -> Result<(), Error> {
        let mut object: serde_json::Map<String, serde_json::Value> = event
            .json()
            .map_err(|e| Error::new(format!("expected a JSON object: {e}")))?;
        object.insert(self.field.clone(), self.value.clone());
        out.emit_json(event, &object)
    }
}

weir_guest::export_operator!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_guest::testing::run;

    #[test]
    fn adds_the_field_keeping_order() {
        let out = run::<Enrich>(
            &[("field", "region"), ("value", "eu")],
            &[r#"{"z":1,"a":2}"#, r#"{"region":"us","b":true}"#],
        )
        .unwrap();
        assert_eq!(
            out,
            [
                r#"{"z":1,"a":2,"region":"eu"}"#,
                r#"{"region":"eu","b":true}"#
            ]
        );
    }

    #[test]
    fn raw_json_values_and_bad_config() {
        let out = run::<Enrich>(&[("field", "n"), ("json", "[1,2]")], &["{}"]).unwrap();
        assert_eq!(out, [r#"{"n":[1,2]}"#]);
        assert!(run::<Enrich>(&[("field", "n")], &["{}"]).is_err());
        assert!(run::<Enrich>(&[("field", "n"), ("json", "{")], &["{}"]).is_err());
    }

    #[test]
    fn a_non_object_is_an_error() {
        let err = run::<Enrich>(&[("field", "n"), ("value", "x")], &["[1]"]).unwrap_err();
        assert!(err.message().contains("expected a JSON object"), "{err}");
    }
}
