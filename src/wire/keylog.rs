//! The NSS key log format: the secrets of TLS and QUIC connections, as
//! text, so a dissector (proto's, Wireshark's) can decrypt a capture.
//!
//! Every TLS implementation can write it (`SSLKEYLOGFILE=path`); each line
//! names a secret, the connection it belongs to (by the 32-byte random the
//! client put in its ClientHello) and the secret itself, both in hex:
//!
//! ```text
//! <LABEL> <client_random, 64 hex digits> <secret, hex>
//!
//! CLIENT_RANDOM                    TLS 1.2: the 48-byte master secret
//! CLIENT_EARLY_TRAFFIC_SECRET      TLS 1.3: 0-RTT data, client → server
//! CLIENT_HANDSHAKE_TRAFFIC_SECRET  TLS 1.3: handshake, client → server
//! SERVER_HANDSHAKE_TRAFFIC_SECRET  TLS 1.3: handshake, server → client
//! CLIENT_TRAFFIC_SECRET_0          TLS 1.3: application data, client → server
//! SERVER_TRAFFIC_SECRET_0          TLS 1.3: application data, server → client
//! ```
//!
//! QUIC uses the same TLS 1.3 secrets (with its own key labels, see
//! `quic.rs`); only its Initial packets are protected with keys anyone can
//! derive from the connection ID.

use std::fmt::Write as _;

/// One line of a key log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLogEntry {
    pub label: String,
    pub client_random: Vec<u8>,
    pub secret: Vec<u8>,
}

/// A set of secrets, looked up by connection (client random) and label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyLog {
    pub entries: Vec<KeyLogEntry>,
}

impl KeyLog {
    /// Parses key log text; comments (`#`), blank and malformed lines are skipped.
    pub fn parse(text: &str) -> KeyLog {
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.starts_with('#') {
                    return None;
                }
                let mut parts = line.split_whitespace();
                let label = parts.next()?;
                let client_random = super::hex::parse(parts.next()?).ok()?;
                let secret = super::hex::parse(parts.next()?).ok()?;
                Some(KeyLogEntry {
                    label: label.to_string(),
                    client_random,
                    secret,
                })
            })
            .collect();
        KeyLog { entries }
    }

    /// The key log as text, one entry per line (what a Decryption Secrets
    /// Block in a pcapng file carries).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let _ = writeln!(
                out,
                "{} {} {}",
                e.label,
                hex_lower(&e.client_random),
                hex_lower(&e.secret)
            );
        }
        out
    }

    pub fn push(&mut self, label: &str, client_random: &[u8], secret: &[u8]) {
        let entry = KeyLogEntry {
            label: label.to_string(),
            client_random: client_random.to_vec(),
            secret: secret.to_vec(),
        };
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub fn extend(&mut self, other: &KeyLog) {
        for e in &other.entries {
            self.push(&e.label, &e.client_random, &e.secret);
        }
    }

    /// The secret `label` of the connection whose ClientHello carried `client_random`.
    pub fn get(&self, label: &str, client_random: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.label == label && e.client_random == client_random)
            .map(|e| e.secret.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_back() {
        let text =
            "# comment\nCLIENT_RANDOM 0a0b 0102\n\nbroken line\nSERVER_TRAFFIC_SECRET_0 0A0B ff\n";
        let log = KeyLog::parse(text);
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.get("CLIENT_RANDOM", &[10, 11]), Some(&[1u8, 2][..]));
        assert_eq!(
            log.get("SERVER_TRAFFIC_SECRET_0", &[10, 11]),
            Some(&[255u8][..])
        );
        assert_eq!(log.get("CLIENT_RANDOM", &[1]), None);
        assert_eq!(
            log.to_text(),
            "CLIENT_RANDOM 0a0b 0102\nSERVER_TRAFFIC_SECRET_0 0a0b ff\n"
        );
    }
}
