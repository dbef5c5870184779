//! The SCTP echo (RFC 9260 in userspace, over UDP port 9899 as RFC 6951
//! says): every user message comes back uppercased as one message, on the
//! stream it came on, ordered or unordered as it came.
//!
//! # No state before a valid cookie (RFC 9260 §5.1.3)
//!
//! An INIT gets an INIT-ACK and is forgotten. Everything the server will
//! need later — both sides' tags, first TSNs, windows and stream counts —
//! travels in the **State Cookie** inside the INIT-ACK, signed with a key
//! only this server knows (HMAC-SHA256) and stamped with its creation time:
//!
//! ```text
//!  0        1                9                         27       29
//! +--------+----------------+-------------------------+--------+----------------+
//! | ver=1  | created (ms,   | peer address (IPv6 or   | len L  | our INIT chunk |
//! |        | u64 BE)        | v4-mapped) + UDP port   | (u16)  | (L bytes)      |
//! +--------+----------------+-------------------------+--------+----------------+
//! | len R (u16) | the client's INIT chunk (R bytes) | HMAC-SHA256 of all before (32) |
//! +-------------+-----------------------------------+--------------------------------+
//! ```
//!
//! Only a COOKIE-ECHO whose cookie verifies (signature, age within the
//! lifetime, the packet's verification tag equal to our tag inside, sent
//! from the address it was issued to) creates an association. A client
//! that spoofs its source address never sees the INIT-ACK, so it never has
//! a cookie to echo: a flood of INITs costs the server CPU for one HMAC per
//! INIT, and no memory at all. TCP gets the same property only with SYN
//! cookies, which squeeze a little state into the 32-bit sequence number.

use super::ServerContext;
use crate::transport::sctp::{
    self as sctp, init_for_stack, local_init, pump, snap_association, snap_only_endpoint,
    transport_config, write_message, Output,
};
use crate::wire::sctp::{self as wire, cause, param, ChunkType, Init, OwnedChunk, Packet};
use bytes::Bytes;
use ring::hmac;
use sctp_proto::{Association, AssociationHandle, DatagramEvent, Endpoint};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most associations one server keeps; a valid cookie beyond that is
/// answered with ABORT ("Out of Resource").
pub const MAX_ASSOCIATIONS: usize = 1024;
/// How long a State Cookie stays valid (RFC 9260 §16 "Valid.Cookie.Life": 60 s).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(60);
const COOKIE_VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// The "Out of Resource" error cause (RFC 9260 §3.3.10.4).
const CAUSE_OUT_OF_RESOURCE: u16 = 4;

/// Signs and checks State Cookies. The key is random per server run, so a
/// cookie is worth nothing to another server or after a restart.
pub struct CookieJar {
    key: hmac::Key,
    epoch: Instant,
    pub lifetime: Duration,
}

/// What a verified cookie gives back: both INIT chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCookie {
    pub local_init: Bytes,
    pub remote_init: Bytes,
}

/// Why a COOKIE-ECHO was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("malformed cookie ({0})")]
    Malformed(&'static str),
    #[error("the signature does not verify: forged or altered cookie")]
    Forged,
    #[error("stale cookie: {age_ms} ms old, lifetime {lifetime_ms} ms")]
    Stale {
        age_ms: u64,
        lifetime_ms: u64,
        /// The peer's tag, for the Stale Cookie ERROR.
        peer_tag: u32,
    },
    #[error("the packet's verification tag is not the tag inside the cookie")]
    WrongTag,
    #[error("echoed from {from}, but issued to {issued_to}")]
    WrongPeer {
        from: SocketAddr,
        issued_to: SocketAddr,
    },
}

fn peer_bytes(peer: SocketAddr) -> [u8; 18] {
    let ip = match peer.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 18];
    out[..16].copy_from_slice(&ip.octets());
    out[16..].copy_from_slice(&peer.port().to_be_bytes());
    out
}

