//! proto's echo servers on the lab's server host, clients on its client
//! host: the library API `proto compare` and `proto bench` use to measure
//! across the emulated link within one process.
//!
//! Sockets belong to the network namespace of the thread that creates
//! them. So the servers' sockets are bound on a thread inside the server
//! namespace (then driven by the caller's tokio runtime), and client work
//! runs on a thread inside the client namespace with a runtime of its own:
//! every socket it opens, and every thread it starts, lives on the client
//! host.

use super::{Lab, LabConfig, LinkCounters};
use crate::server::{self, Listeners, ServerConfig, ServerSummary};
use crate::transport::{certs::CertDir, tcp};
use anyhow::Context;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running lab with `proto serve all` on its server host.
pub struct LabServers {
    lab: Arc<Lab>,
    /// `(service, address)` of every server, as clients dial them.
    pub addresses: crate::server::ServiceAddresses,
    /// Why TCP Fast Open is unavailable, if it is.
    pub fast_open: Result<(), String>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<ServerSummary>>,
}

impl LabServers {
    /// Builds the lab and starts the servers on its server host (TCP and
    /// UDP on 8081, TLS and QUIC on 8443), with TCP Fast Open allowed on
    /// both hosts. Must be called inside a tokio runtime.
    pub async fn start(config: LabConfig) -> anyhow::Result<LabServers> {
        LabServers::start_with_certs(config, &CertDir::default_dir()?).await
    }

    /// Like [`LabServers::start`], with the certificates in `certs`.
    pub async fn start_with_certs(
        config: LabConfig,
        certs: &CertDir,
    ) -> anyhow::Result<LabServers> {
        let lab = Arc::new(
            tokio::task::spawn_blocking(move || Lab::start(config))
                .await
                .context("starting the lab")??,
        );
        let server_ip = lab.server_ip();
        // Fast Open needs the kernel's permission on both hosts (per namespace).
        let fast_open = lab
            .in_client(enable_fast_open)
            .and(lab.in_server(enable_fast_open));
        // The certificate names the lab address, so clients verify it as is.
        let server_config = ServerConfig::quiet_with_certs(certs, &[server_ip.to_string()])?;
        let listeners = lab
            .in_server(|| {
                Listeners::bind_all(
                    server_ip,
                    crate::wire::limits::PLAIN_PORT,
                    crate::wire::limits::SECURE_PORT,
                    crate::wire::sctp::UDP_ENCAPS_PORT,
                )
            })
            .context("binding the servers on the lab's server host")?;
        let fast_open = fast_open.and_then(|()| match &listeners.tls {
            Some(l) => tcp::set_fast_open_listener(l, 64).map_err(|e| format!("{e:#}")),
            None => Ok(()),
        });
        let addresses = listeners.addresses();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(listeners, server_config, shutdown.clone()));
        Ok(LabServers {
            lab,
            addresses,
            fast_open,
            shutdown,
            task,
        })
    }

    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Runs `work` on the client host: on a thread inside the client
    /// namespace, with its own current-thread tokio runtime. The caller's
    /// runtime is not blocked meanwhile (the servers keep running on it).
    pub async fn on_client<T, F, Fut>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let lab = self.lab.clone();
        tokio::task::spawn_blocking(move || {
            lab.in_client(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the client's runtime")?;
                anyhow::Ok(runtime.block_on(work()))
            })
        })
        .await
        .context("the client thread failed")?
    }

    /// Stops the servers and tears the lab down.
    pub async fn stop(self) -> anyhow::Result<(ServerSummary, LinkCounters)> {
        self.shutdown.cancel();
        let summary = self.task.await.context("the in-process server failed")??;
        let counters = match Arc::try_unwrap(self.lab) {
            Ok(lab) => tokio::task::spawn_blocking(move || lab.shutdown())
                .await
                .context("tearing the lab down")?,
            Err(lab) => lab.counters(),
        };
        Ok((summary, counters))
    }
}

/// Lets this thread's network namespace use TCP Fast Open as client and
/// server (`net.ipv4.tcp_fastopen = 3`). Call it on a thread inside the namespace.
fn enable_fast_open() -> Result<(), String> {
    std::fs::write(tcp::FAST_OPEN_SYSCTL, "3")
        .map_err(|e| format!("cannot write {}: {e}", tcp::FAST_OPEN_SYSCTL))
}
