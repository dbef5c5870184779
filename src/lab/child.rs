//! Running a command "on" one of the lab's hosts, and never leaving it behind.
//!
//! A child process inherits the network namespace of the *thread* that
//! forked it, so we fork from a thread that has entered the namespace.
//!
//! Leaving nothing behind, even when proto is killed with SIGKILL:
//! * a **PID namespace** per command. The forking thread first calls
//!   `unshare(CLONE_NEWPID)`, so the child becomes process 1 of a new PID
//!   namespace: a small init (below) that starts COMMAND as process 2. When
//!   process 1 of a PID namespace dies, the kernel kills every other process
//!   in it, so nothing COMMAND started (background jobs, daemons that
//!   `setsid`) can outlive it, and with the processes go the last users of
//!   the lab's network namespace.
//!
//!   ```text
//!   proto lab ── keeper thread ──fork──► init (pid 1 in the new PID namespace)
//!                (waits, PDEATHSIG)        └──fork──► COMMAND (pid 2) ──► its children…
//!   ```
//! * `PR_SET_PDEATHSIG(SIGKILL)` on the init: the kernel kills it if proto
//!   dies, even by SIGKILL or abort. The signal fires when the *thread* that
//!   forked the child exits, so that thread ("keeper") lives until the child
//!   is reaped; it is also the one that waits for it.
//! * [`NsChild`]'s `Drop` kills the child when proto unwinds (a panic).
//! * [`become_subreaper`] + [`kill_orphans`]: a second net for anything that
//!   left the PID namespace's reach (nothing can, but it costs little).
//!
//! The namespace gets its own `/proc` (in a private mount namespace), so
//! `ps` and `kill` inside the lab agree on process numbers.
//!
//! The init is the forked child itself, before it would `exec`: it forks
//! again, the grandchild goes on to `exec` COMMAND with everything the
//! `Command` set up (stdio, environment, directory), and the init forwards
//! SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 to it, reaps every orphan, and exits
//! with COMMAND's status. A process 1 ignores signals it has no handler for,
//! so Ctrl-C (SIGINT from the terminal) reaches COMMAND only, as before. The
//! init only makes system calls (a forked copy of a multi-threaded program
//! must not allocate or take locks).

use super::netns::NetNs;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A process running inside a lab namespace.
#[derive(Debug)]
pub struct NsChild {
    pid: i32,
    exited: Arc<AtomicBool>,
    status: Option<oneshot::Receiver<io::Result<ExitStatus>>>,
    result: Option<ExitStatus>,
}

impl NsChild {
    /// Spawn `cmd` inside `ns`.
    pub fn spawn(ns: &NetNs, mut cmd: Command) -> io::Result<NsChild> {
        // SAFETY: getpid is always safe.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe syscalls (prctl, fork, sigprocmask,
        // sigwaitinfo, waitpid, kill, close_range, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // proto died between fork and prctl: do not run orphaned. As
                // process 1 of a PID namespace our parent is outside it and
                // getppid() says 0; otherwise it must still be proto.
                let ppid = libc::getppid();
                if ppid != parent && ppid != 0 {
                    return Err(io::Error::other("proto exited"));
                }
                if libc::getpid() == 1 {
                    become_init();
                }
                Ok(())
            });
        }
        let ns_fd = ns.try_clone()?;
        let (pid_tx, pid_rx) = std::sync::mpsc::channel::<io::Result<i32>>();
        let (status_tx, status_rx) = oneshot::channel();
        let exited = Arc::new(AtomicBool::new(false));
        let exited2 = exited.clone();
        std::thread::Builder::new()
            .name("lab-child".into())
            .spawn(move || {
                let spawned = ns_fd.enter().and_then(|()| {
                    // A kernel without PID namespaces: COMMAND runs without
                    // one, and only the subreaper sweep cleans up after it
                    // (not after SIGKILL of proto).
                    let _ = new_pid_namespace_for_children();
                    cmd.spawn()
                });
                let mut child = match spawned {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(child.id() as i32));
                let status = child.wait();
                exited2.store(true, Ordering::SeqCst);
                let _ = status_tx.send(status);
            })?;
        let pid = pid_rx
            .recv()
            .map_err(|_| io::Error::other("child keeper thread died"))??;
        Ok(NsChild {
            pid,
            exited,
            status: Some(status_rx),
            result: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the child to exit (cancel-safe: can be called again).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.result {
            return Ok(s);
        }
        let rx = self
            .status
            .as_mut()
            .ok_or_else(|| io::Error::other("child already waited for"))?;
        let status = rx
            .await
            .map_err(|_| io::Error::other("child keeper thread died"))??;
        self.status = None;
        self.result = Some(status);
        Ok(status)
    }

    /// Send `signal` unless the child was already reaped.
    pub fn signal(&self, signal: i32) {
        if !self.exited.load(Ordering::SeqCst) {
            // SAFETY: kill with a pid we spawned and have not reaped.
            unsafe {
                libc::kill(self.pid, signal);
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Make the calling thread's *next* child process 1 of a new PID namespace
/// (the thread itself stays where it is). Only for dedicated threads.
fn new_pid_namespace_for_children() -> io::Result<()> {
    // SAFETY: plain syscall; affects the calling thread's future children.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("creating a PID namespace for the command: {e}"),
        ));
    }
    Ok(())
}

/// Signals process 1 passes on to COMMAND. SIGINT and SIGQUIT are not among
/// them: from a terminal they reach COMMAND directly (same process group).
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];

