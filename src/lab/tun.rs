//! TUN devices: network interfaces whose "wire" is a file descriptor.
//!
//! A TUN device looks like any network interface to the kernel (it has an
//! address, an MTU, routes point at it), but instead of a network card behind
//! it there is a program: every IP packet the kernel *sends* through the
//! interface can be `read()` from the file descriptor, and every IP packet the
//! program `write()`s is *received* by the kernel as if it came off a cable.
//! (A TAP device is the same one layer lower, with Ethernet frames.)
//!
//! The lab puts one TUN in each namespace and copies packets between the two
//! file descriptors: that copy loop *is* the cable, so proto can delay, drop,
//! duplicate or slow down whatever crosses it.
//!
//! Set-up is a handful of ioctls, the same ones `ip`/`ifconfig` use:
//! `TUNSETIFF` on `/dev/net/tun` creates the device; `SIOCSIFADDR`,
//! `SIOCSIFNETMASK`, `SIOCSIFDSTADDR` (the point-to-point peer),
//! `SIOCSIFMTU` and `SIOCSIFFLAGS` (up) configure it through any AF_INET socket.

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

pub const TUN_PATH: &str = "/dev/net/tun";

/// An open TUN device (it disappears when the fd is closed).
#[derive(Debug)]
pub struct Tun {
    pub fd: OwnedFd,
    pub name: String,
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr is the generic view the ioctls expect.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Create a TUN device named `name` in the *calling thread's* namespace.
/// The fd is non-blocking: the forwarder waits with ppoll.
pub fn create(name: &str) -> io::Result<Tun> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)?;
    let mut req = ifreq_for(name)?;
    // IFF_TUN: IP packets (not Ethernet). IFF_NO_PI: no 4-byte "packet info"
    // header in front of each packet, so reads and writes are bare IP.
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: valid fd and a properly initialised ifreq that outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Tun {
        fd: file.into(),
        name: name.to_string(),
    })
}

/// An AF_INET socket, only used as a handle for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
) -> io::Result<()> {
    // SAFETY: valid socket and ifreq; the request codes used here read or
    // write only the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Give interface `name` the address `local`, point-to-point peer `peer`,
/// the MTU, and bring it up. Call from a thread inside the namespace.
pub fn configure_point_to_point(
    name: &str,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    mtu: u32,
    tx_queue_packets: u32,
) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(local);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, "set address")?;

    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::BROADCAST);
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req, "set netmask")?;

    // The peer address makes the kernel add a route "peer via this interface".
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_dstaddr = sockaddr_in(peer);
    ioctl(&sock, libc::SIOCSIFDSTADDR, &mut req, "set peer address")?;

    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(&sock, libc::SIOCSIFMTU, &mut req, "set MTU")?;

    // Room for bursts between the kernel and the forwarder thread (see
    // `buffers::tun_queue_packets`).
    set_tx_queue_len(name, tx_queue_packets)
        .map_err(|e| io::Error::new(e.kind(), format!("set txqueuelen: {e}")))?;

    bring_up(&sock, name)
}

/// Set the interface's transmit queue length (`ip link set NAME txqueuelen N`).
///
/// Through rtnetlink rather than the `SIOCSIFTXQLEN` ioctl: the kernel asks
/// for `CAP_NET_ADMIN` over the *initial* namespace for the ioctl but only
/// over the interface's network namespace for netlink, which a rootless lab
/// has (see `userns.rs`). The request is one message:
///
/// ```text
///  nlmsghdr   len u32 | type u16 = RTM_NEWLINK | flags u16 = REQUEST|ACK | seq u32 | pid u32
///  ifinfomsg  family u8 | pad u8 | type u16 | index i32 | flags u32 | change u32
///  rtattr     len u16 = 8 | type u16 = IFLA_TXQLEN | value u32
/// ```
///
/// and the kernel answers with an `NLMSG_ERROR` message whose error is 0 on
/// success or a negative errno.
pub fn set_tx_queue_len(name: &str, len: u32) -> io::Result<()> {
    const IFLA_TXQLEN: u16 = 13; // linux/if_link.h
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // flags, change: none
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&IFLA_TXQLEN.to_ne_bytes());
    msg.extend_from_slice(&len.to_ne_bytes());

    // SAFETY: plain syscall; the fd is wrapped at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sending a local buffer on our socket (default address: the kernel).
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 1024];
    // SAFETY: receiving into a local buffer.
    let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // nlmsghdr (16 bytes) of type NLMSG_ERROR, then the error as an i32.
    let reply = &reply[..n as usize];
    let kind = reply.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let error = reply
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, error) {
        (Some(k), Some(0)) if k == libc::NLMSG_ERROR as u16 => Ok(()),
        (Some(k), Some(e)) if k == libc::NLMSG_ERROR as u16 => {
            Err(io::Error::from_raw_os_error(-e))
        }
        _ => Err(io::Error::other("unexpected rtnetlink reply")),
    }
}

/// Bring the loopback interface up (a new namespace starts with `lo` down).
pub fn loopback_up() -> io::Result<()> {
    let sock = ioctl_socket()?;
    bring_up(&sock, "lo")
}

fn bring_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq_for(name)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, "get flags")?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, "bring interface up")
}

/// Write a sysctl of the calling thread's namespace, e.g.
/// `net/ipv6/conf/default/disable_ipv6`. /proc/sys/net shows the namespace of
/// the thread that opens it.
pub fn write_sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
}
