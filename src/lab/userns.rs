//! The lab without root: a user namespace of proto's own.
//!
//! Creating network namespaces and TUN devices needs `CAP_SYS_ADMIN` and
//! `CAP_NET_ADMIN`. Linux lets any user have both, *inside a user namespace
//! the user creates*: there the process is "root", but only over objects
//! that namespace owns. A network namespace created from inside it is owned
//! by it, so proto may build its whole lab there (namespaces, TUN devices,
//! addresses, per-namespace sysctls such as TCP Fast Open) while the
//! machine's own network, files and processes stay exactly as out of reach
//! as before.
//!
//! ```text
//!  initial user namespace (uid 1000, no capabilities)
//!  └── proto's user namespace: uid 0 inside = uid 1000 outside
//!      (full capabilities, but only over what this namespace owns)
//!      ├── network namespace "client": lab-client (TUN), 10.77.0.1
//!      └── network namespace "server": lab-server (TUN), 10.77.0.2
//! ```
//!
//! The steps (what `unshare --user --map-root-user` does):
//!
//! 1. `unshare(CLONE_NEWUSER)`: the process moves into a new, empty user
//!    namespace and holds every capability *in it*. Only a single-threaded
//!    process may do this, so it happens at the start of `main`.
//! 2. Write `/proc/self/uid_map` `0 <uid> 1`: uid 0 inside is the invoking
//!    user outside. An unprivileged process may map only its own id, and
//!    only after `deny` in `/proc/self/setgroups` for the group map (so it
//!    can never drop a group that *denies* it access to something). Files
//!    proto creates (pcap, key logs, certificates) belong to that user.
//! 3. From then on [`super::netns`] and [`super::tun`] work unchanged.
//!
//! What can stop it, each found by *trying* in a throwaway child process
//! first (so a failure leaves proto itself untouched, free to fall back):
//! user namespaces disabled (`user.max_user_namespaces = 0`, Debian's old
//! `kernel.unprivileged_userns_clone = 0`, a seccomp filter or security
//! module; Ubuntu's AppArmor lets the namespace be created but not used),
//! `/dev/net/tun` not readable and writable by the user (mode 0600, where
//! desktop distributions ship 0666; 0666 is safe because creating a device
//! still needs `CAP_NET_ADMIN` over a network namespace), or no TUN driver.
//! Each is reported with its exact cause and remedy.

use super::tun;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// How this process may build a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Root (or the two capabilities): today's behaviour, no user namespace.
    Root,
    /// proto moved itself into a user namespace of its own.
    UserNamespace { outside_uid: u32 },
    /// Not root, and a user-namespace lab cannot be built here: why, and
    /// what to do about it.
    Unavailable { what: String, how_to_fix: String },
}

static PRIVILEGE: OnceLock<Privilege> = OnceLock::new();

/// What [`prepare`] decided, if it ran in this process.
pub fn privilege() -> Option<&'static Privilege> {
    PRIVILEGE.get()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// True when this process holds `cap` in its effective set.
pub fn has_capability(cap: u32) -> bool {
    // /proc/self/status has "CapEff:\t000001ffffffffff": a hex bit set.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

/// True when the process may create namespaces and TUN devices as it is.
pub fn has_lab_capabilities() -> bool {
    has_capability(CAP_SYS_ADMIN) && has_capability(CAP_NET_ADMIN)
}

fn thread_count() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Decide how the lab will be built, once per process. Without the
/// capabilities, try a user-namespace lab in a child process and, if it
/// works, move this process into a user namespace of its own.
///
/// Must run while the process has a single thread (first thing in `main`,
/// before the async runtime starts): the kernel refuses `CLONE_NEWUSER` to
/// a multi-threaded process.
pub fn prepare() -> &'static Privilege {
    PRIVILEGE.get_or_init(|| {
        if has_lab_capabilities() {
            return Privilege::Root;
        }
        if thread_count() != Some(1) {
            return Privilege::Unavailable {
                what: "a user namespace, which a process can only enter while it has one thread"
                    .into(),
                how_to_fix: "this is a bug in proto (the namespace must be prepared first thing in main); run proto as root meanwhile".into(),
            };
        }
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if let Err(failure) = trial(uid, gid) {
            return failure.explain();
        }
        match enter(uid, gid) {
            Ok(()) => Privilege::UserNamespace { outside_uid: uid },
            // The trial just did the same: only a race (a limit reached in
            // between) gets here.
            Err((step, e)) => Failure { step, errno: e.raw_os_error().unwrap_or(0) }.explain(),
        }
    })
}

/// The step of building a rootless lab that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    CreateUserNs = 1,
    MapIds = 2,
    CreateNetNs = 3,
    OpenTun = 4,
    CreateTun = 5,
}