/// Give the PID namespace its own `/proc`, so that `ps`, `pgrep` and `kill`
/// inside the lab see the lab's processes with the numbers they use there.
/// That takes a private mount namespace (the mount is seen by the lab's
/// processes only). Best effort: where it is refused (e.g. a container that
/// masks parts of /proc), COMMAND sees the machine's /proc, as before.
///
/// # Safety
/// Only system calls; for the forked child before exec.
unsafe fn own_proc() {
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        return;
    }
    // Our mounts must not propagate back to the machine's namespace.
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        return;
    }
    libc::mount(
        c"proc".as_ptr(),
        c"/proc".as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    );
}

/// In the forked child, as process 1 of its PID namespace: fork COMMAND
/// (which returns from here and execs), then act as its init until it
/// exits, and exit with its status. Never returns in process 1.
///
/// # Safety
/// Call only in a freshly forked child, before exec: it makes only
/// async-signal-safe system calls.
unsafe fn become_init() {
    let mut forwarded: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut forwarded);
    for sig in FORWARDED {
        libc::sigaddset(&mut forwarded, sig);
    }
    let mut waited = forwarded;
    libc::sigaddset(&mut waited, libc::SIGCHLD);
    // Blocked before the fork, so nothing sent meanwhile is lost: a blocked
    // signal is queued even for a process 1 (only unblocked, unhandled ones
    // are dropped).
    libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut());
    own_proc();
    // What `ps` shows for process 1 inside the lab.
    libc::prctl(
        libc::PR_SET_NAME,
        c"lab-init".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    let command = libc::fork();
    if command == 0 {
        // COMMAND: the signal mask is inherited, so clear ours again.
        libc::sigprocmask(libc::SIG_UNBLOCK, &waited, std::ptr::null_mut());
        return;
    }
    if command < 0 {
        libc::_exit(127);
    }
    // proto's own handlers (inherited through fork) mean nothing here.
    libc::signal(libc::SIGINT, libc::SIG_IGN);
    libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    // The init never execs, so it must not keep the descriptors Command
    // gave it, above all the pipe through which proto learns that COMMAND's
    // exec succeeded (proto waits until every copy of it is closed).
    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
        // Kernels before 5.9 lack close_range: one by one, up to the limit.
        let mut limit: libc::rlimit = std::mem::zeroed();
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in 3..top {
            libc::close(fd);
        }
    }
    loop {
        let signal = libc::sigwaitinfo(&waited, std::ptr::null_mut());
        if signal < 0 {
            continue; // EINTR
        }
        if signal != libc::SIGCHLD {
            libc::kill(command, signal);
            continue;
        }
        // Reap everything that ended: COMMAND and orphans handed to us.
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if pid <= 0 {
                break;
            }
            if pid == command {
                // Leaving kills whatever COMMAND left running in here.
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                libc::_exit(code);
            }
        }
    }
}

/// The shell convention for an exit status: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).min(255) as u8,
        _ => 1,
    }
}

/// Make proto adopt orphaned descendants (instead of init), so that
/// [`kill_orphans`] can clean them up.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kill and reap every remaining child process of proto except `keep`.
/// Returns how many were killed.
pub fn kill_orphans(keep: &[i32]) -> usize {
    // SAFETY: getpid is always safe.
    let me = unsafe { libc::getpid() };
    let mut killed = 0;
    // Repeat: killing one may orphan its own children onto us.
    for _ in 0..5 {
        let victims: Vec<i32> = children_of(me)
            .into_iter()
            .filter(|p| !keep.contains(p))
            .collect();
        if victims.is_empty() {
            break;
        }
        for &pid in &victims {
            // SAFETY: pid is our own child (its ppid is us), not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            killed += 1;
        }
    }
    killed
}

/// Pids whose parent is `parent`, from /proc/<pid>/stat.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // Format: "pid (comm) state ppid ...": comm may contain spaces
                // and parentheses, so parse after the last ')'.
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
                })
                == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        // A wait status: exit code in bits 8..16, or the signal in bits 0..7.
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGINT)), 130);
    }

    #[test]
    fn children_of_finds_our_child() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        // SAFETY: getpid is always safe.
        let me = unsafe { libc::getpid() };
        assert!(children_of(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
