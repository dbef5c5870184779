//! The lab without root (issue 12): an ordinary user gets the same lab
//! through a user namespace, or an error naming the exact cause and remedy.
//!
//! CI is root, so each test becomes an ordinary user, uid/gid 65534
//! ("nobody") without supplementary groups, running a copy of the binary
//! from a world-readable directory with a HOME of its own. `/dev/net/tun`
//! is made world-accessible (as desktop distributions ship it) or root-only
//! (as this image ships it) for the test, and its mode restored afterwards;
//! the tests of this file run one at a time for that reason.
//!
//! Like the other lab tests they skip without root unless
//! `PROTO_LAB_REQUIRED=1` (CI), where skipping is a failure.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
const TUN: &str = "/dev/net/tun";

static LOCK: Mutex<()> = Mutex::new(());

/// A world-readable copy of proto and a HOME owned by "nobody".
struct Nobody {
    dir: PathBuf,
    bin: PathBuf,
    home: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Nobody {
    /// None (after a skip message) where the test cannot run.
    fn setup(test: &str) -> Option<Nobody> {
        if !support::lab_or_skip(test) {
            return None;
        }
        // SAFETY: geteuid is always safe.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("PROTO_LAB_REQUIRED").as_deref() != Ok("1"),
                "{test}: needs root to become another user"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs root to become an unprivileged user"
            );
            return None;
        }
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir =
            std::env::temp_dir().join(format!("proto-rootless-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The build directory may sit where "nobody" cannot enter.
        let bin = dir.join("proto");
        if std::fs::hard_link(support::PROTO, &bin).is_err() {
            std::fs::copy(support::PROTO, &bin).unwrap();
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
        Some(Nobody {
            dir,
            bin,
            home,
            _lock: lock,
        })
    }

    /// `proto ARGS` as uid/gid 65534 without supplementary groups (std drops
    /// them when a root parent sets the uid), in a clean environment.
    fn proto(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .current_dir(&self.home)
            .uid(NOBODY)
            .gid(NOBODY);
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.proto(args).output().expect("running proto as nobody")
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sets /dev/net/tun's mode for one test and restores it afterwards.
struct TunMode {
    original: u32,
}

impl TunMode {
    fn set(mode: u32) -> TunMode {
        let original = std::fs::metadata(TUN).unwrap().mode() & 0o7777;
        std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(mode)).unwrap();
        TunMode { original }
    }
}

impl Drop for TunMode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(self.original));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn owner(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

/// Every network and user namespace a process or an open fd refers to.
fn namespaces() -> HashSet<String> {
    let mut set = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return set;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        for ns in ["net", "user"] {
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")) {
                set.insert(link.display().to_string());
            }
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.filter_map(|e| e.ok()) {
                if let Ok(link) = std::fs::read_link(fd.path()) {
                    let l = link.display().to_string();
                    if l.starts_with("net:[") || l.starts_with("user:[") {
                        set.insert(l);
                    }
                }
            }
        }
    }
    set
}

fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| text(&c).replace('\0', " ").contains(marker))
        })
        .collect()
}

/// Waits (bounded) for `done`, then returns its last answer.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return done();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn compare_as_an_ordinary_user_matches_theory_across_a_60ms_link() {
    let test = "compare_as_an_ordinary_user_matches_theory_across_a_60ms_link";
    let Some(user) = Nobody::setup(test) else {
        return;
    };
    let _tun = TunMode::set(0o666);
    // The highest priority for this thread, inherited by proto through fork
    // (an unprivileged process may keep a nice value it cannot set): the
    // test times the link, not the scheduler of a busy machine.
    // SAFETY: setpriority on the calling thread's own id.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20);
    }
    // Round trips are whole numbers, so ±0.25 tells each count from its
    // neighbours even on a loaded machine, and a 59–80 ms connection RTT
    // tells the link from loopback. A busy machine can only slow packets
    // down, so there are 3 attempts; a broken lab fails all of them.
    let mut failures = Vec::new();
    for _ in 0..3 {
        let out = user.output(&["compare", "--rtt", "60ms", "--runs", "3", "--json"]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "proto compare as nobody: {stderr}");
        assert!(!stderr.contains("LOOPBACK"), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
        assert_eq!(report["environment"], "lab", "{stderr}");
        let variants = report["variants"].as_array().unwrap();
        assert_eq!(variants.len(), 12, "all twelve variants");
        let mut wrong = Vec::new();
        for v in variants {
            let id = v["protocol"].as_str().unwrap();
            let theory = v["theory_rtts"].as_f64().unwrap();
            let measured = v["handshake_rtts"].as_f64();
            let rtt = v["rtt_ms"].as_f64();
            match (measured, rtt) {
                (Some(m), Some(r)) if (m - theory).abs() <= 0.25 && (59.0..80.0).contains(&r) => {}
                _ => wrong.push(format!(
                    "{id}: {measured:?} RTT (theory {theory}) on a {rtt:?} ms connection; note {}",
                    v["note"]
                )),
            }
        }
        if wrong.is_empty() {
            // The certificates it made belong to the user, not to root.
            let certs = user.home.join(".local/share/proto/certs");
            for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
                assert_eq!(owner(&certs.join(file)), NOBODY, "{file}");
            }
            return;
        }
        eprintln!("{test}: attempt failed: {wrong:#?}");
        failures.push(wrong);
    }
    panic!("{test}: all attempts failed: {failures:#?}");
}

