//! Certificates: a local certificate authority (CA) and a server certificate
//! signed by it, so that TLS and QUIC are *verified* by default, even on a
//! laptop with no domain name.
//!
//! How TLS authenticates a server: the server sends its certificate chain;
//! the client checks that (1) the chain ends at a CA it already trusts, (2)
//! the certificate names the host the client wanted (its Subject Alternative
//! Names, "SANs": DNS names and IP addresses), (3) it is within its validity
//! dates, and (4) the server holds the private key (it signs the handshake
//! transcript with it: TLS 1.3's CertificateVerify). A self-made CA that only
//! this machine trusts gives all four checks without any public CA.
//!
//! Files in the certificate directory (`--cert-dir`, `PROTO_CERT_DIR`, or
//! `$XDG_DATA_HOME/proto/certs`, else `~/.local/share/proto/certs`):
//!
//! | file         | what                                                        |
//! |--------------|-------------------------------------------------------------|
//! | `ca.pem`     | the CA certificate: what clients trust (`openssl s_client -CAfile ca.pem`) |
//! | `ca.key`     | the CA's private key (mode 0600): signs new server certificates |
//! | `server.pem` | the server certificate, signed by the CA                    |
//! | `server.key` | the server's private key (mode 0600)                        |
//!
//! All keys are ECDSA P-256. The first run creates them; later runs reuse
//! them, and re-issue only the server certificate when it lacks a name the
//! server now needs (a `--san`, or a non-loopback address it is bound to).
//!
//! The directory is guarded the way ssh guards `~/.ssh`: whoever can write
//! there can replace the CA that clients trust by default, or read the
//! keys. So it is created with mode 0700 whatever the umask; a directory
//! or file there that another user could write, a key anyone else could
//! read, or one owned by another user is refused with the reason and the
//! fix; keys are written to a fresh temporary file (`O_CREAT|O_EXCL|
//! O_NOFOLLOW`, mode 0600 from the first byte, a name no one can guess)
//! and renamed into place, and read without following symbolic links. A
//! read-only directory that already holds valid certificates is used as is.

use anyhow::{bail, Context};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a user picks another certificate directory, for error messages: the
/// environment variable works for every command (client, compare, bench…),
/// the flag only for `proto serve`.
const CHOOSE_A_DIRECTORY: &str =
    "PROTO_CERT_DIR=DIR (any command; `proto serve` also takes --cert-dir DIR)";

/// The names every generated server certificate carries.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The subject of the generated CA, followed by a short hash of its public
/// key: two machines' CAs then have different names, so a client trusting
/// the wrong one hears "unknown issuer". Re-creating the CA's parameters
/// from its key is how a stored CA signs a new server certificate.
const CA_NAME: &str = "proto local teaching CA";

fn ca_name(key: &rcgen::KeyPair) -> String {
    let hash = Sha256::digest(key.public_key_raw());
    let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{CA_NAME} {short}")
}

