//! Network namespaces: two "hosts" inside one process.
//!
//! A network namespace is a complete, separate copy of the kernel's network
//! stack: its own interfaces, addresses, routes, sockets, firewall and
//! sysctls. Two namespaces joined by a link behave like two machines joined
//! by a cable, yet the kernel's real TCP/UDP code runs on both sides.
//!
//! Linux attaches the namespace to each *thread*, not to the process. So:
//!
//! * a short-lived thread calls `unshare(CLONE_NEWNET)`, which moves it into a
//!   brand-new namespace, and opens `/proc/thread-self/ns/net`. The open file
//!   descriptor keeps the namespace alive after the thread is gone.
//! * to do something "on that host", a thread calls `setns(fd)` and then
//!   creates sockets. A socket belongs to the namespace it was created in
//!   forever, so it can then be driven from any thread (e.g. tokio's).
//!
//! Nothing is mounted (unlike `ip netns add`, which bind-mounts the namespace
//! under /run/netns): when proto's last fd and socket in the namespace close,
//! the kernel destroys it together with its TUN device. Even a crash leaks
//! nothing.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A network namespace held open by a file descriptor.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Create a fresh, empty network namespace (needs CAP_SYS_ADMIN).
    pub fn create() -> io::Result<NetNs> {
        // A throwaway thread, because unshare() changes the calling thread's
        // namespace and we do not want to move a tokio or main thread.
        let handle = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(|| -> io::Result<NetNs> {
                // SAFETY: plain syscall with a constant flag; affects only this thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let file = File::open("/proc/thread-self/ns/net")?;
                Ok(NetNs { fd: file.into() })
            })?;
        handle
            .join()
            .map_err(|_| io::Error::other("namespace creation thread panicked"))?
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs {
            fd: self.fd.try_clone()?,
        })
    }

    /// Move the *calling thread* into this namespace. Only for threads proto
    /// owns and dedicates to this namespace.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: valid fd owned by self; setns affects only the calling thread.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Run `f` on a new thread inside this namespace and return its result.
    /// A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, || -> io::Result<T> {
                    self.enter()?;
                    Ok(f())
                })?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}
