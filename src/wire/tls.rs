//! TLS 1.2 and 1.3 as they cross the wire: records, handshake messages,
//! and the record protection, decrypted with a connection's own secrets.
//!
//! # Records (RFC 8446 §5.1, RFC 5246 §6.2)
//!
//! TLS cuts its byte stream into records, each with a 5-byte header:
//!
//! ```text
//! +--------------+-------------------+------------------+---------------
//! | content type | legacy version    | length (16 bits) | fragment ...
//! |  (1 byte)    | 0x0303 (2 bytes)  |   ≤ 2^14 + 256   | (length bytes)
//! +--------------+-------------------+------------------+---------------
//! content type: 20 change_cipher_spec · 21 alert · 22 handshake · 23 application_data
//! ```
//!
//! Handshake messages travel inside handshake records, each with its own
//! 4-byte header (type, 24-bit length); one message may span records and
//! one record may hold several messages:
//!
//! ```text
//! | msg type (1) | length (3) | body ... |
//! 1 ClientHello · 2 ServerHello · 4 NewSessionTicket · 5 EndOfEarlyData
//! 8 EncryptedExtensions · 11 Certificate · 12 ServerKeyExchange
//! 14 ServerHelloDone · 15 CertificateVerify · 16 ClientKeyExchange · 20 Finished
//! ```
//!
//! # Protection
//!
//! **TLS 1.3** encrypts everything after the ServerHello. Every protected
//! record *looks like* application data (type 23); the real type is the
//! last non-zero byte of the decrypted plaintext. Keys come from the
//! traffic secrets (see `keylog.rs`) by HKDF-Expand-Label:
//!
//! ```text
//! key = HKDF-Expand-Label(secret, "key", "", key_length)
//! iv  = HKDF-Expand-Label(secret, "iv",  "", 12)
//! nonce = iv XOR (record sequence number, left-padded to 12 bytes)
//! additional data = the 5-byte record header
//! ```
//!
//! Each direction and each secret counts its records from 0, so the
//! decryptor tries the current key and then the next ones (early data →
//! handshake → application), as the authentication tag tells which fits.
//!
//! **TLS 1.2** encrypts only after each side's ChangeCipherSpec. Its keys
//! come from the 48-byte master secret through the PRF (RFC 5246 §5):
//!
//! ```text
//! key_block = P_hash(master_secret, "key expansion" + server_random + client_random)
//!           = client_write_key | server_write_key | client_write_iv | server_write_iv
//! AES-GCM: nonce = iv (4 bytes) | explicit nonce (first 8 bytes of the record)
//! ChaCha20-Poly1305 (RFC 7905): nonce = iv (12 bytes) XOR sequence number
//! additional data = seq (8) | type (1) | version (2) | plaintext length (2)
//! ```

use ring::{aead, hkdf, hmac};

pub const CHANGE_CIPHER_SPEC: u8 = 20;
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

pub const RECORD_HEADER_LEN: usize = 5;

/// The name of a handshake message type.
pub fn handshake_name(kind: u8) -> String {
    match kind {
        0 => "HelloRequest".into(),
        1 => "ClientHello".into(),
        2 => "ServerHello".into(),
        4 => "NewSessionTicket".into(),
        5 => "EndOfEarlyData".into(),
        8 => "EncryptedExtensions".into(),
        11 => "Certificate".into(),
        12 => "ServerKeyExchange".into(),
        13 => "CertificateRequest".into(),
        14 => "ServerHelloDone".into(),
        15 => "CertificateVerify".into(),
        16 => "ClientKeyExchange".into(),
        20 => "Finished".into(),
        22 => "CertificateStatus".into(),
        24 => "KeyUpdate".into(),
        other => format!("handshake type {other}"),
    }
}

/// A TLS alert: level (1 warning, 2 fatal) and description.
pub fn alert_name(body: &[u8]) -> String {
    let description = match body.get(1) {
        Some(0) => "close_notify",
        Some(10) => "unexpected_message",
        Some(20) => "bad_record_mac",
        Some(40) => "handshake_failure",
        Some(42) => "bad_certificate",
        Some(48) => "unknown_ca",
        Some(50) => "decode_error",
        Some(51) => "decrypt_error",
        Some(70) => "protocol_version",
        Some(80) => "internal_error",
        Some(90) => "user_canceled",
        Some(109) => "missing_extension",
        Some(120) => "no_application_protocol",
        _ => return format!("Alert {body:02x?}"),
    };
    format!("Alert {description}")
}

