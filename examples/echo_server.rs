//! An uppercase TCP echo server in thirty lines — the lecture's first server.
//!
//! TCP hands the application a *byte stream*, not messages: one `read` may
//! return half a line or three lines. So the server frames messages itself,
//! here with newlines (the lines codec), and answers each line with
//! `proto::echo::uppercase` — the same function every proto server uses.
//!
//! Run it, then talk to it from another terminal:
//!
//! ```text
//! cargo run --example echo_server            # listens on 127.0.0.1:8081
//! nc localhost 8081                          # type "hello", get "HELLO"
//! ```
//!
//! `-- 127.0.0.1:0` picks a free port instead; `-- --once` serves one client,
//! then exits.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LinesCodec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    let address = std::env::args().skip(1).find(|a| a != "--once");
    let listener = TcpListener::bind(address.as_deref().unwrap_or("127.0.0.1:8081")).await?;
    let port = listener.local_addr()?.port();
    println!(
        "listening on {} (try: nc localhost {port})",
        listener.local_addr()?
    );
    loop {
        let (socket, peer) = listener.accept().await?;
        // One task per connection: a slow client never holds up the others.
        let client = tokio::spawn(async move {
            // Lines of at most 64 KiB: a client cannot make us buffer forever.
            let mut lines = Framed::new(socket, LinesCodec::new_with_max_length(64 * 1024));
            while let Some(Ok(line)) = lines.next().await {
                let reply = proto::echo::uppercase(line.as_bytes());
                let reply = String::from_utf8_lossy(&reply).into_owned();
                if lines.send(reply).await.is_err() {
                    break; // the client went away
                }
            }
            println!("{peer} closed");
        });
        if once {
            return Ok(client.await?);
        }
    }
}