/// Paths of the files in one certificate directory.
#[derive(Debug, Clone)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir { dir: dir.into() }
    }

    /// `PROTO_CERT_DIR`, else `$XDG_DATA_HOME/proto/certs`, else
    /// `~/.local/share/proto/certs`.
    pub fn default_dir() -> anyhow::Result<CertDir> {
        if let Some(dir) = std::env::var_os("PROTO_CERT_DIR").filter(|d| !d.is_empty()) {
            return Ok(CertDir::new(dir));
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(CertDir::new(
                PathBuf::from(data).join("proto").join("certs"),
            ));
        }
        match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => Ok(CertDir::new(
                PathBuf::from(home).join(".local/share/proto/certs"),
            )),
            None => {
                bail!("no place for certificates: set HOME, XDG_DATA_HOME or {CHOOSE_A_DIRECTORY}")
            }
        }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Loads the CA and server certificate, creating whatever is missing,
    /// and re-issuing the server certificate if it does not cover
    /// [`DEFAULT_NAMES`] plus `extra_names`. Safe against two processes
    /// doing it at once (a lock file serialises them).
    pub fn load_or_create(&self, extra_names: &[String]) -> anyhow::Result<ServerIdentity> {
        create_private_dir(&self.dir)?;
        check_not_open_to_others(&self.dir, false)?;
        // A read-only directory (a mounted volume, a shared read-only
        // install) cannot hold a lock file, and needs none: nothing will be
        // written there. If something must be, writing fails with the reason.
        let _lock = match DirLock::acquire(&self.dir.join(".lock")) {
            Ok(lock) => Some(lock),
            Err(e) if is_read_only(&e) => None,
            Err(e) => return Err(e),
        };
        for (file, private) in [
            (self.ca_cert(), false),
            (self.ca_key(), true),
            (self.server_cert(), false),
            (self.server_key(), true),
        ] {
            if std::fs::symlink_metadata(&file).is_ok() {
                check_not_open_to_others(&file, private)?;
            }
        }
        let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        for n in extra_names {
            let n = n.trim().to_string();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        let mut created = Vec::new();
        if !self.ca_cert().exists() || !self.ca_key().exists() {
            self.create_ca()?;
            created.push("CA");
        }
        let ca = load_certs(&self.ca_cert())?;
        let ca_der = ca
            .first()
            .cloned()
            .with_context(|| format!("{} holds no certificate", self.ca_cert().display()))?;
        let needs_new_server = !self.server_cert().exists()
            || !self.server_key().exists()
            || !covers(&ca_der, &load_certs(&self.server_cert())?, &names);
        if needs_new_server {
            self.issue_server_cert(&names)?;
            created.push("server certificate");
        }
        let chain = load_certs(&self.server_cert())?;
        let key = load_key(&self.server_key())?;
        if !covers(&ca_der, &chain, &names) {
            bail!(
                "{} is not valid for {names:?} under {}: delete the directory {} to start afresh",
                self.server_cert().display(),
                self.ca_cert().display(),
                self.dir.display()
            );
        }
        Ok(ServerIdentity {
            chain,
            key: Arc::new(key),
            ca: Some(ca_der),
            files: Some(self.clone()),
            created,
            names,
        })
    }

    fn create_ca(&self) -> anyhow::Result<()> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the CA key")?;
        let cert = ca_params(&key)?
            .self_signed(&key)
            .context("self-signing the CA")?;
        write_private(&self.ca_key(), key.serialize_pem().as_bytes())?;
        write_file(&self.ca_cert(), cert.pem().as_bytes())?;
        Ok(())
    }

    fn issue_server_cert(&self, names: &[String]) -> anyhow::Result<()> {
        let ca_key_pem = String::from_utf8(read_no_follow(&self.ca_key())?)
            .with_context(|| format!("{} is not a PEM file", self.ca_key().display()))?;
        let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
            .with_context(|| format!("{} is not a private key", self.ca_key().display()))?;
        // The issuer's name and key identifier are all a signature needs
        // from the CA certificate: rebuild it from the same parameters.
        let ca = ca_params(&ca_key)?
            .self_signed(&ca_key)
            .context("rebuilding the CA")?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .with_context(|| format!("{names:?} are not valid certificate names"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "proto echo server");
        // No basicConstraints at all: ExplicitNoCa would encode "cA FALSE",
        // a DEFAULT value that DER forbids and strict parsers (Python's
        // cryptography, hence aioquic) reject.
        params.is_ca = rcgen::IsCa::NoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the server key")?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("signing the server certificate")?;
        write_private(&self.server_key(), key.serialize_pem().as_bytes())?;
        write_file(&self.server_cert(), cert.pem().as_bytes())?;
        Ok(())
    }
}

fn ca_params(key: &rcgen::KeyPair) -> anyhow::Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name(key));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Whether `chain` verifies under `ca` for every one of `names`: the same
/// check a client makes, done with rustls's own verifier.
fn covers(
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
    names: &[String],
) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let Ok(verifier) = verifier_for(ca) else {
        return false;
    };
    names.iter().all(|name| {
        let Ok(server_name) = ServerName::try_from(name.clone()) else {
            return false;
        };
        verifier
            .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
            .is_ok()
    })
}

fn verifier_for(
    ca: &CertificateDer<'static>,
) -> anyhow::Result<Arc<rustls::client::WebPkiServerVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?)
}

