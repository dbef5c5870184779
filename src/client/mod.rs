//! Echo clients: send a message, wait for its uppercase reply.
//!
//! * [`StreamClient`]: any byte stream (TCP, TLS, QUIC), text lines or frames.
//! * [`DatagramClient`]: UDP, one datagram per message.
//! * [`SctpClient`]: SCTP, one user message per message, over N streams.
//! * [`interactive`]: stdin → server → stdout, like `nc`.

pub mod interactive;
pub mod resume;

use crate::units::monotonic_nanos;
use crate::wire::{Frame, FrameCodec, FrameCodecError, FrameType};
use anyhow::{bail, Context};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// A request/response client over one byte stream.
pub struct StreamClient<S> {
    stream: S,
    input: BytesMut,
    next_id: u32,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamClient<S> {
    pub fn new(stream: S, timeout: Duration) -> Self {
        StreamClient {
            stream,
            input: BytesMut::with_capacity(16 * 1024),
            next_id: 1,
            timeout,
        }
    }

    /// Sends `line` plus `\n` and returns the reply line without its `\n`.
    pub async fn exchange_line(&mut self, line: &[u8]) -> anyhow::Result<Vec<u8>> {
        if line.contains(&b'\n') {
            bail!("a line message cannot contain a newline: pass each line with its own -m");
        }
        let mut request = Vec::with_capacity(line.len() + 1);
        request.extend_from_slice(line);
        request.push(b'\n');
        self.stream.write_all(&request).await.context("sending")?;
        // TLS buffers records (and 0-RTT early data waits) until a flush.
        self.stream.flush().await.context("sending")?;
        self.read_line().await
    }

    /// Reads one `\n`-terminated line (the terminator is not returned).
    pub async fn read_line(&mut self) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let mut line = self.input.split_to(pos + 1).to_vec();
                line.pop();
                return Ok(line);
            }
            self.fill(deadline).await?;
        }
    }

    /// Sends one request frame and waits for its response frame. An error
    /// frame from the server becomes an error carrying its message.
    pub async fn exchange_frame(&mut self, payload: &[u8]) -> anyhow::Result<Frame> {
        let request = Frame::request(self.next_id, monotonic_nanos(), payload.to_vec());
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = request.to_bytes()?;
        self.stream.write_all(&bytes).await.context("sending")?;
        self.stream.flush().await.context("sending")?;
        let reply = self.read_frame().await?;
        check_reply(&request, reply)
    }

    /// Reads one frame.
    pub async fn read_frame(&mut self) -> anyhow::Result<Frame> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match FrameCodec.decode(&mut self.input) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => self.fill(deadline).await?,
                Err(FrameCodecError::Frame(e)) => bail!("the server sent a malformed frame: {e}"),
                Err(FrameCodecError::Io(e)) => return Err(e.into()),
            }
        }
    }

    async fn fill(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        self.input.reserve(8 * 1024);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
            Ok(Ok(0)) => bail!("the server closed the connection before replying"),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("receiving")),
            Err(_) => bail!(
                "no reply within {} (--timeout waits longer)",
                crate::units::format_duration(self.timeout)
            ),
        }
    }

    /// Half-closes (sends FIN / close_notify) and gives the stream back.
    pub async fn finish(mut self) -> S {
        let _ = self.stream.shutdown().await;
        self.stream
    }

    /// Half-closes, then reads (and discards) until the server closes its
    /// side or `limit` passes. Closing after that never cuts the server's
    /// last bytes short, and it lets late handshake messages arrive: TLS 1.3
    /// and QUIC session tickets follow the handshake, so a client that
    /// closes right after its echo may never get a ticket for next time.
    pub async fn finish_and_drain(self, limit: Duration) -> S {
        let mut stream = self.finish().await;
        let _ = tokio::time::timeout(limit, async {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        stream
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// Checks that `reply` answers `request`; error frames become errors.
pub fn check_reply(request: &Frame, reply: Frame) -> anyhow::Result<Frame> {
    match reply.frame_type {
        FrameType::Error => bail!(
            "the server answered with an error frame: {}",
            String::from_utf8_lossy(&reply.payload)
        ),
        FrameType::Request => bail!("the server sent a request frame instead of a response"),
        FrameType::Response if reply.id != request.id => bail!(
            "reply id {} does not match request id {}",
            reply.id,
            request.id
        ),
        FrameType::Response if reply.timestamp != request.timestamp => {
            bail!("the server changed the timestamp: it must echo it unchanged")
        }
        FrameType::Response => Ok(reply),
    }
}

/// A client whose every message is one unit on the wire (a UDP datagram,
/// an SCTP user message): no newline needed, boundaries kept.
pub trait MessageClient {
    /// Sends one message and returns the one that comes back.
    fn exchange(
        &mut self,
        message: &[u8],
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<u8>>>;
    /// Sends one request frame and returns its checked response frame.
    fn exchange_frame(
        &mut self,
        payload: &[u8],
    ) -> impl std::future::Future<Output = anyhow::Result<Frame>>;
}

/// A request frame with the next id and the current time; checks the reply.
struct FrameIds(u32);

impl FrameIds {
    fn next(&mut self, payload: &[u8]) -> Frame {
        let request = Frame::request(self.0, monotonic_nanos(), payload.to_vec());
        self.0 = self.0.wrapping_add(1);
        request
    }
}

fn check_datagram_reply(request: &Frame, reply: &[u8]) -> anyhow::Result<Frame> {
    let reply = crate::wire::frame::decode_datagram(reply)
        .map_err(|e| anyhow::anyhow!("the server sent a malformed frame: {e}"))?;
    check_reply(request, reply)
}

/// SCTP: each message is one SCTP user message; messages go round-robin
/// over the association's streams, each reply is read from its stream.
pub struct SctpClient {
    association: crate::transport::sctp::ConnectedSctp,
    streams: Vec<crate::transport::sctp::SctpStream>,
    next_stream: usize,
    ids: FrameIds,
    timeout: Duration,
    /// The stream the last exchange used.
    pub last_stream: u16,
}

impl SctpClient {
    /// Uses streams `0..streams` of `association`, ordered or unordered.
    pub fn new(
        association: crate::transport::sctp::ConnectedSctp,
        streams: u16,
        unordered: bool,
        timeout: Duration,
    ) -> SctpClient {
        let streams = (0..streams.max(1))
            .map(|id| association.stream(id, unordered))
            .collect();
        SctpClient {
            association,
            streams,
            next_stream: 0,
            ids: FrameIds(1),
            timeout,
            last_stream: 0,
        }
    }

    pub fn association(&self) -> &crate::transport::sctp::ConnectedSctp {
        &self.association
    }

    /// Closes the association gracefully (SHUTDOWN), waiting at most `limit`.
    pub async fn close(self, limit: Duration) {
        drop(self.streams);
        self.association.close(limit).await;
    }
}

impl MessageClient for SctpClient {
    async fn exchange(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let i = self.next_stream % self.streams.len();
        self.next_stream = self.next_stream.wrapping_add(1);
        let stream = &mut self.streams[i];
        self.last_stream = stream.id;
        Ok(stream.exchange(message, self.timeout).await?.to_vec())
    }

    async fn exchange_frame(&mut self, payload: &[u8]) -> anyhow::Result<Frame> {
        let request = self.ids.next(payload);
        let reply = self.exchange(&request.to_bytes()?).await?;
        check_datagram_reply(&request, &reply)
    }
}

/// A request/response client over a connected UDP socket.
pub struct DatagramClient {
    socket: tokio::net::UdpSocket,
    ids: FrameIds,
    timeout: Duration,
    buf: Vec<u8>,
}

impl DatagramClient {
    pub fn new(socket: tokio::net::UdpSocket, timeout: Duration) -> Self {
        DatagramClient {
            socket,
            ids: FrameIds(1),
            timeout,
            buf: vec![0u8; crate::wire::limits::MAX_UDP_PAYLOAD + 1],
        }
    }

    /// Sends one datagram and waits for one back. UDP promises nothing: if
    /// either datagram is lost, this times out.
    pub async fn exchange(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.socket
            .send(message)
            .await
            .map_err(|e| self.explain(e))?;
        self.receive().await
    }

    pub async fn exchange_frame(&mut self, payload: &[u8]) -> anyhow::Result<Frame> {
        let request = self.ids.next(payload);
        let reply = self.exchange(&request.to_bytes()?).await?;
        check_datagram_reply(&request, &reply)
    }

    async fn receive(&mut self) -> anyhow::Result<Vec<u8>> {
        match tokio::time::timeout(self.timeout, self.socket.recv(&mut self.buf)).await {
            Ok(Ok(n)) => Ok(self.buf[..n].to_vec()),
            Ok(Err(e)) => Err(self.explain(e)),
            Err(_) => bail!(
                "no reply within {}: UDP does not retransmit, so a lost datagram (or no server) looks like this; is 'proto serve udp' running on {}?",
                crate::units::format_duration(self.timeout),
                self.peer()
            ),
        }
    }

    fn peer(&self) -> String {
        self.socket
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "the server".into())
    }

    fn explain(&self, e: std::io::Error) -> anyhow::Error {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            // The kernel got an ICMP "port unreachable" for our datagram.
            anyhow::anyhow!(
                "connection refused (ICMP port unreachable): is 'proto serve udp' running on {}?",
                self.peer()
            )
        } else {
            anyhow::Error::new(e).context("UDP exchange")
        }
    }

    pub fn socket(&self) -> &tokio::net::UdpSocket {
        &self.socket
    }
}

impl MessageClient for DatagramClient {
    async fn exchange(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        DatagramClient::exchange(self, message).await
    }
    async fn exchange_frame(&mut self, payload: &[u8]) -> anyhow::Result<Frame> {
        DatagramClient::exchange_frame(self, payload).await
    }
}