#[test]
fn lab_command_as_an_ordinary_user_runs_and_leaves_nothing_behind() {
    let Some(user) =
        Nobody::setup("lab_command_as_an_ordinary_user_runs_and_leaves_nothing_behind")
    else {
        return;
    };
    let _tun = TunMode::set(0o666);
    let before = namespaces();
    let marker = "1000.612";
    let pcap = user.home.join("link.pcap");
    let ns_file = user.home.join("ns");
    let out = user
        .proto(&["lab", "--rtt", "20ms", "--pcap"])
        .arg(&pcap)
        .args(["--", "bash", "-c"])
        .arg(format!(
            "readlink /proc/self/ns/net /proc/self/ns/user > {ns}; sleep {marker} & \
             exec 3<>/dev/tcp/$PROTO_LAB_SERVER/8081; echo hello >&3; head -c 6 <&3",
            ns = ns_file.display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "HELLO\n", "{stderr}");
    // The echo crossed the emulated link, and the capture shows it.
    assert_eq!(owner(&pcap), NOBODY, "the pcap belongs to the user");
    assert!(
        std::fs::metadata(&pcap).unwrap().len() > 24 + 5 * 40,
        "packets captured"
    );
    // COMMAND's namespaces were new, and nothing refers to them any more.
    let lab_namespaces: HashSet<String> = std::fs::read_to_string(&ns_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lab_namespaces.len(), 2, "{lab_namespaces:?}");
    assert!(lab_namespaces.is_disjoint(&before), "fresh namespaces");
    assert!(
        eventually(Duration::from_secs(5), || processes_with(marker).is_empty()),
        "the background job survived"
    );
    assert!(
        eventually(Duration::from_secs(5), || namespaces()
            .is_disjoint(&lab_namespaces)),
        "namespaces left behind: {lab_namespaces:?}"
    );
}

/// `proto transfer quic` without root: QUIC's UDP sockets cannot be forced
/// past the machine's `net.core.rmem_max` (SO_RCVBUFFORCE needs
/// CAP_NET_ADMIN in the initial namespace), so proto asks with SO_RCVBUF,
/// gets what the kernel allows, says so, and the transfer still completes.
#[test]
fn transfer_quic_as_an_ordinary_user_completes_and_names_the_buffer_limit() {
    let Some(user) =
        Nobody::setup("transfer_quic_as_an_ordinary_user_completes_and_names_the_buffer_limit")
    else {
        return;
    };
    let _tun = TunMode::set(0o666);
    let out = user.output(&[
        "transfer", "quic", "--size", "2M", "--cc", "newreno", "--rtt", "20ms", "--json",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", text(&out.stdout)));
    assert_eq!(report["run"]["bytes"], 2 << 20, "{stderr}");
    assert!(
        report["run"]["samples"].as_array().unwrap().len() > 10,
        "the sender's state was sampled"
    );
    let notes = report["run"]["notes"].to_string();
    assert!(
        notes.contains("SO_RCVBUFFORCE needs CAP_NET_ADMIN") && notes.contains("rmem_max"),
        "the fallback is said: {notes}"
    );
    assert!(
        stderr.contains("note: the client's UDP socket got"),
        "and printed: {stderr}"
    );
}

/// `kill -9` of a rootless lab: the kernel ends COMMAND's PID namespace,
/// and with it the lab's network namespaces and proto's user namespace.
#[test]
fn sigkill_of_a_rootless_lab_leaves_no_process_and_no_namespace() {
    let Some(user) = Nobody::setup("sigkill_of_a_rootless_lab_leaves_no_process_and_no_namespace")
    else {
        return;
    };
    let _tun = TunMode::set(0o666);
    let before = namespaces();
    let marker = "1000.613";
    let ns_file = user.home.join("ns");
    let mut child = user
        .proto(&["lab", "--rtt", "10ms", "--", "sh", "-c"])
        .arg(format!(
            "readlink /proc/self/ns/net /proc/self/ns/user > {ns}; \
             sleep {marker} & setsid sleep {marker} & echo ready; sleep {marker}",
            ns = ns_file.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let sleeping = eventually(Duration::from_secs(5), || {
        processes_with(marker)
            .iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
            })
            .count()
            == 3
    });
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(sleeping, "three sleeps were running");
    let lab_namespaces: HashSet<String> = std::fs::read_to_string(&ns_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lab_namespaces.len(), 2, "{lab_namespaces:?}");
    assert!(lab_namespaces.is_disjoint(&before), "fresh namespaces");
    assert!(
        eventually(Duration::from_secs(5), || processes_with(marker).is_empty()),
        "processes survived: {:?}",
        processes_with(marker)
    );
    assert!(
        eventually(Duration::from_secs(5), || namespaces()
            .is_disjoint(&lab_namespaces)),
        "namespaces left behind: {lab_namespaces:?}"
    );
}

#[test]
fn without_access_to_dev_net_tun_the_error_names_the_device_and_the_fix() {
    let Some(user) =
        Nobody::setup("without_access_to_dev_net_tun_the_error_names_the_device_and_the_fix")
    else {
        return;
    };
    let _tun = TunMode::set(0o600);
    let start = Instant::now();
    let out = user.output(&["lab", "--rtt", "10ms", "--", "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "/dev/net/tun",
        "crw-------",
        "chmod 0666 /dev/net/tun",
        "udev",
        "root",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn explicit_link_options_never_fall_back_to_loopback() {
    let Some(user) = Nobody::setup("explicit_link_options_never_fall_back_to_loopback") else {
        return;
    };
    let _tun = TunMode::set(0o600);
    for args in [
        &[
            "compare",
            "--rtt",
            "60ms",
            "--protocols",
            "tcp",
            "--runs",
            "1",
        ][..],
        &[
            "compare",
            "--loss",
            "1%",
            "--protocols",
            "tcp",
            "--runs",
            "1",
        ],
        &[
            "bench",
            "--rtt",
            "60ms",
            "--protocols",
            "tcp",
            "--duration",
            "1s",
        ],
        &["hol", "--rtt", "60ms"],
    ] {
        let out = user.output(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} measured something: {}",
            text(&out.stdout)
        );
        assert!(stderr.contains("/dev/net/tun"), "{args:?}: {stderr}");
        assert!(!stderr.contains("LOOPBACK"), "{args:?}: {stderr}");
    }
    // Plain `proto compare` may measure loopback, but says so first.
    let out = user.output(&["compare", "--protocols", "tcp", "--runs", "1", "--json"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("LOOPBACK") && first.contains("/dev/net/tun"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["environment"], "loopback");
}

/// User namespaces disabled, the honest way: proto runs inside a user
/// namespace (made by this test, as root) whose own `user.max_user_namespaces`
/// is 0, so creating any user namespace below it fails as on a machine
/// where the administrator set that sysctl to 0.
#[test]
fn with_user_namespaces_disabled_the_error_names_the_sysctl() {
    let Some(user) = Nobody::setup("with_user_namespaces_disabled_the_error_names_the_sysctl")
    else {
        return;
    };
    let _tun = TunMode::set(0o666);
    // The shell waits on stdin until its maps are written, then execs a new
    // shell (capabilities are computed at exec, now that uid 0 is mapped),
    // which sets the limit and becomes nobody to run proto.
    let script = format!(
        "read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && \
         exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- \
         env HOME={home} {bin} lab --rtt 10ms -- true'",
        home = user.home.display(),
        bin = user.bin.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script])
        .current_dir(&user.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: unshare in the forked child before exec (a plain syscall).
    unsafe {
        sh.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = sh.spawn().expect("sh in a new user namespace");
    let pid = child.id();
    // As root outside, any ids may be mapped: root and nobody, each to itself.
    std::fs::write(
        format!("/proc/{pid}/uid_map"),
        format!("0 0 1\n{NOBODY} {NOBODY} 1\n"),
    )
    .unwrap();
    std::fs::write(
        format!("/proc/{pid}/gid_map"),
        format!("0 0 1\n{NOBODY} {NOBODY} 1\n"),
    )
    .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("user.max_user_namespaces is 0")
            && stderr.contains("sysctl -w user.max_user_namespaces="),
        "{stderr}"
    );
}