/// What a TLS or QUIC server presents: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerIdentity {
    /// Leaf first (we serve just the leaf; clients hold the CA).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The CA that signed it, when proto made it.
    pub ca: Option<CertificateDer<'static>>,
    /// Where the files are, when they came from a certificate directory.
    pub files: Option<CertDir>,
    /// What this run had to create ("CA", "server certificate").
    pub created: Vec<&'static str>,
    /// The names the certificate was checked to cover.
    pub names: Vec<String>,
}

impl std::fmt::Debug for ServerIdentity {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint())
            .field("files", &self.files)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Loads your own PEM certificate chain and key (`--cert`, `--key`).
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<ServerIdentity> {
        let chain = load_certs(cert)?;
        if chain.is_empty() {
            bail!("{} holds no PEM certificate", cert.display());
        }
        Ok(ServerIdentity {
            chain,
            key: Arc::new(load_key(key)?),
            ca: None,
            files: None,
            created: Vec::new(),
            names: Vec::new(),
        })
    }

    /// SHA-256 of the server certificate (DER), as `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        self.chain.first().map(fingerprint).unwrap_or_default()
    }

    /// Lines for the server's start-up banner: where the files are and
    /// their fingerprints, so a student can compare with what a client sees.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.created.is_empty() {
            lines.push(format!("created {}", self.created.join(" and ")));
        }
        if let Some(files) = &self.files {
            if let Some(ca) = &self.ca {
                lines.push(format!(
                    "CA certificate     {}  SHA-256 {}",
                    files.ca_cert().display(),
                    fingerprint(ca)
                ));
            }
            lines.push(format!(
                "server certificate {}  SHA-256 {}",
                files.server_cert().display(),
                self.fingerprint()
            ));
            lines.push(format!(
                "server key         {}",
                files.server_key().display()
            ));
            lines.push(format!("certificate names  {}", self.names.join(", ")));
        } else {
            lines.push(format!("server certificate SHA-256 {}", self.fingerprint()));
        }
        lines
    }
}

/// SHA-256 of a certificate's DER bytes, colon-separated hex (as
/// `openssl x509 -fingerprint -sha256` prints it).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The names a server bound to `ip` should have in its certificate besides
/// the defaults: the address itself unless it is loopback; for 0.0.0.0 or
/// `::` ("every address"), every non-loopback address of this machine.
pub fn names_for_bind(ip: IpAddr) -> Vec<String> {
    if ip.is_loopback() {
        Vec::new()
    } else if ip.is_unspecified() {
        local_addresses()
            .into_iter()
            .filter(|a| a.is_ipv4() == ip.is_ipv4() || ip.is_ipv6())
            .map(|a| a.to_string())
            .collect()
    } else {
        vec![ip.to_string()]
    }
}

/// This machine's non-loopback addresses (IPv6 link-local ones left out:
/// they need a scope and cannot be named in a certificate usefully).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `list` with a linked list we free below;
        // each sockaddr is read according to its family.
        unsafe {
            if libc::getifaddrs(&mut list) != 0 {
                return out;
            }
            let mut cur = list;
            while !cur.is_null() {
                let addr = (*cur).ifa_addr;
                if !addr.is_null() {
                    match i32::from((*addr).sa_family) {
                        libc::AF_INET => {
                            let sin = &*(addr as *const libc::sockaddr_in);
                            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                            out.push(IpAddr::V4(ip));
                        }
                        libc::AF_INET6 => {
                            let sin6 = &*(addr as *const libc::sockaddr_in6);
                            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                            if ip.segments()[0] & 0xffc0 != 0xfe80 {
                                out.push(IpAddr::V6(ip));
                            }
                        }
                        _ => {}
                    }
                }
                cur = (*cur).ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    out.retain(|a| !a.is_loopback());
    out.sort();
    out.dedup();
    out
}

/// Creates `dir` and any missing parents with mode 0700, whatever the
/// umask (a umask can only take permissions away, and 0700 has none for
/// others to lose).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the certificate directory {}: {e}. To use another, set {CHOOSE_A_DIRECTORY}",
            dir.display()
        )
    })
}

