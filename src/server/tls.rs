//! The TLS echo server's handshake: a [`StreamSetup`] that turns an accepted
//! TCP connection into a TLS stream, within `--handshake-timeout`.
//!
//! tokio-rustls's acceptor cannot hand out 0-RTT early data, so this file
//! drives `rustls::ServerConnection` itself ([`ServerTlsStream`]): a small
//! loop of "read TLS records from TCP → `process_new_packets` → write what
//! rustls wants to send". Early data the client sent with its ClientHello is
//! given to the echo session at once, and its answer leaves right behind the
//! server's first flight ("0.5-RTT data", `send_half_rtt_data`), before the
//! client's Finished arrives: that is what makes a 0-RTT round trip cost no
//! handshake round trip at all.

use super::{ServerContext, StreamSetup};
use crate::transport::tls::version_name;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// TLS over an accepted TCP connection.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<rustls::ServerConfig>,
    pub ctx: Arc<ServerContext>,
}

impl StreamSetup for TlsSetup {
    type Stream = ServerTlsStream;

    fn name(&self) -> &'static str {
        "tls"
    }

    fn refuse(&self, tcp: std::net::TcpStream, _refusal: &super::limits::Refusal) {
        super::limits::refuse_tls(&tcp);
    }

    async fn setup(&self, tcp: TcpStream) -> anyhow::Result<ServerTlsStream> {
        let ctx = &self.ctx;
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let conn = rustls::ServerConnection::new(self.config.clone())?;
        let mut stream = ServerTlsStream::new(tcp, conn);
        let limit = ctx.config.handshake_timeout;
        let done =
            tokio::time::timeout(limit, std::future::poll_fn(|cx| stream.poll_handshake(cx))).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                ctx.stats.tls.fail();
                anyhow::bail!("TLS handshake failed: {}", explain_server_error(&e));
            }
            Err(_) => {
                ctx.stats.tls.fail();
                anyhow::bail!(
                    "TLS handshake not finished within {} (--handshake-timeout)",
                    crate::units::format_duration(limit)
                );
            }
        }
        let conn = &stream.conn;
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let early = stream.early_accepted;
        ctx.stats.tls.record(resumed, early);
        ctx.log(format_args!(
            "tls {peer}: {}, {}, {}, ALPN {}{}{}",
            conn.protocol_version()
                .map(version_name)
                .unwrap_or_else(|| "?".into()),
            conn.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "?".into()),
            conn.negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
                .unwrap_or_else(|| "no key exchange".into()),
            conn.alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_else(|| "none".into()),
            if resumed { ", resumed" } else { "" },
            if early {
                format!(", early data accepted ({} bytes)", stream.early.len())
            } else {
                String::new()
            }
        ));
        Ok(stream)
    }
}

/// Says what a failed handshake means, for the server's log.
fn explain_server_error(e: &std::io::Error) -> String {
    use rustls::Error;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidMessage(m)) => {
            format!("the client did not speak TLS ({m:?}): plain text to a TLS port?")
        }
        Some(Error::NoApplicationProtocol) => {
            "the client offered only ALPN protocols we do not speak (we speak proto-echo)".into()
        }
        Some(Error::PeerIncompatible(p)) => format!("incompatible client: {p:?}"),
        Some(other) => other.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during the handshake".into()
        }
        None => e.to_string(),
    }
}

/// The server side of a TLS connection over TCP, with 0-RTT support.
pub struct ServerTlsStream {
    io: TcpStream,
    pub conn: rustls::ServerConnection,
    /// Early data taken from rustls and not yet read by the session.
    early: Vec<u8>,
    /// The server accepted the client's early data.
    pub early_accepted: bool,
    sent_close: bool,
}

impl ServerTlsStream {
    pub fn new(io: TcpStream, conn: rustls::ServerConnection) -> ServerTlsStream {
        ServerTlsStream {
            io,
            conn,
            early: Vec::new(),
            early_accepted: false,
            sent_close: false,
        }
    }

    /// Completes when the handshake is done, or earlier when early data
    /// has arrived (the rest of the handshake then runs inside reads).
    pub fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            // Send what rustls has queued first (ServerHello ... Finished,
            // tickets, alerts).
            ready!(self.flush_tls(cx))?;
            if !self.conn.is_handshaking() || !self.early.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.read_io(cx))? == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads TLS records from TCP into rustls and processes them. Ok(0) is
    /// TCP end of file.
    fn read_io(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut reader = SyncRead {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut reader) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert telling the client why: try to send it.
            let _ = self.flush_tls(cx);
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
        }
        if let Some(mut early) = self.conn.early_data() {
            self.early_accepted = true;
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = early.read(&mut chunk) {
                self.early.extend_from_slice(&chunk[..n]);
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Writes everything rustls has queued to TCP.
    fn flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.conn.wants_write() {
            let mut writer = SyncWrite {
                io: &mut self.io,
                cx,
            };
            match self.conn.write_tls(&mut writer) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.early.is_empty() {
                let n = buf.remaining().min(this.early.len());
                buf.put_slice(&this.early[..n]);
                this.early.drain(..n);
                return Poll::Ready(Ok(()));
            }
            match this.conn.reader().read(buf.initialize_unfilled()) {
                // Ok(0) is a clean end: the client sent close_notify.
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // UnexpectedEof: TCP closed without close_notify (a
                // truncation attack, or a client that vanished).
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Poll::Ready(Err(e)) = this.flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.read_io(cx))?;
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let n = this.conn.writer().write(buf)?;
            let flushed = this.flush_tls(cx);
            if n > 0 {
                if let Poll::Ready(Err(e)) = flushed {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(n));
            }
            // rustls's buffer is full: it must drain first. During the
            // handshake that needs the client's next flight.
            ready!(flushed)?;
            if this.conn.is_handshaking() {
                if ready!(this.read_io(cx))? == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                }
            } else {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.conn.writer().flush()?;
        ready!(this.flush_tls(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.sent_close {
            this.conn.send_close_notify();
            this.sent_close = true;
        }
        ready!(this.flush_tls(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// `std::io::Read` over an `AsyncRead` for one poll: Pending → WouldBlock.
struct SyncRead<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SyncRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// `std::io::Write` over an `AsyncWrite` for one poll: Pending → WouldBlock.
struct SyncWrite<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SyncWrite<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