/// One record cut from a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub content_type: u8,
    pub version: u16,
    pub header: [u8; RECORD_HEADER_LEN],
    pub body: &'a [u8],
}

/// Cuts the complete records at the start of `stream`; returns them and
/// how many bytes they used (a partial record at the end waits for more).
pub fn split_records(stream: &[u8]) -> (Vec<Record<'_>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = stream.get(at..at + RECORD_HEADER_LEN) {
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        let Some(body) = stream.get(at + RECORD_HEADER_LEN..at + RECORD_HEADER_LEN + len) else {
            break;
        };
        out.push(Record {
            content_type: h[0],
            version: u16::from_be_bytes([h[1], h[2]]),
            header: [h[0], h[1], h[2], h[3], h[4]],
            body,
        });
        at += RECORD_HEADER_LEN + len;
    }
    (out, at)
}

/// Counts the records in a byte stream as it is written, without keeping
/// it: how many records, and how many bytes their bodies (ciphertext, with
/// the AEAD tag and TLS 1.3's inner content type) took. The stream may be
/// cut anywhere: a header split across two writes is put back together.
///
/// ```text
///   ┌────────┬─────────┬────────┬──────────────────────────────────────┐
///   │ type 1 │ version │ length │ body (length bytes): ciphertext of   │
///   │        │ 2       │ 2      │ data + inner type (1) + AEAD tag (16)│
///   └────────┴─────────┴────────┴──────────────────────────────────────┘
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordTally {
    /// Complete record headers seen.
    pub records: u64,
    /// Body bytes of those records (whether or not all of them arrived yet).
    pub body_bytes: u64,
    /// Bytes of the current record's body still to come.
    body_left: usize,
    header: [u8; RECORD_HEADER_LEN],
    header_have: usize,
}

impl RecordTally {
    /// Account for `bytes`, the next part of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (RECORD_HEADER_LEN - self.header_have).min(bytes.len());
            self.header[self.header_have..self.header_have + n].copy_from_slice(&bytes[..n]);
            self.header_have += n;
            bytes = &bytes[n..];
            if self.header_have == RECORD_HEADER_LEN {
                self.header_have = 0;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.records += 1;
                self.body_bytes += self.body_left as u64;
            }
        }
    }

    /// Record-header bytes so far (5 per record).
    pub fn header_bytes(&self) -> u64 {
        self.records * RECORD_HEADER_LEN as u64
    }
}

/// Whether `bytes` start like a TLS record (used to recognise TLS on any port).
pub fn looks_like_record(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 0..=4, ..])
}

/// Reassembles handshake messages from the contents of handshake records.
#[derive(Debug, Default)]
pub struct HandshakeReader {
    buf: Vec<u8>,
}

/// Largest handshake message accepted (a certificate chain fits easily).
const MAX_HANDSHAKE_MESSAGE: usize = 1 << 20;

impl HandshakeReader {
    /// Adds bytes and returns every message now complete, as (type, body).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(h) = self.buf.get(..4) {
            let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if len > MAX_HANDSHAKE_MESSAGE {
                self.buf.clear(); // not a handshake stream we can follow
                break;
            }
            if self.buf.len() < 4 + len {
                break;
            }
            let kind = self.buf[0];
            let body = self.buf[4..4 + len].to_vec();
            self.buf.drain(..4 + len);
            out.push((kind, body));
        }
        out
    }

    /// Bytes of a message still incomplete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// What a ClientHello offers, as a ladder shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    pub random: Vec<u8>,
    pub server_name: Option<String>,
    /// Named groups of the key shares sent (TLS 1.3).
    pub key_share_groups: Vec<u16>,
    pub psk: bool,
    pub early_data: bool,
    pub session_ticket: bool,
    pub alpn: Vec<String>,
}