/// Refuses `path` (the certificate directory, or a file in it) when
/// another user could change it, or, for a private key, read it; or when
/// it belongs to someone else; or when it is a symbolic link (a file only).
fn check_not_open_to_others(path: &Path, private_key: bool) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let is_dir = path.is_dir();
        let meta = if is_dir {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
        .with_context(|| format!("reading the permissions of {}", path.display()))?;
        if meta.file_type().is_symlink() {
            bail!(
                "{} is a symbolic link: refusing to use it (someone could point it at another file); delete it and proto makes a new one",
                path.display()
            );
        }
        let mode = meta.permissions().mode() & 0o777;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me && meta.uid() != 0 {
            bail!(
                "{} belongs to user {}, not to you (user {me}): refusing to trust it; use a certificate directory of your own: set {CHOOSE_A_DIRECTORY}",
                path.display(),
                meta.uid()
            );
        }
        let what = if is_dir { "directory" } else { "file" };
        if mode & 0o022 != 0 {
            bail!(
                "the certificate {what} {} is writable by other users (mode {mode:04o}): anyone could replace the CA clients trust; fix it with: chmod go-w {}",
                path.display(),
                path.display()
            );
        }
        if private_key && mode & 0o077 != 0 {
            bail!(
                "the private key {} is readable by other users (mode {mode:04o}): fix it with: chmod 600 {} (or delete the directory to start afresh)",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, private_key);
    Ok(())
}

/// Whether `e` (from creating a file) means the directory is read-only to us.
fn is_read_only(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied
                || io.raw_os_error() == Some(libc::EROFS)
        })
}

/// Reads a file in the certificate directory without following a symbolic
/// link at its name.
fn read_no_follow(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            anyhow::anyhow!(
                "{} is a symbolic link: refusing to follow it; delete it and proto makes a new one",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("reading {}", path.display()))
        }
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

/// Every PEM certificate in `path`.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_no_follow(path)?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))
}

/// The first PEM private key (PKCS#8, SEC1 or PKCS#1) in `path`.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_no_follow(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{} is not a PEM file", path.display()))?
        .with_context(|| format!("{} holds no private key", path.display()))
}

