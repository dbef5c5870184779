//! UDP, client side. There is no handshake: "connecting" a UDP socket only
//! tells the kernel which peer to send to and accept datagrams from.

use super::Target;
use anyhow::Context;
use tokio::net::UdpSocket;

pub async fn connect(target: &Target) -> anyhow::Result<UdpSocket> {
    let addrs = target.resolve().await?;
    let addr = addrs[0];
    let local: std::net::SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("creating a UDP socket")?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot set the UDP peer to {addr}"))?;
    Ok(socket)
}