fn tag_of(init_chunk: &[u8]) -> u32 {
    init_chunk
        .get(4..8)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

impl CookieJar {
    /// A jar with a fresh random key; `epoch` is time zero for cookie ages.
    pub fn new(epoch: Instant, lifetime: Duration) -> CookieJar {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &sctp::rand_u32().to_be_bytes()));
        CookieJar {
            key,
            epoch,
            lifetime,
        }
    }

    /// A signed cookie holding both INIT chunks, issued to `peer` at `now`.
    pub fn bake(
        &self,
        now: Instant,
        peer: SocketAddr,
        local_init: &[u8],
        remote_init: &[u8],
    ) -> Vec<u8> {
        let created = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let mut c = Vec::with_capacity(29 + local_init.len() + 2 + remote_init.len() + MAC_LEN);
        c.push(COOKIE_VERSION);
        c.extend_from_slice(&created.to_be_bytes());
        c.extend_from_slice(&peer_bytes(peer));
        c.extend_from_slice(&(local_init.len() as u16).to_be_bytes());
        c.extend_from_slice(local_init);
        c.extend_from_slice(&(remote_init.len() as u16).to_be_bytes());
        c.extend_from_slice(remote_init);
        let mac = hmac::sign(&self.key, &c);
        c.extend_from_slice(mac.as_ref());
        c
    }

    /// Checks a cookie from a COOKIE-ECHO that arrived at `now` from `peer`
    /// in a packet with verification tag `tag`.
    pub fn open(
        &self,
        now: Instant,
        peer: SocketAddr,
        tag: u32,
        cookie: &[u8],
    ) -> Result<OpenedCookie, CookieError> {
        if cookie.len() < 31 + MAC_LEN {
            return Err(CookieError::Malformed("too short"));
        }
        let (signed, mac) = cookie.split_at(cookie.len() - MAC_LEN);
        // Constant-time comparison (ring): no timing hint for a forger.
        hmac::verify(&self.key, signed, mac).map_err(|_| CookieError::Forged)?;
        // Signed by us, so the layout is ours; still, check every length.
        if signed[0] != COOKIE_VERSION {
            return Err(CookieError::Malformed("unknown version"));
        }
        let created = u64::from_be_bytes(
            signed[1..9]
                .try_into()
                .map_err(|_| CookieError::Malformed("time"))?,
        );
        let local_len = u16::from_be_bytes([signed[27], signed[28]]) as usize;
        let local_end = 29 + local_len;
        if signed.len() < local_end + 2 {
            return Err(CookieError::Malformed("lengths"));
        }
        let local_init = &signed[29..local_end];
        let remote_len = u16::from_be_bytes([signed[local_end], signed[local_end + 1]]) as usize;
        let remote_init = signed
            .get(local_end + 2..local_end + 2 + remote_len)
            .ok_or(CookieError::Malformed("lengths"))?;
        let age_ms =
            (now.saturating_duration_since(self.epoch).as_millis() as u64).saturating_sub(created);
        if age_ms > self.lifetime.as_millis() as u64 {
            return Err(CookieError::Stale {
                age_ms,
                lifetime_ms: self.lifetime.as_millis() as u64,
                peer_tag: tag_of(remote_init),
            });
        }
        if tag != tag_of(local_init) {
            return Err(CookieError::WrongTag);
        }
        if signed[9..27] != peer_bytes(peer) {
            let ip: [u8; 16] = signed[9..25]
                .try_into()
                .map_err(|_| CookieError::Malformed("peer"))?;
            let ip = std::net::Ipv6Addr::from(ip);
            let ip = ip
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip));
            return Err(CookieError::WrongPeer {
                from: peer,
                issued_to: SocketAddr::new(ip, u16::from_be_bytes([signed[25], signed[26]])),
            });
        }
        Ok(OpenedCookie {
            local_init: Bytes::copy_from_slice(local_init),
            remote_init: Bytes::copy_from_slice(remote_init),
        })
    }
}

/// One association the server holds (after a valid COOKIE-ECHO).
struct Held {
    /// A stack endpoint of its own: proto routes packets by tag itself.
    endpoint: Endpoint,
    handle: AssociationHandle,
    association: Association,
    peer: SocketAddr,
    local_port: u16,
    remote_port: u16,
    peer_tag: u32,
    /// Streams whose last DATA had the U flag: the echo goes back unordered.
    unordered: HashSet<u16>,
    started: Instant,
    messages: u64,
    /// The stack was asked to shut down (server stopping).
    closing: bool,
    /// A SHUTDOWN exchange was seen on the wire (a graceful end).
    shutdown_seen: bool,
    /// The peer sent ABORT.
    aborted: bool,
    /// When the peer last sent a packet (for the idle timeout).
    last_heard: Instant,
    /// This association's slot in the server's connection limits.
    _permit: super::limits::ConnectionPermit,
}