/// Parses a ClientHello body with `tls-parser`.
pub fn parse_client_hello(body: &[u8]) -> Option<ClientHelloInfo> {
    let (_, hello) = tls_parser::parse_tls_handshake_client_hello(body).ok()?;
    let mut info = ClientHelloInfo {
        random: hello.random.to_vec(),
        ..Default::default()
    };
    let exts = hello.ext.unwrap_or_default();
    let (_, extensions) = tls_parser::parse_tls_client_hello_extensions(exts).ok()?;
    for ext in extensions {
        use tls_parser::TlsExtension as E;
        match ext {
            E::SNI(names) => {
                info.server_name = names
                    .first()
                    .map(|(_, n)| String::from_utf8_lossy(n).into_owned())
            }
            E::KeyShare(shares) => info.key_share_groups = key_share_groups(shares),
            E::PreSharedKey(_) => info.psk = true,
            E::EarlyData(_) => info.early_data = true,
            E::SessionTicket(t) => info.session_ticket = !t.is_empty(),
            E::ALPN(protocols) => {
                info.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            }
            _ => {}
        }
    }
    Some(info)
}

/// ClientHello key_share: a 2-byte list length, then { group (2) | key length (2) | key }*.
fn key_share_groups(data: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 2;
    while let Some(h) = data.get(i..i + 4) {
        out.push(u16::from_be_bytes([h[0], h[1]]));
        i += 4 + u16::from_be_bytes([h[2], h[3]]) as usize;
    }
    out
}

/// What a ServerHello decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHelloInfo {
    pub random: Vec<u8>,
    pub cipher_suite: u16,
    /// The supported_versions extension says TLS 1.3.
    pub tls13: bool,
    pub key_share_group: Option<u16>,
    /// TLS 1.3: the server accepted a pre-shared key (resumption).
    pub psk: bool,
    pub hello_retry: bool,
}

/// The `random` of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256 of "HelloRetryRequest".
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Parses a ServerHello body with `tls-parser`.
///
/// ```text
/// legacy_version (2) | random (32) | session_id (1 + n) | cipher_suite (2)
/// | compression (1) | extensions length (2) | { type (2) | length (2) | data }*
/// ```
pub fn parse_server_hello(body: &[u8]) -> Option<ServerHelloInfo> {
    let mut message = vec![2, 0, 0, 0];
    message[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend_from_slice(body);
    let (_, parsed) = tls_parser::parse_tls_message_handshake(&message).ok()?;
    let tls_parser::TlsMessage::Handshake(tls_parser::TlsMessageHandshake::ServerHello(hello)) =
        parsed
    else {
        return None;
    };
    let mut info = ServerHelloInfo {
        random: hello.random.to_vec(),
        cipher_suite: hello.cipher.0,
        tls13: false,
        key_share_group: None,
        psk: false,
        hello_retry: hello.random == HRR_RANDOM,
    };
    let (_, extensions) =
        tls_parser::parse_tls_server_hello_extensions(hello.ext.unwrap_or_default()).ok()?;
    for ext in extensions {
        use tls_parser::TlsExtension as E;
        match ext {
            E::SupportedVersions(v) => info.tls13 = v.iter().any(|v| v.0 == 0x0304),
            E::KeyShare(data) if data.len() >= 2 => {
                info.key_share_group = Some(u16::from_be_bytes([data[0], data[1]]))
            }
            E::PreSharedKey(_) => info.psk = true,
            _ => {}
        }
    }
    Some(info)
}

/// A key-exchange group's name.
pub fn group_name(group: u16) -> String {
    match group {
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x001d => "x25519".into(),
        0x11ec => "X25519MLKEM768".into(),
        other => format!("group {other:#06x}"),
    }
}

// ---------------------------------------------------------------------------
// Record protection.

/// The hash a cipher suite's key schedule uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
}

impl Hash {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Hash::Sha256 => hkdf::HKDF_SHA256,
            Hash::Sha384 => hkdf::HKDF_SHA384,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha384 => hmac::HMAC_SHA384,
        }
    }
}

/// What proto needs to know about a cipher suite.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    pub id: u16,
    pub aead: &'static aead::Algorithm,
    pub hash: Hash,
    pub tls13: bool,
}

