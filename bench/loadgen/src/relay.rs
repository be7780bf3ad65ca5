//! A TCP relay with `TCP_NODELAY` on both sides that acknowledges upstream
//! data at once (`TCP_QUICKACK`, re-armed after every read).
//!
//! fake-anthropic's accepted sockets keep Nagle's algorithm on, and it writes
//! a streamed answer in two `writev` calls a fraction of a millisecond apart:
//! the second waits until the first is acknowledged, and a client whose
//! kernel delays its ACK (Linux: up to 40 ms) gets the rest of the stream
//! 40 ms late. Put in front of the fake, for the service and for the direct
//! calls alike, the relay removes that artefact from both paths; its own cost
//! (one loopback hop) is in both paths and cancels out of the difference.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub fn run(listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        // Scripts wait for this line to learn the port.
        println!("relay listening on http://{}", listener.local_addr()?);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (client, _) = accepted.context("accept")?;
                    tokio::spawn(async move {
                        if let Err(e) = connection(client, upstream).await {
                            eprintln!("relay: {e:#}");
                        }
                    });
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

async fn connection(client: TcpStream, upstream: SocketAddr) -> Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to {upstream}"))?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = copy(client_read, server_write, false);
    let down = copy(server_read, client_write, true);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, quickack: bool) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await.ok();
            return Ok(());
        }
        if quickack {
            // Sends the pending ACK now, so the sender's next write is not
            // held back by Nagle's algorithm.
            SockRef::from(from.as_ref()).set_tcp_quickack(true).ok();
        }
        to.write_all(&buf[..n]).await?;
    }
}
