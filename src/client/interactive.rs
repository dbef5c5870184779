//! Interactive mode: what you type goes to the server, what comes back is
//! printed, like `nc`. End with Ctrl-D (end of input).

use super::{MessageClient, StreamClient};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Text lines over a stream: bytes are copied both ways unchanged, so this
/// behaves exactly like `nc`. At end of input we half-close (send FIN) and
/// print the remaining replies until the server closes or `linger` passes
/// without a byte.
pub async fn lines<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    linger: Duration,
) -> anyhow::Result<()> {
    let (mut from_server, mut to_server) = tokio::io::split(stream);
    let upload = async {
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut to_server).await?;
        to_server.shutdown().await?;
        anyhow::Ok(())
    };
    let download = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            let n = from_server.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // A closed stdout (`| head`) ends the session quietly.
            match stdout.write_all(&buf[..n]).await {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                written => written?,
            }
            match stdout.flush().await {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                flushed => flushed?,
            }
        }
        anyhow::Ok(())
    };
    tokio::pin!(download);
    tokio::select! {
        done = &mut download => return done,
        sent = upload => sent?,
    }
    // Input is over: give the server time to answer what is in flight.
    match tokio::time::timeout(linger, download).await {
        Ok(done) => done,
        Err(_) => Ok(()),
    }
}

/// Framed: each input line becomes one request frame; each reply's payload
/// is printed with its id and round-trip time.
pub async fn framed<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut StreamClient<S>,
) -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = input.next_line().await? {
        let reply = client.exchange_frame(line.as_bytes()).await?;
        if !print_frame_reply(&reply) {
            break;
        }
    }
    Ok(())
}

/// UDP: each input line is sent as one datagram (without its newline); a
/// lost reply is reported and the session goes on, as UDP itself does.
pub async fn datagrams(client: &mut impl MessageClient, framed: bool) -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = input.next_line().await? {
        if framed {
            match client.exchange_frame(line.as_bytes()).await {
                Ok(reply) if !print_frame_reply(&reply) => break,
                Ok(_) => {}
                Err(e) => eprintln!("proto: {e:#}"),
            }
        } else {
            match client.exchange(line.as_bytes()).await {
                Ok(reply) if !print_line(format_args!("{}", String::from_utf8_lossy(&reply))) => {
                    break
                }
                Ok(_) => {}
                Err(e) => eprintln!("proto: {e:#}"),
            }
        }
    }
    Ok(())
}

/// Prints a frame's payload with its id and round trip; false when stdout
/// is closed (the session then ends quietly).
fn print_frame_reply(reply: &crate::wire::Frame) -> bool {
    let rtt = crate::units::monotonic_nanos().saturating_sub(reply.timestamp);
    print_line(format_args!(
        "{}  (frame id {}, round trip {})",
        String::from_utf8_lossy(&reply.payload),
        reply.id,
        crate::units::format_duration(Duration::from_nanos(rtt))
    ))
}

/// `println!` without the panic: false when stdout is closed.
fn print_line(line: std::fmt::Arguments) -> bool {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
