//! A minimal separate client process for tests that must kill a client:
//! attaches to `$NORGOPOLIS_SOCKET`, prints `attached <server pid>`, then
//! runs `echo.sleep(<ms>)` and prints `done`.

use norgopolis_tests::{attach, call_all, connect};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let socket = std::env::var_os("NORGOPOLIS_SOCKET")
        .ok_or_else(|| anyhow::anyhow!("NORGOPOLIS_SOCKET unset"))?;
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600_000);
    let channel = connect(socket.as_ref()).await?;
    let session = attach(&channel, true).await?;
    println!("attached {}", session.welcome.server_pid);
    call_all(&channel, "echo", "sleep", rmpv::Value::from(ms)).await?;
    println!("done");
    drop(session);
    Ok(())
}