impl Suite {
    pub fn key_len(&self) -> usize {
        self.aead.key_len()
    }

    /// TLS 1.2 AES-GCM carries 8 bytes of the nonce in each record.
    fn explicit_nonce(&self) -> bool {
        !self.tls13 && self.aead != &aead::CHACHA20_POLY1305
    }
}

/// The AEAD suites rustls (and so proto) can negotiate.
pub fn suite(id: u16) -> Option<Suite> {
    let (aead, hash, tls13): (&'static aead::Algorithm, Hash, bool) = match id {
        0x1301 => (&aead::AES_128_GCM, Hash::Sha256, true),
        0x1302 => (&aead::AES_256_GCM, Hash::Sha384, true),
        0x1303 => (&aead::CHACHA20_POLY1305, Hash::Sha256, true),
        0xc02b | 0xc02f => (&aead::AES_128_GCM, Hash::Sha256, false),
        0xc02c | 0xc030 => (&aead::AES_256_GCM, Hash::Sha384, false),
        0xcca8 | 0xcca9 => (&aead::CHACHA20_POLY1305, Hash::Sha256, false),
        _ => return None,
    };
    Some(Suite {
        id,
        aead,
        hash,
        tls13,
    })
}

/// The TLS 1.3 suites whose hash has this output length (to try a secret
/// before the ServerHello says which suite it is).
pub fn tls13_suites_for_secret(secret_len: usize) -> Vec<Suite> {
    [0x1301, 0x1302, 0x1303]
        .into_iter()
        .filter_map(suite)
        .filter(|s| s.hash.output_len() == secret_len)
        .collect()
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1):
///
/// ```text
/// struct { uint16 length; opaque label<7..255> = "tls13 " + Label;
///          opaque context<0..255>; } HkdfLabel;
/// ```
pub fn hkdf_expand_label(hash: Hash, secret: &[u8], label: &[u8], len: usize) -> Vec<u8> {
    let prk = hkdf::Prk::new_less_safe(hash.hkdf(), secret);
    let length = (len as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let context_len = [0u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &context_len];
    let mut out = vec![0u8; len];
    // Only fails for lengths over 255 hash blocks, which no caller asks for.
    if let Ok(okm) = prk.expand(&info, Len(len)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// HKDF-Extract(salt, ikm).
pub fn hkdf_extract(hash: Hash, salt: &[u8], ikm: &[u8]) -> Vec<u8> {
    // ring keeps the PRK opaque; the extract is one HMAC, so compute it directly.
    let key = hmac::Key::new(hash.hmac(), salt);
    hmac::sign(&key, ikm).as_ref().to_vec()
}

/// The TLS 1.2 PRF: P_hash(secret, label + seed) (RFC 5246 §5).
pub fn tls12_prf(hash: Hash, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(hash.hmac(), secret);
    let mut label_seed = label.to_vec();
    label_seed.extend_from_slice(seed);
    let mut out = Vec::with_capacity(len);
    // A(0) = seed; A(i) = HMAC(secret, A(i-1)); output HMAC(secret, A(i) + seed).
    let mut a = hmac::sign(&key, &label_seed).as_ref().to_vec();
    while out.len() < len {
        let mut input = a.clone();
        input.extend_from_slice(&label_seed);
        out.extend_from_slice(hmac::sign(&key, &input).as_ref());
        a = hmac::sign(&key, &a).as_ref().to_vec();
    }
    out.truncate(len);
    out
}

/// An AEAD key with its IV: one direction of one epoch.
pub struct PacketKey {
    pub suite: Suite,
    key: aead::LessSafeKey,
    iv: Vec<u8>,
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketKey({:#06x})", self.suite.id)
    }
}

impl PacketKey {
    pub fn new(suite: Suite, key: &[u8], iv: &[u8]) -> Option<PacketKey> {
        let unbound = aead::UnboundKey::new(suite.aead, key).ok()?;
        Some(PacketKey {
            suite,
            key: aead::LessSafeKey::new(unbound),
            iv: iv.to_vec(),
        })
    }

    /// A TLS 1.3 traffic key from its secret.
    pub fn tls13(suite: Suite, secret: &[u8]) -> Option<PacketKey> {
        let key = hkdf_expand_label(suite.hash, secret, b"key", suite.key_len());
        let iv = hkdf_expand_label(suite.hash, secret, b"iv", 12);
        PacketKey::new(suite, &key, &iv)
    }

    /// The 12-byte nonce for `counter`: the IV XOR the counter, right-aligned.
    pub fn nonce(&self, counter: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        let iv = self.iv.get(..12).unwrap_or(&[0; 12]);
        nonce.copy_from_slice(iv);
        for (n, c) in nonce[4..].iter_mut().zip(counter.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }

    /// Opens `ciphertext` (with its tag) in place; `None` if the tag does not verify.
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        let plain_len = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

/// One direction's record protection, with a sequence number per key.
#[derive(Debug, Default)]
pub struct RecordDecryptor {
    /// Candidate keys in the order they come into use, with their next sequence number.
    keys: Vec<(PacketKey, u64, &'static str)>,
    current: usize,
}

impl RecordDecryptor {
    /// Adds a key that comes into use after the ones already added; the
    /// name says which ("early data", "handshake", "application").
    pub fn push(&mut self, key: PacketKey, epoch: &'static str) {
        self.keys.push((key, 0, epoch));
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Decrypts one protected record: the current key first, then later
    /// ones (a new epoch began). Returns the real content type, the
    /// plaintext and the epoch name.
    pub fn open(&mut self, record: &Record<'_>) -> Option<(u8, Vec<u8>, &'static str)> {
        for index in self.current..self.keys.len() {
            let (key, seq, epoch) = &self.keys[index];
            if let Some((kind, plain)) = open_record(key, *seq, record) {
                let epoch = *epoch;
                self.keys[index].1 += 1;
                self.current = index;
                return Some((kind, plain, epoch));
            }
        }
        None
    }
}

fn open_record(key: &PacketKey, seq: u64, record: &Record<'_>) -> Option<(u8, Vec<u8>)> {
    if key.suite.tls13 {
        // TLSInnerPlaintext = content | type (1) | zeros.
        let mut plain = key.open(key.nonce(seq), &record.header, record.body)?;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        let kind = plain.pop()?;
        Some((kind, plain))
    } else {
        let (nonce, ciphertext) = if key.suite.explicit_nonce() {
            let explicit = record.body.get(..8)?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(key.iv.get(..4)?);
            nonce[4..].copy_from_slice(explicit);
            (nonce, record.body.get(8..)?)
        } else {
            (key.nonce(seq), record.body)
        };
        let plain_len = ciphertext.len().checked_sub(key.suite.aead.tag_len())?;
        let mut aad = seq.to_be_bytes().to_vec();
        aad.push(record.content_type);
        aad.extend_from_slice(&record.version.to_be_bytes());
        aad.extend_from_slice(&(plain_len as u16).to_be_bytes());
        let plain = key.open(nonce, &aad, ciphertext)?;
        Some((record.content_type, plain))
    }
}

/// TLS 1.2: both directions' keys from the master secret.
pub fn tls12_keys(
    suite: Suite,
    master_secret: &[u8],
    client_random: &[u8],
    server_random: &[u8],
) -> Option<(PacketKey, PacketKey)> {
    let key_len = suite.key_len();
    let iv_len = if suite.explicit_nonce() { 4 } else { 12 };
    let mut seed = server_random.to_vec();
    seed.extend_from_slice(client_random);
    let block = tls12_prf(
        suite.hash,
        master_secret,
        b"key expansion",
        &seed,
        2 * key_len + 2 * iv_len,
    );
    let (client_key, rest) = block.split_at(key_len);
    let (server_key, rest) = rest.split_at(key_len);
    let (client_iv, server_iv) = rest.split_at(iv_len);
    Some((
        PacketKey::new(suite, client_key, client_iv)?,
        PacketKey::new(suite, server_key, server_iv)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_records_cut_anywhere() {
        // Two records: 3 body bytes, then 16 406 (a full TLS 1.3 data record).
        let mut stream = vec![23, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3];
        stream.extend_from_slice(&16_406u16.to_be_bytes());
        stream.extend(std::iter::repeat_n(0, 16_406));
        for cut in [1, 4, 6, 7, 12, 100] {
            let mut t = RecordTally::default();
            for piece in stream.chunks(cut) {
                t.feed(piece);
            }
            assert_eq!((t.records, t.body_bytes), (2, 16_409), "cut {cut}");
            assert_eq!(t.header_bytes(), 10);
        }
    }

    #[test]
    fn splits_records_and_keeps_a_partial_one() {
        let stream = [22, 3, 1, 0, 2, 1, 2, 23, 3, 3, 0, 5, 9];
        let (records, used) = split_records(&stream);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].content_type, HANDSHAKE);
        assert_eq!(records[0].body, &[1, 2]);
        assert_eq!(used, 7);
    }

    #[test]
    fn handshake_messages_across_records() {
        let mut r = HandshakeReader::default();
        assert!(r.feed(&[2, 0, 0, 3, 7]).is_empty());
        let msgs = r.feed(&[8, 9, 20, 0, 0, 1, 5]);
        assert_eq!(msgs, vec![(2, vec![7, 8, 9]), (20, vec![5])]);
        assert_eq!(handshake_name(14), "ServerHelloDone");
    }

    /// RFC 8448 §3 (simple 1-RTT handshake): the server's handshake traffic
    /// secret and the key and IV derived from it.
    #[test]
    fn rfc8448_handshake_key() {
        let secret = super::super::hex::parse(
            "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
        )
        .unwrap();
        let key = hkdf_expand_label(Hash::Sha256, &secret, b"key", 16);
        let iv = hkdf_expand_label(Hash::Sha256, &secret, b"iv", 12);
        assert_eq!(
            key,
            super::super::hex::parse("3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc").unwrap()
        );
        assert_eq!(
            iv,
            super::super::hex::parse("5d 31 3e b2 67 12 76 ee 13 00 0b 30").unwrap()
        );
    }

    #[test]
    fn a_sealed_tls13_record_opens_and_reveals_its_type() {
        let suite = suite(0x1301).unwrap();
        let secret = [7u8; 32];
        let key = PacketKey::tls13(suite, &secret).unwrap();
        // Seal "hi" + type 22 + one byte of padding with record number 1.
        let mut inner = b"hi".to_vec();
        inner.extend_from_slice(&[HANDSHAKE, 0]);
        let len = (inner.len() + 16) as u16;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let sealing = aead::LessSafeKey::new(
            aead::UnboundKey::new(
                suite.aead,
                &hkdf_expand_label(Hash::Sha256, &secret, b"key", 16),
            )
            .unwrap(),
        );
        sealing
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(key.nonce(1)),
                aead::Aad::from(&header),
                &mut inner,
            )
            .unwrap();
        let record = Record {
            content_type: APPLICATION_DATA,
            version: 0x0303,
            header,
            body: &inner,
        };
        let mut dec = RecordDecryptor::default();
        dec.push(PacketKey::tls13(suite, &[1u8; 32]).unwrap(), "handshake");
        dec.push(PacketKey::tls13(suite, &secret).unwrap(), "application");
        // Record number 0 of the second key does not fit (it was sealed as 1).
        assert!(dec.open(&record).is_none());
        let mut dec2 = RecordDecryptor::default();
        dec2.push(PacketKey::tls13(suite, &secret).unwrap(), "application");
        dec2.keys[0].1 = 1;
        let (kind, plain, epoch) = dec2.open(&record).unwrap();
        assert_eq!(
            (kind, plain.as_slice(), epoch),
            (HANDSHAKE, &b"hi"[..], "application")
        );
    }

    #[test]
    fn tls12_prf_vector() {
        // The widely used TLS 1.2 PRF (SHA-256) test vector.
        let secret =
            super::super::hex::parse("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35").unwrap();
        let seed =
            super::super::hex::parse("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c").unwrap();
        let out = tls12_prf(Hash::Sha256, &secret, b"test label", &seed, 16);
        assert_eq!(
            out,
            super::super::hex::parse("e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53").unwrap()
        );
    }
}
