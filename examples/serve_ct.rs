// Experiment: the TCP echo server on a current-thread runtime.
fn main() -> anyhow::Result<()> {
    let flavor = std::env::args().nth(1).unwrap_or_default();
    let rt = if flavor == "ct" {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    rt.block_on(async {
        let listeners = proto::server::Listeners {
            tcp: Some(proto::server::bind_tcp("127.0.0.1:18083".parse()?)?),
            ..Default::default()
        };
        let config = proto::server::ServerConfig::quiet_default()?;
        proto::server::run(listeners, config, tokio_util::sync::CancellationToken::new()).await?;
        Ok(())
    })
}
