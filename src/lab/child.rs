//! Running a command "on" one of the lab's hosts, and never leaving it behind.
//!
//! A child process inherits the network namespace of the *thread* that
//! forked it, so we fork from a thread that has entered the namespace.
//!
//! Leaving nothing behind takes three layers:
//! * `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills the child if proto dies,
//!   even by SIGKILL or abort. The signal fires when the *thread* that forked
//!   the child exits, so that thread ("keeper") lives until the child is
//!   reaped; it is also the one that waits for it.
//! * [`NsChild`]'s `Drop` kills the child when proto unwinds (a panic).
//! * [`become_subreaper`] + [`kill_orphans`]: a shell's background jobs
//!   outlive the shell; as a "child subreaper" proto adopts them instead of
//!   init, so it can find and kill them at exit.

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
        // makes async-signal-safe syscalls (prctl, getppid).
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
                // proto died between fork and prctl: do not run orphaned.
                if libc::getppid() != parent {
                    return Err(io::Error::other("proto exited"));
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
                let spawned = ns_fd.enter().and_then(|()| cmd.spawn());
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