/// What the SCTP server counts (on top of the shared [`super::ServerStats`]).
#[derive(Debug, Default, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct SctpCounters {
    /// INITs answered with an INIT-ACK (and then forgotten).
    pub inits_answered: u64,
    /// COOKIE-ECHOs whose cookie verified: associations created.
    pub cookies_accepted: u64,
    /// COOKIE-ECHOs refused: forged, stale, wrong tag or wrong address.
    pub cookies_refused: u64,
    /// Packets that were not SCTP, failed their checksum, or belonged to no
    /// association (wrong verification tag).
    pub packets_dropped: u64,
    /// Associations held right now.
    pub associations_now: u64,
}

/// The sans-IO SCTP server: datagrams and time in, datagrams out. The
/// socket loop ([`serve`]) and the tests drive it.
pub struct SctpServer {
    jar: CookieJar,
    held: HashMap<u32, Held>,
    pub counters: SctpCounters,
    /// Datagrams to send: (destination, bytes).
    pub outgoing: Vec<(SocketAddr, Bytes)>,
    ctx: Arc<ServerContext>,
    reply: Vec<u8>,
}

impl SctpServer {
    pub fn new(ctx: Arc<ServerContext>, now: Instant) -> SctpServer {
        SctpServer {
            jar: CookieJar::new(now, COOKIE_LIFETIME),
            held: HashMap::new(),
            counters: SctpCounters::default(),
            outgoing: Vec::new(),
            ctx,
            reply: Vec::new(),
        }
    }

    /// Associations held now.
    pub fn associations(&self) -> usize {
        self.held.len()
    }

    /// The earliest time a timer of some association fires.
    pub fn next_timeout(&self) -> Option<Instant> {
        let idle = self.ctx.config.idle_timeout;
        self.held
            .values()
            .flat_map(|h| [h.association.poll_timeout(), Some(h.last_heard + idle)])
            .flatten()
            .min()
    }

