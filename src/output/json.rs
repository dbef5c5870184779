//! JSON for `--json`: every subcommand prints through [`pretty`], which
//! rounds each float to [`crate::units::json::SIGNIFICANT_DIGITS`]
//! significant digits, so no output carries binary float noise
//! (`454.57599999999996` prints as `454.576`).

use crate::units::json::round_significant;
use serde::Serialize;
use serde_json::Value;

/// `value` as indented JSON, floats rounded (see the module docs).
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(value)?;
    round_floats(&mut value);
    serde_json::to_string_pretty(&value)
}

/// Rounds every float inside `value`; integers stay exact.
pub fn round_floats(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(rounded) = n
                .as_f64()
                .map(round_significant)
                .and_then(serde_json::Number::from_f64)
            {
                *n = rounded;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_floats),
        Value::Object(fields) => fields.values_mut().for_each(round_floats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_lose_their_noise_integers_stay() {
        #[derive(Serialize)]
        struct Report {
            p50_us: f64,
            nested: Vec<f64>,
            count: u64,
            big: u64,
        }
        let text = pretty(&Report {
            p50_us: 454.57599999999996,
            nested: vec![0.1 + 0.2, 1e-9 / 3.0],
            count: 7,
            big: u64::MAX,
        })
        .unwrap();
        assert!(text.contains("\"p50_us\": 454.576"), "{text}");
        assert!(
            text.contains("0.3,") && !text.contains("0.30000000000000004"),
            "{text}"
        );
        assert!(text.contains("3.33333333333e-10"), "{text}");
        assert!(text.contains(&u64::MAX.to_string()), "{text}");
        assert!(text.contains("\"count\": 7"), "{text}");
    }
}