/// Writes `bytes` to `path` via a temporary file and a rename, so a reader
/// never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// Like [`write_file`], readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// Writes through a temporary file with an unguessable name in the same
/// directory, created exclusively (`O_CREAT|O_EXCL`: never an existing file,
/// nor a symbolic link planted there, `O_NOFOLLOW`) with its final mode
/// from the start, then renamed over `path` (atomic: readers see the old
/// file or the new one). A leftover temporary file from a crash is never
/// reused.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let unique: u64 = rand_u64();
        let tmp = dir.join(format!(".{name}.{}.{unique:016x}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode).custom_flags(libc::O_NOFOLLOW);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                attempt += 1;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "writing {} (through {})",
                    path.display(),
                    tmp.display()
                )))
            }
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// 64 unpredictable bits from the operating system (ring's generator, which
/// reads getrandom).
fn rand_u64() -> u64 {
    use rustls::crypto::ring::default_provider;
    let mut bytes = [0u8; 8];
    if default_provider().secure_random.fill(&mut bytes).is_err() {
        // Unreachable on Linux; O_EXCL still refuses any existing file.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (now.as_nanos() as u64).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

/// An exclusive `flock` on a file, released on drop.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(path: &Path) -> anyhow::Result<DirLock> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let file = options
            .open(path)
            .with_context(|| format!("creating the lock file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor we own; blocks until free.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc != 0 {
                bail!(
                    "cannot lock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "proto-certs-{tag}-{}-{}",
            std::process::id(),
            crate::units::monotonic_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn creates_then_reuses_then_extends() {
        let dir = CertDir::new(temp_dir("reuse"));
        let first = dir.load_or_create(&[]).unwrap();
        assert_eq!(first.created, vec!["CA", "server certificate"]);
        let second = dir.load_or_create(&[]).unwrap();
        assert!(second.created.is_empty());
        assert_eq!(first.fingerprint(), second.fingerprint());
        // A new name re-issues the server certificate under the same CA.
        let third = dir.load_or_create(&["10.1.2.3".into()]).unwrap();
        assert_eq!(third.created, vec!["server certificate"]);
        assert_eq!(third.ca, first.ca);
        assert!(covers(
            third.ca.as_ref().unwrap(),
            &third.chain,
            &["10.1.2.3".into(), "localhost".into()]
        ));
        assert!(!covers(
            third.ca.as_ref().unwrap(),
            &third.chain,
            &["example.org".into()]
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.server_key())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others");
        }
        let _ = std::fs::remove_dir_all(&dir.dir);
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_or_key_open_to_others_is_refused_with_the_fix() {
        let dir = CertDir::new(temp_dir("open"));
        dir.load_or_create(&[]).unwrap();
        chmod(&dir.dir, 0o777);
        let err = format!("{:#}", dir.load_or_create(&[]).unwrap_err());
        assert!(
            err.contains("writable by other users") && err.contains("chmod go-w"),
            "{err}"
        );
        chmod(&dir.dir, 0o755); // readable by others is fine for the directory
        dir.load_or_create(&[]).unwrap();
        chmod(&dir.server_key(), 0o644);
        let err = format!("{:#}", dir.load_or_create(&[]).unwrap_err());
        assert!(
            err.contains("readable by other users") && err.contains("chmod 600"),
            "{err}"
        );
        chmod(&dir.server_key(), 0o600);
        chmod(&dir.ca_cert(), 0o666);
        let err = format!("{:#}", dir.load_or_create(&[]).unwrap_err());
        assert!(err.contains("ca.pem is writable by other users"), "{err}");
        let _ = std::fs::remove_dir_all(&dir.dir);
    }

    #[cfg(unix)]
    #[test]
    fn planted_symbolic_links_are_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = CertDir::new(temp_dir("symlink"));
        std::fs::create_dir_all(&dir.dir).unwrap();
        chmod(&dir.dir, 0o700);
        // The old fixed temporary names, pointing at another user's file.
        let victim = dir.dir.with_extension("victim");
        std::fs::write(&victim, b"not yours").unwrap();
        for tmp in ["ca.tmp", "server.tmp", "ca.key.tmp", "server.key.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.dir.join(tmp)).unwrap();
        }
        dir.load_or_create(&[]).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"not yours");
        for key in [dir.ca_key(), dir.server_key()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        // A key that is a symbolic link is refused, not read.
        std::fs::remove_file(dir.server_key()).unwrap();
        std::os::unix::fs::symlink(&victim, dir.server_key()).unwrap();
        let err = format!("{:#}", dir.load_or_create(&[]).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        let _ = std::fs::remove_dir_all(&dir.dir);
        let _ = std::fs::remove_file(&victim);
    }

    #[test]
    fn bind_addresses_name_themselves_but_loopback_adds_nothing() {
        assert!(names_for_bind("127.0.0.1".parse().unwrap()).is_empty());
        assert_eq!(
            names_for_bind("10.9.8.7".parse().unwrap()),
            vec!["10.9.8.7"]
        );
        for name in names_for_bind("0.0.0.0".parse().unwrap()) {
            let ip: IpAddr = name.parse().unwrap();
            assert!(ip.is_ipv4() && !ip.is_loopback());
        }
    }

    #[test]
    fn the_server_certificate_has_no_basic_constraints() {
        // Encoding "cA: FALSE" explicitly breaks strict parsers (aioquic).
        let dir = CertDir::new(temp_dir("bc"));
        let id = dir.load_or_create(&[]).unwrap();
        let oid = [0x06, 0x03, 0x55, 0x1D, 0x13]; // 2.5.29.19 basicConstraints
        let der = id.chain[0].as_ref();
        assert!(!der.windows(oid.len()).any(|w| w == oid));
        let ca = id.ca.as_ref().unwrap().as_ref();
        assert!(ca.windows(oid.len()).any(|w| w == oid), "the CA has them");
        let _ = std::fs::remove_dir_all(&dir.dir);
    }

    #[test]
    fn fingerprints_look_like_openssl() {
        let fp = fingerprint(&CertificateDer::from(vec![1u8, 2, 3]));
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("03:90:58:C6"));
    }
}