    /// One UDP datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.ctx.stats.datagrams.fetch_add(1, Relaxed);
        self.ctx
            .stats
            .bytes_in
            .fetch_add(datagram.len() as u64, Relaxed);
        let packet = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(_) => {
                // Not SCTP, truncated, or a bad CRC32c: dropped silently
                // (RFC 9260 §6.8), and it costs nothing.
                self.dropped();
                return;
            }
        };
        let tag = packet.header.verification_tag;
        let first = *packet.first();
        if tag == 0 {
            if first.kind == ChunkType::INIT && packet.chunks.len() == 1 {
                self.answer_init(now, peer, &packet);
            } else {
                self.dropped(); // only a lone INIT may carry tag 0 (§8.5.1)
            }
            return;
        }
        if first.kind == ChunkType::COOKIE_ECHO {
            self.cookie_echo(now, peer, &packet);
            return;
        }
        if self.held.contains_key(&tag) {
            self.feed(now, tag, peer, Bytes::copy_from_slice(datagram), &packet);
        } else {
            // Out of the blue (§8.4): no association has this tag.
            self.dropped();
        }
    }

    fn dropped(&mut self) {
        self.counters.packets_dropped += 1;
        self.ctx.stats.sctp_packets_dropped.fetch_add(1, Relaxed);
    }

    /// INIT → INIT-ACK with a signed cookie, keeping nothing.
    fn answer_init(&mut self, now: Instant, peer: SocketAddr, packet: &Packet<'_>) {
        let Ok(init) = Init::parse(packet.first()) else {
            self.dropped();
            return;
        };
        if init.initiate_tag == 0 || init.outbound_streams == 0 || init.inbound_streams == 0 {
            // RFC 9260 §3.3.2: such an INIT is invalid; ABORT it.
            self.abort(
                peer,
                packet.header.dst_port,
                packet.header.src_port,
                init.initiate_tag,
                cause::PROTOCOL_VIOLATION,
            );
            return;
        }
        let (our_port, their_port) = (packet.header.dst_port, packet.header.src_port);
        let config = transport_config(our_port, their_port);
        let Ok((token, ours)) = local_init(&config) else {
            self.dropped();
            return;
        };
        let remote = init_for_stack(&init);
        let cookie = self.jar.bake(now, peer, &token, &remote);
        // The INIT-ACK is our INIT chunk's value plus the cookie.
        let mut value = ours.value;
        // The stack leaves its last parameter unpadded (the chunk's padding
        // covers it); another parameter follows now, so pad it here.
        value.resize(wire::padded(value.len()), 0);
        wire::push_param(&mut value, param::STATE_COOKIE, &cookie);
        // ...and the last parameter's padding is the chunk's (RFC 9260
        // §3.2), not counted in the chunk length: `encode` adds it back.
        value.truncate(value.len() - (wire::padded(cookie.len()) - cookie.len()));
        let ack = wire::encode(
            our_port,
            their_port,
            init.initiate_tag,
            &[OwnedChunk::new(ChunkType::INIT_ACK, 0, value)],
        );
        self.counters.inits_answered += 1;
        self.ctx.stats.sctp_inits_answered.fetch_add(1, Relaxed);
        self.send(peer, Bytes::from(ack));
    }

    /// COOKIE-ECHO: verify, create the association (or find it again when
    /// the COOKIE-ACK was lost), answer COOKIE-ACK, pass on bundled chunks.
    fn cookie_echo(&mut self, now: Instant, peer: SocketAddr, packet: &Packet<'_>) {
        let tag = packet.header.verification_tag;
        let (our_port, their_port) = (packet.header.dst_port, packet.header.src_port);
        if !self.held.contains_key(&tag) {
            let opened = match self.jar.open(now, peer, tag, packet.first().value) {
                Ok(o) => o,
                Err(e) => {
                    self.counters.cookies_refused += 1;
                    self.ctx.stats.sctp_cookies_refused.fetch_add(1, Relaxed);
                    self.ctx
                        .log(format_args!("sctp {peer}: COOKIE-ECHO refused: {e}"));
                    if let CookieError::Stale {
                        age_ms,
                        lifetime_ms,
                        peer_tag,
                    } = e
                    {
                        // §5.2.6: tell the peer how stale, in µs.
                        let staleness = ((age_ms - lifetime_ms) * 1000).min(u32::MAX as u64) as u32;
                        let ports = (our_port, their_port);
                        let cause = (cause::STALE_COOKIE, &staleness.to_be_bytes()[..]);
                        self.send_cause(peer, ports, peer_tag, ChunkType::ERROR, cause);
                    }
                    return;
                }
            };
            let peer_tag = tag_of(&opened.remote_init);
            if self.held.len() >= MAX_ASSOCIATIONS {
                self.ctx.log(format_args!(
                    "sctp {peer}: refused: {MAX_ASSOCIATIONS} associations already"
                ));
                self.abort(peer, our_port, their_port, peer_tag, CAUSE_OUT_OF_RESOURCE);
                return;
            }
            // The same per-address and total limits as every other service.
            let Ok(permit) = self.ctx.admit("sctp", peer) else {
                self.abort(peer, our_port, their_port, peer_tag, CAUSE_OUT_OF_RESOURCE);
                return;
            };
            let mut endpoint = snap_only_endpoint();
            let config = transport_config(our_port, their_port);
            let (handle, association) = match snap_association(
                &mut endpoint,
                config,
                opened.local_init,
                opened.remote_init,
                peer,
            ) {
                Ok(pair) => pair,
                Err(e) => {
                    self.counters.cookies_refused += 1;
                    self.ctx.stats.sctp_cookies_refused.fetch_add(1, Relaxed);
                    self.ctx.log(format_args!("sctp {peer}: {e:#}"));
                    self.abort(
                        peer,
                        our_port,
                        their_port,
                        peer_tag,
                        cause::PROTOCOL_VIOLATION,
                    );
                    return;
                }
            };
            self.counters.cookies_accepted += 1;
            self.ctx.stats.sctp_associations.fetch_add(1, Relaxed);
            self.ctx.stats.connections.fetch_add(1, Relaxed);
            self.ctx.log(format_args!(
                "sctp {peer}: association up (cookie verified; tags 0x{tag:08x}/0x{peer_tag:08x})"
            ));
            self.held.insert(
                tag,
                Held {
                    endpoint,
                    handle,
                    association,
                    peer,
                    local_port: our_port,
                    remote_port: their_port,
                    peer_tag,
                    unordered: HashSet::new(),
                    started: now,
                    messages: 0,
                    closing: false,
                    shutdown_seen: false,
                    aborted: false,
                    last_heard: now,
                    _permit: permit,
                },
            );
        }
        let Some(held) = self.held.get(&tag) else {
            return;
        };
        let cookie_ack = wire::encode(
            held.local_port,
            held.remote_port,
            held.peer_tag,
            &[OwnedChunk::new(ChunkType::COOKIE_ACK, 0, vec![])],
        );
        self.send(peer, Bytes::from(cookie_ack));
        // Chunks bundled after the COOKIE-ECHO (DATA) go to the stack.
        let rest: Vec<OwnedChunk> = packet.chunks[1..]
            .iter()
            .map(OwnedChunk::from_chunk)
            .collect();
        if rest.is_empty() {
            self.after_input(now, tag);
            return;
        }
        let bytes = wire::encode(packet.header.src_port, packet.header.dst_port, tag, &rest);
        if let Ok(repacked) = Packet::parse(&bytes) {
            self.feed(
                now,
                tag,
                peer,
                Bytes::clone(&Bytes::from(bytes.clone())),
                &repacked,
            );
        }
    }

    fn abort(&mut self, peer: SocketAddr, our_port: u16, their_port: u16, tag: u32, why: u16) {
        let ports = (our_port, their_port);
        self.send_cause(peer, ports, tag, ChunkType::ABORT, (why, &[]));
    }

    /// An ERROR or ABORT chunk with one error cause (type, value).
    fn send_cause(
        &mut self,
        peer: SocketAddr,
        (our_port, their_port): (u16, u16),
        tag: u32,
        kind: ChunkType,
        (cause, value): (u16, &[u8]),
    ) {
        let mut causes = Vec::new();
        wire::push_param(&mut causes, cause, value);
        let packet = wire::encode(
            our_port,
            their_port,
            tag,
            &[OwnedChunk::new(kind, 0, causes)],
        );
        self.send(peer, Bytes::from(packet));
    }

    fn send(&mut self, to: SocketAddr, bytes: Bytes) {
        self.ctx
            .stats
            .bytes_out
            .fetch_add(bytes.len() as u64, Relaxed);
        self.outgoing.push((to, bytes));
    }

    /// A packet for an association we hold.
    fn feed(
        &mut self,
        now: Instant,
        tag: u32,
        peer: SocketAddr,
        bytes: Bytes,
        packet: &Packet<'_>,
    ) {
        let Some(held) = self.held.get_mut(&tag) else {
            return;
        };
        held.last_heard = now;
        // Remember per stream whether the peer sends unordered, to answer
        // the same way (the stack does not tell its reader).
        for chunk in &packet.chunks {
            match chunk.kind {
                ChunkType::SHUTDOWN | ChunkType::SHUTDOWN_ACK | ChunkType::SHUTDOWN_COMPLETE => {
                    held.shutdown_seen = true;
                }
                ChunkType::ABORT => held.aborted = true,
                _ => {}
            }
            if chunk.kind != ChunkType::DATA {
                continue;
            }
            if let Ok(data) = wire::Data::parse(chunk) {
                if data.unordered {
                    if held.unordered.len() < sctp::MAX_STREAMS as usize {
                        held.unordered.insert(data.stream_id);
                    }
                } else {
                    held.unordered.remove(&data.stream_id);
                }
            }
        }
        match held.endpoint.handle(now, peer, None, None, bytes) {
            Some((handle, DatagramEvent::AssociationEvent(event))) if handle == held.handle => {
                held.association.handle_event(event);
            }
            _ => {
                self.dropped();
                return;
            }
        }
        self.after_input(now, tag);
    }

    /// Timers that are due, for every association.
    pub fn handle_timeouts(&mut self, now: Instant) {
        // A peer silent for the idle timeout is gone (crashed, unplugged,
        // or never meant to come back): ABORT and forget it.
        let idle = self.ctx.config.idle_timeout;
        let silent: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| now >= h.last_heard + idle)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in silent {
            if let Some(held) = self.held.remove(&tag) {
                let user_abort = wire::cause::USER_INITIATED_ABORT;
                self.abort(
                    held.peer,
                    held.local_port,
                    held.remote_port,
                    held.peer_tag,
                    user_abort,
                );
                self.ctx.stats.abnormal_closes.fetch_add(1, Relaxed);
                self.ctx.log(format_args!(
                    "sctp {}: aborted after {} of silence (--idle-timeout), {} messages",
                    held.peer,
                    crate::units::format_duration(idle),
                    held.messages
                ));
            }
        }
        self.counters.associations_now = self.held.len() as u64;
        let due: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.association.poll_timeout().is_some_and(|t| t <= now))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in due {
            if let Some(held) = self.held.get_mut(&tag) {
                held.association.handle_timeout(now);
            }
            self.after_input(now, tag);
        }
    }

    /// Starts a graceful SHUTDOWN of every association (server stopping).
    pub fn shutdown_all(&mut self, now: Instant) {
        let tags: Vec<u32> = self.held.keys().copied().collect();
        for tag in tags {
            if let Some(held) = self.held.get_mut(&tag) {
                if !held.closing {
                    held.closing = true;
                    if held.association.shutdown().is_err() {
                        let _ = held.association.close();
                    }
                }
            }
            self.after_input(now, tag);
        }
    }

    /// Echo what arrived, send what the stack produced, drop ended associations.
    fn after_input(&mut self, now: Instant, tag: u32) {
        let Some(held) = self.held.get_mut(&tag) else {
            return;
        };
        let mut out = Output::default();
        pump(&mut held.association, now, &mut out);
        let mut echoed = false;
        for (stream, ppi, message) in out.messages.drain(..) {
            held.messages += 1;
            self.ctx.stats.messages.fetch_add(1, Relaxed);
            self.reply.clear();
            if let Err(why) = super::udp::answer_datagram(&message, &mut self.reply) {
                self.ctx.stats.protocol_errors.fetch_add(1, Relaxed);
                self.ctx
                    .log(format_args!("sctp {}: bad frame: {why}", held.peer));
            }
            if self.reply.len() > sctp::MAX_MESSAGE {
                self.ctx.stats.protocol_errors.fetch_add(1, Relaxed);
                self.reply.clear();
                self.reply
                    .extend_from_slice(b"ERROR reply too long for one SCTP message\n");
            }
            let unordered = held.unordered.contains(&stream);
            if let Err(e) = write_message(
                &mut held.association,
                stream,
                unordered,
                ppi,
                &Bytes::copy_from_slice(&self.reply),
            ) {
                self.ctx
                    .log(format_args!("sctp {}: reply not sent: {e:#}", held.peer));
            }
            echoed = true;
        }
        if echoed {
            pump(&mut held.association, now, &mut out);
        }
        let peer = held.peer;
        let ended = out.ended.take();
        for packet in out.packets {
            self.send(peer, packet);
        }
        if let Some(why) = ended {
            if let Some(held) = self.held.remove(&tag) {
                // The stack reports every end as "lost"; the wire says how.
                let why = if held.aborted {
                    "ABORT from the peer".to_string()
                } else if held.shutdown_seen || held.closing {
                    "SHUTDOWN".to_string()
                } else {
                    why
                };
                if held.aborted || !(held.shutdown_seen || held.closing) {
                    self.ctx.stats.abnormal_closes.fetch_add(1, Relaxed);
                }
                self.ctx.log(format_args!(
                    "sctp {peer}: closed after {:.1} s, {} messages ({why})",
                    now.saturating_duration_since(held.started).as_secs_f64(),
                    held.messages
                ));
            }
        }
        self.counters.associations_now = self.held.len() as u64;
    }
}

