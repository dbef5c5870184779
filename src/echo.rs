//! The uppercase echo service: one pure function shared by every server.
//!
//! Every transport (TCP lines, framed streams, UDP datagrams, TLS, QUIC)
//! answers a message with [`uppercase_into`] of it, so what differs between
//! them in a measurement is the transport, never the work done per message.

/// Appends the uppercase of `message` to `out`.
///
/// * Valid UTF-8 is uppercased by Unicode rules, so `grüße` becomes
///   `GRÜSSE` (one `ß` becomes two letters: the reply can be longer).
/// * Anything else is treated as bytes: ASCII letters are uppercased and
///   every other byte is passed through unchanged. Binary input is never
///   rejected.
pub fn uppercase_into(message: &[u8], out: &mut Vec<u8>) {
    // Fast path: pure ASCII (the common case) needs no Unicode tables.
    if message.is_ascii() {
        let start = out.len();
        out.extend_from_slice(message);
        out[start..].make_ascii_uppercase();
        return;
    }
    match std::str::from_utf8(message) {
        Ok(text) => {
            for c in text.chars() {
                for upper in c.to_uppercase() {
                    let mut utf8 = [0u8; 4];
                    out.extend_from_slice(upper.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        Err(_) => {
            let start = out.len();
            out.extend_from_slice(message);
            out[start..].make_ascii_uppercase();
        }
    }
}

/// The uppercase of `message` as a new vector.
pub fn uppercase(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    uppercase_into(message, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ascii() {
        assert_eq!(uppercase(b"hello, world 42!"), b"HELLO, WORLD 42!");
    }

    #[test]
    fn unicode_rules_apply_to_valid_utf8() {
        assert_eq!(uppercase("grüße".as_bytes()), "GRÜSSE".as_bytes());
        assert_eq!(uppercase("привет".as_bytes()), "ПРИВЕТ".as_bytes());
    }

    #[test]
    fn invalid_utf8_is_ascii_uppercased_not_rejected() {
        assert_eq!(uppercase(b"ab\xFFcd\x00"), b"AB\xFFCD\x00");
    }

    #[test]
    fn appends_after_existing_bytes() {
        let mut out = b"x".to_vec();
        uppercase_into(b"ok", &mut out);
        assert_eq!(out, b"xOK");
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_string(s in ".*") {
            prop_assert_eq!(uppercase(s.as_bytes()), s.to_uppercase().into_bytes());
        }

        #[test]
        fn never_panics_on_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = uppercase(&b);
        }
    }
}
