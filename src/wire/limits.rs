//! Protocol limits and well-known ports: facts about the wire, shared by
//! servers, clients and load generators alike.

/// The default port of the plain-text services (TCP and UDP), as in the
/// lecture's `nc localhost 8081`.
pub const PLAIN_PORT: u16 = 8081;

/// The default port of the encrypted services (TLS over TCP, QUIC over UDP).
pub const SECURE_PORT: u16 = 8443;

/// The largest UDP payload over IPv4: an IP packet's length field is 16 bits
/// (65 535 bytes), minus the 20-byte IPv4 header and the 8-byte UDP header.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - 20 - 8;