impl Step {
    fn from_u8(v: u8) -> Option<Step> {
        [
            Step::CreateUserNs,
            Step::MapIds,
            Step::CreateNetNs,
            Step::OpenTun,
            Step::CreateTun,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Failure {
    step: Step,
    errno: i32,
}

/// Steps 1 and 2 (see the module comment) for the calling process.
fn enter(uid: u32, gid: u32) -> Result<(), (Step, io::Error)> {
    // SAFETY: plain syscall; the process is single-threaded (checked by the caller).
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err((Step::CreateUserNs, io::Error::last_os_error()));
    }
    let map = |file: &str, text: String| std::fs::write(file, text).map_err(|e| (Step::MapIds, e));
    // Absent on kernels before 3.19, which did not need it.
    match std::fs::write("/proc/self/setgroups", "deny") {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err((Step::MapIds, e)),
        _ => {}
    }
    map("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    map("/proc/self/gid_map", format!("0 {gid} 1\n"))
}

/// Build a miniature lab (user namespace, network namespace, TUN device) in
/// a forked child and report the first step that failed. The child's
/// namespaces vanish with it.
fn trial(uid: u32, gid: u32) -> Result<(), Failure> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which are wrapped at once.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure {
            step: Step::CreateUserNs,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded (checked by `prepare`), so the
    // child may run ordinary code; it leaves with _exit, never returning.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure {
            step: Step::CreateUserNs,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    if pid == 0 {
        drop(read_end);
        let result = trial_steps(uid, gid);
        let mut report = [0u8; 5];
        if let Err((step, e)) = result {
            report[0] = step as u8;
            report[1..].copy_from_slice(&e.raw_os_error().unwrap_or(0).to_le_bytes());
        }
        // SAFETY: writing a local buffer to our pipe, then leaving without
        // running any of the parent's destructors or atexit handlers.
        unsafe {
            libc::write(write_end.as_raw_fd(), report.as_ptr().cast(), report.len());
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        // SAFETY: reading into the unfilled tail of a local buffer.
        let n = unsafe {
            libc::read(
                read_end.as_raw_fd(),
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    // SAFETY: reaping our own child.
    unsafe {
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }
    if got < report.len() {
        // The child died before reporting (e.g. killed by a seccomp filter).
        return Err(Failure {
            step: Step::CreateUserNs,
            errno: libc::EPERM,
        });
    }
    match Step::from_u8(report[0]) {
        None => Ok(()),
        Some(step) => Err(Failure {
            step,
            errno: i32::from_le_bytes([report[1], report[2], report[3], report[4]]),
        }),
    }
}

fn trial_steps(uid: u32, gid: u32) -> Result<(), (Step, io::Error)> {
    enter(uid, gid)?;
    // SAFETY: plain syscall in a single-threaded child.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err((Step::CreateNetNs, io::Error::last_os_error()));
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tun::TUN_PATH)
    {
        Ok(_) => {}
        Err(e) => return Err((Step::OpenTun, e)),
    }
    tun::create("proto-probe")
        .map(drop)
        .map_err(|e| (Step::CreateTun, e))
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The last resort, for an ordinary user or for a root without capabilities
/// (a container's root: uid 0, but no CAP_NET_ADMIN/CAP_SYS_ADMIN).
fn as_root() -> &'static str {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } == 0 {
        "or give this root its capabilities (a container: --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun)"
    } else {
        "or run proto as root"
    }
}

impl Failure {
    /// The cause, named as precisely as the kernel lets us, and the remedy.
    fn explain(self) -> Privilege {
        let as_root = as_root();
        let e = io::Error::from_raw_os_error(self.errno);
        let (what, how_to_fix) = match (self.step, self.errno) {
            (Step::CreateUserNs, libc::ENOSPC) => {
                let limit = read_proc("/proc/sys/user/max_user_namespaces");
                match limit.as_deref() {
                    Some("0") => (
                        "user namespaces, which are disabled here: the sysctl user.max_user_namespaces is 0".to_string(),
                        format!("enable them with `sudo sysctl -w user.max_user_namespaces=15000` (add it to /etc/sysctl.d/ to keep it), {as_root}"),
                    ),
                    other => (
                        format!("a new user namespace, but the limit user.max_user_namespaces ({}) is reached", other.unwrap_or("?")),
                        format!("raise it with `sudo sysctl -w user.max_user_namespaces=15000`, end other sandboxes, {as_root}"),
                    ),
                }
            }
            (Step::CreateUserNs, libc::EPERM | libc::EACCES) => {
                if read_proc("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
                    (
                        "user namespaces, which are disabled for ordinary users here: the sysctl kernel.unprivileged_userns_clone is 0".to_string(),
                        format!("enable them with `sudo sysctl -w kernel.unprivileged_userns_clone=1`, {as_root}"),
                    )
                } else {
                    (
                        format!("a user namespace, and creating one was refused ({e}): a security policy forbids it here (a container's seccomp profile, SELinux or another security module)"),
                        format!("allow user namespaces in that policy (Docker/Podman: --security-opt seccomp=unconfined), {as_root}"),
                    )
                }
            }
            (Step::CreateUserNs, _) => (
                format!("a user namespace, which this kernel cannot create ({e}; built without CONFIG_USER_NS?)"),
                as_root.to_string(),
            ),
            (Step::MapIds, _) => (
                format!("a user namespace with the invoking user mapped to root in it, but writing /proc/self/uid_map or gid_map failed ({e})"),
                as_root.to_string(),
            ),
            (Step::CreateNetNs | Step::CreateTun, libc::EPERM | libc::EACCES) => {
                let step = if self.step == Step::CreateNetNs {
                    "a network namespace"
                } else {
                    "a TUN device"
                };
                if read_proc("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
                    (
                        format!("{step} inside its user namespace, which AppArmor forbids here: the sysctl kernel.apparmor_restrict_unprivileged_userns is 1 ({e})"),
                        format!("allow it with `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or an AppArmor profile for proto with the `userns,` rule, {as_root}"),
                    )
                } else {
                    (
                        format!("{step} inside its user namespace, which a security policy refused ({e})"),
                        format!("allow it in that policy, {as_root}"),
                    )
                }
            }
            (Step::OpenTun, libc::ENOENT) => (
                format!("{}, the TUN/TAP driver's device, which does not exist here", tun::TUN_PATH),
                format!("load the driver with `sudo modprobe tun` (in a container: --device /dev/net/tun), {as_root}"),
            ),
            (Step::OpenTun, libc::ENODEV | libc::ENXIO) => (
                format!("the TUN/TAP driver behind {}, which is not loaded ({e})", tun::TUN_PATH),
                format!("load it with `sudo modprobe tun`, {as_root}"),
            ),
            (Step::OpenTun, libc::EACCES | libc::EPERM) => (
                format!(
                    "read and write access to {}, which is {} here ({e})",
                    tun::TUN_PATH,
                    describe_mode(tun::TUN_PATH)
                ),
                format!(
                    "make it world-accessible as desktop distributions ship it: `sudo chmod 0666 {}` (until reboot; to keep it, a udev rule: \
                     echo 'KERNEL==\"tun\", MODE=\"0666\"' | sudo tee /etc/udev/rules.d/60-tun.rules), {as_root}",
                    tun::TUN_PATH
                ),
            ),
            (step, _) => (
                format!("{} in its own user namespace, which failed ({e})", match step {
                    Step::CreateNetNs => "a network namespace",
                    Step::OpenTun => tun::TUN_PATH,
                    _ => "a TUN device",
                }),
                as_root.to_string(),
            ),
        };
        Privilege::Unavailable { what, how_to_fix }
    }
}

/// `crw------- root:root` for a path, as `ls -l` would say it.
fn describe_mode(path: &str) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return "not readable".into();
    };
    let mode = meta.permissions().mode();
    let kind = if meta.file_type().is_char_device() {
        'c'
    } else {
        '-'
    };
    let bits: String = (0..9)
        .map(|i| {
            let on = mode & (0o400 >> i) != 0;
            match (on, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect();
    let name = |id: u32| {
        if id == 0 {
            "root".to_string()
        } else {
            id.to_string()
        }
    };
    format!("{kind}{bits} {}:{}", name(meta.uid()), name(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain(step: Step, errno: i32) -> (String, String) {
        match (Failure { step, errno }).explain() {
            Privilege::Unavailable { what, how_to_fix } => (what, how_to_fix),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn steps_round_trip_through_their_byte() {
        for s in [
            Step::CreateUserNs,
            Step::MapIds,
            Step::CreateNetNs,
            Step::OpenTun,
            Step::CreateTun,
        ] {
            assert_eq!(Step::from_u8(s as u8), Some(s));
        }
        assert_eq!(Step::from_u8(0), None);
    }

    #[test]
    fn every_cause_names_its_remedy() {
        let (what, fix) = explain(Step::OpenTun, libc::EACCES);
        assert!(what.contains("/dev/net/tun"), "{what}");
        assert!(
            fix.contains("chmod 0666 /dev/net/tun") && fix.contains("udev"),
            "{fix}"
        );
        let (what, fix) = explain(Step::OpenTun, libc::ENOENT);
        assert!(what.contains("/dev/net/tun") && fix.contains("modprobe tun"));
        let (_, fix) = explain(Step::CreateUserNs, libc::EINVAL);
        assert!(fix.contains("root"));
        let (what, _) = explain(Step::CreateNetNs, libc::EPERM);
        assert!(what.contains("network namespace"), "{what}");
    }

    #[test]
    fn modes_read_like_ls() {
        let m = describe_mode("/dev/null");
        assert!(m.starts_with("crw-rw-rw- root:root"), "{m}");
    }
}
