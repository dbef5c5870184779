//! Hex text ⇄ bytes, for `proto codec` and the test vectors.

/// Parses hex digits, ignoring whitespace, `:`/`-` separators and `0x`
/// prefixes, so `F8 11`, `f811`, `0xF8,0x11` and `f8:11` all work.
pub fn parse(text: &str) -> Result<Vec<u8>, String> {
    let cleaned = text.replace("0x", "").replace("0X", "");
    let digits: Vec<u8> = cleaned
        .bytes()
        .filter(|b| !(b.is_ascii_whitespace() || matches!(b, b':' | b'-' | b',')))
        .collect();
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{}' is not a hex digit (expected 0-9, a-f)",
            char::from(*bad).escape_default()
        ));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of hex digits ({}): every byte needs two",
            digits.len()
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect())
}

fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Bytes as upper-case hex pairs separated by spaces: `F8 11 00`.
pub fn spaced(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_spellings() {
        for text in ["F8 11", "f811", "0xF8,0x11", "f8:11", " F8\n11 "] {
            assert_eq!(parse(text).unwrap(), vec![0xF8, 0x11], "{text}");
        }
    }

    #[test]
    fn rejects_bad_digits_and_odd_lengths() {
        assert!(parse("F8 1").unwrap_err().contains("odd"));
        assert!(parse("zz").unwrap_err().contains("'z'"));
    }

    #[test]
    fn formats_spaced() {
        assert_eq!(spaced(&[0xF8, 0x01]), "F8 01");
    }
}
