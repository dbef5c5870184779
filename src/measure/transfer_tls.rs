//! The same bulk transfer over TLS (rustls) on the kernel's TCP.
//!
//! TLS changes nothing about congestion control: it is a byte stream on top
//! of one TCP connection, so the sender's state is read from the very same
//! `TCP_INFO` as `proto transfer tcp`. What TLS adds is bytes. It cuts the
//! application's stream into records of at most 16 384 bytes and protects
//! each one:
//!
//! ```text
//!   ┌──────────────┬───────────────────────────┬───────────┬──────────────┐
//!   │ header 5 B   │ encrypted data ≤ 16 384 B │ type 1 B  │ AEAD tag 16 B│
//!   │ type, version│                           │ (TLS 1.3) │              │
//!   │ length       │                           │           │              │
//!   └──────────────┴───────────────────────────┴───────────┴──────────────┘
//! ```
//!
//! so a full record costs 22 bytes on 16 384 (1.3 ‰), on top of TCP's and
//! IP's headers on each of the ~12 segments that carry it. The client's
//! bytes are counted as rustls writes them into the socket (records parsed
//! from the written stream), not derived from theory.

use super::transfer::{run_stream, BulkSender, StreamEnds, TlsSent, TransferConfig, TransferRun};
use crate::lab::Lab;
use crate::transport::certs::CertDir;
use crate::transport::tls;
use crate::wire::tls::RecordTally;
use anyhow::Context;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a handshake may take across the lab.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);

/// Run one TLS transfer across `lab`, client → server, sampling the
/// client's TCP_INFO under rustls.
pub fn run_tls(lab: &Lab, config: &TransferConfig, certs: &CertDir) -> anyhow::Result<TransferRun> {
    let server_ip = lab.server_ip().to_string();
    let identity = certs.load_or_create(std::slice::from_ref(&server_ip))?;
    let trust = match &identity.ca {
        Some(ca) => tls::Trust::Ca {
            cert: ca.clone(),
            path: certs.ca_cert(),
        },
        None => anyhow::bail!("the certificate directory has no CA"),
    };
    let server_config = Arc::new(tls::server_config(&identity, None, false)?);
    let client_config = Arc::new(tls::client_config(&trust, None, false)?);
    let name = tls::server_name(&server_ip)?;
    let ends = StreamEnds {
        accept: Box::new(move |sock, stop| {
            let conn = rustls::ServerConnection::new(server_config).map_err(io::Error::other)?;
            let mut receiver = TlsReceiver { conn, sock };
            receiver.handshake(stop)?;
            Ok(Box::new(receiver))
        }),
        connect: Box::new(move |sock| {
            let conn =
                rustls::ClientConnection::new(client_config, name).map_err(io::Error::other)?;
            let mut sender = TlsSender {
                conn,
                sock: CountingSocket {
                    sock,
                    bytes: 0,
                    records: RecordTally::default(),
                },
                handshake_bytes: 0,
                plaintext_bytes: 0,
            };
            sender.handshake()?;
            Ok(Box::new(sender))
        }),
    };
    run_stream(lab, config, ends).context("the TLS transfer")
}

/// The client's TCP socket, counting every byte (and record) TLS writes.
struct CountingSocket {
    sock: TcpStream,
    bytes: u64,
    records: RecordTally,
}

impl CountingSocket {
    fn count(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        self.bytes += n as u64;
        for b in bufs {
            let take = n.min(b.len());
            self.records.feed(&b[..take]);
            n -= take;
            if n == 0 {
                break;
            }
        }
    }
}

impl Write for CountingSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.sock.write(buf)?;
        self.count(&[IoSlice::new(buf)], n);
        Ok(n)
    }
    /// rustls hands over its queued records as one vectored write.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.sock.write_vectored(bufs)?;
        self.count(bufs, n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Read for CountingSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

/// The client: encrypts the zeros and writes the records. It never reads
/// after the handshake (the server's session tickets wait in its socket).
struct TlsSender {
    conn: rustls::ClientConnection,
    sock: CountingSocket,
    handshake_bytes: u64,
    plaintext_bytes: u64,
}

impl TlsSender {
    fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.conn.complete_io(&mut self.sock)?;
        }
        self.flush_records()?;
        // From here on every record carries application data.
        self.handshake_bytes = self.sock.bytes;
        self.sock.records = RecordTally::default();
        Ok(())
    }

    fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

impl BulkSender for TlsSender {
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            self.plaintext_bytes += n as u64;
            data = &data[n..];
            self.flush_records()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_records()?;
        self.sock.sock.shutdown(std::net::Shutdown::Write)
    }

    fn tls_sent(&self) -> Option<TlsSent> {
        let records = &self.sock.records;
        Some(TlsSent {
            version: self
                .conn
                .protocol_version()
                .map_or("unknown".into(), tls::version_name),
            cipher_suite: self
                .conn
                .negotiated_cipher_suite()
                .map_or("unknown".into(), |s| format!("{:?}", s.suite())),
            handshake_bytes: self.handshake_bytes,
            records: records.records,
            record_header_bytes: records.header_bytes(),
            record_body_bytes: records.body_bytes,
            plaintext_bytes: self.plaintext_bytes,
        })
    }
}

/// The server: decrypts what arrives; reads like a TCP stream with a read
/// timeout (a timeout is an error of kind WouldBlock/TimedOut, and the
/// next read goes on where it left off).
struct TlsReceiver {
    conn: rustls::ServerConnection,
    sock: TcpStream,
}

impl TlsReceiver {
    fn handshake(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let begun = Instant::now();
        while self.conn.is_handshaking() {
            match self.conn.complete_io(&mut self.sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) && !stop.load(Ordering::Acquire)
                        && begun.elapsed() < HANDSHAKE_LIMIT => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsReceiver {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext waiting: take more records from the socket.
            let n = self.conn.read_tls(&mut self.sock)?;
            self.conn.process_new_packets().map_err(io::Error::other)?;
            // The server's session tickets (after the client's Finished).
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.sock)?;
            }
            if n == 0 {
                // The TCP stream ended: a clean end if close_notify came.
                return match self.conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
    }
}