/// The SCTP echo on one UDP socket until shutdown; then every association
/// is shut down gracefully (up to the configured grace).
pub async fn serve(socket: tokio::net::UdpSocket, ctx: Arc<ServerContext>) -> anyhow::Result<()> {
    serve_observed(socket, ctx, None).await
}

/// [`serve`], publishing the SCTP counters after every event (tests watch them).
pub async fn serve_observed(
    socket: tokio::net::UdpSocket,
    ctx: Arc<ServerContext>,
    watch: Option<tokio::sync::watch::Sender<SctpCounters>>,
) -> anyhow::Result<()> {
    let mut server = SctpServer::new(ctx.clone(), Instant::now());
    let mut buf = vec![0u8; sctp::MAX_PACKET];
    let mut stopping: Option<Instant> = None;
    loop {
        let now = Instant::now();
        for (to, bytes) in server.outgoing.drain(..) {
            if let Err(e) = socket.send_to(&bytes, to).await {
                ctx.log(format_args!("sctp {to}: packet not sent: {e}"));
            }
        }
        if let Some(w) = &watch {
            w.send_replace(server.counters);
        }
        if let Some(since) = stopping {
            if server.associations() == 0 || now >= since + ctx.config.grace {
                return Ok(());
            }
        }
        let wake = server
            .next_timeout()
            .unwrap_or(now + Duration::from_secs(3600));
        let wake = match stopping {
            Some(since) => wake.min(since + ctx.config.grace),
            None => wake,
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled(), if stopping.is_none() => {
                stopping = Some(now);
                server.shutdown_all(now);
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => server.handle_datagram(Instant::now(), peer, &buf[..n]),
                Err(e) => ctx.log(format_args!("sctp: receive error ignored: {e}")),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                server.handle_timeouts(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn init_chunk(tag: u32) -> Vec<u8> {
        let mut c = vec![1, 0, 0, 20];
        c.extend_from_slice(&tag.to_be_bytes());
        c.extend_from_slice(&[0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1]);
        c
    }

    #[test]
    fn a_cookie_opens_only_for_its_tag_peer_and_lifetime() {
        let t0 = Instant::now();
        let jar = CookieJar::new(t0, Duration::from_secs(60));
        let ours = init_chunk(0xAAAA);
        let theirs = init_chunk(0xBBBB);
        let cookie = jar.bake(t0, peer(), &ours, &theirs);
        let opened = jar
            .open(t0 + Duration::from_secs(1), peer(), 0xAAAA, &cookie)
            .unwrap();
        assert_eq!(opened.local_init, ours);
        assert_eq!(opened.remote_init, theirs);
        assert_eq!(
            jar.open(t0, peer(), 0xBBBB, &cookie),
            Err(CookieError::WrongTag)
        );
        assert!(matches!(
            jar.open(t0, "127.0.0.1:40001".parse().unwrap(), 0xAAAA, &cookie),
            Err(CookieError::WrongPeer { .. })
        ));
        assert!(matches!(
            jar.open(t0 + Duration::from_secs(61), peer(), 0xAAAA, &cookie),
            Err(CookieError::Stale {
                peer_tag: 0xBBBB,
                ..
            })
        ));
    }

    #[test]
    fn any_changed_bit_makes_a_forgery() {
        let t0 = Instant::now();
        let jar = CookieJar::new(t0, Duration::from_secs(60));
        let cookie = jar.bake(t0, peer(), &init_chunk(1), &init_chunk(2));
        for i in 0..cookie.len() {
            let mut forged = cookie.clone();
            forged[i] ^= 0x01;
            assert_eq!(
                jar.open(t0, peer(), 1, &forged),
                Err(CookieError::Forged),
                "bit flipped at byte {i}"
            );
        }
        // Another server (another key) does not accept it either.
        let other = CookieJar::new(t0, Duration::from_secs(60));
        assert_eq!(other.open(t0, peer(), 1, &cookie), Err(CookieError::Forged));
        assert_eq!(
            jar.open(t0, peer(), 1, &cookie[..10]),
            Err(CookieError::Malformed("too short"))
        );
    }
}
