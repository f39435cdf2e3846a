//! Calling other modules, and publishing events, through the router.
//!
//! A module is started with the router's socket in `NORGOPOLIS_SOCKET`;
//! [`router`] connects a [`Client`] to it like any front end, with two
//! differences: the session does not keep the router alive (a module must
//! never pin the server it runs under), and it never starts a router of
//! its own. Calls made through it may come back into this very module
//! (`a.f` calls `b.g`, which calls `a.h`): every call runs in its own task,
//! so that does not deadlock.
//!
//! ```no_run
//! use norgopolis_sdk::{rmpv::Value, Module};
//!
//! # async fn demo() -> std::process::ExitCode {
//! Module::new("greeter")
//!     .function("shout", |text: String| async move {
//!         let router = norgopolis_sdk::router().await?;
//!         let upper: Vec<String> = router.call("text", "upper", &text).await?;
//!         norgopolis_sdk::publish("greeter.shouted", &text).await?;
//!         Ok(upper.concat())
//!     })
//!     .run()
//!     .await
//! # }
//! ```

use norgopolis_client::ConnectOptions;
pub use norgopolis_client::{Client, ClientError};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::{env, Code, Error};

/// The shared connection: one session per module process.
static ROUTER: Mutex<Option<Client>> = Mutex::const_new(None);

impl From<ClientError> for Error {
    /// Keeps the code and message of a failed call, so a module relaying
    /// another module's error hands it on unchanged.
    fn from(err: ClientError) -> Self {
        Error::new(err.code(), err.message())
    }
}

/// How [`router`] connects: the socket from `NORGOPOLIS_SOCKET`, client
/// kind `"module"`, named after the module, not keeping the server alive,
/// never spawning one. Fails with `FailedPrecondition` when the module was
/// not started by a router.
pub fn router_options() -> Result<ConnectOptions, Error> {
    let socket = env::socket_path().ok_or_else(|| {
        Error::new(
            Code::FailedPrecondition,
            format!(
                "{} is not set: this module was not started by a norgopolis router",
                env::SOCKET_ENV
            ),
        )
    })?;
    let name = env::module_name().unwrap_or_else(|| "module".to_owned());
    Ok(ConnectOptions::new("module")
        .client_name(name)
        .socket(socket)
        .spawn(false)
        .keeps_server_alive(false))
}

/// A client attached to the router that started this module, shared by
/// every caller in the process (connected on first use, and again if the
/// session ended). Use it to call other modules ([`Client::call`],
/// [`Client::invoke`]) or for any control call.
pub async fn router() -> Result<Client, Error> {
    let mut cached = ROUTER.lock().await;
    if let Some(client) = cached.as_ref().filter(|c| c.is_attached()) {
        return Ok(client.clone());
    }
    let client = Client::connect(router_options()?).await?;
    *cached = Some(client.clone());
    Ok(client)
}

/// Publishes an event as this module (`NORGOPOLIS_MODULE`) to every
/// attached front end; `payload` is encoded as MessagePack. Returns how
/// many sessions it reached.
pub async fn publish<T: Serialize + ?Sized>(topic: &str, payload: &T) -> Result<u32, Error> {
    let bytes = norgopolis_proto::msgpack::encode(payload)
        .map_err(|e| Error::invalid_argument(format!("cannot encode the event payload: {e}")))?;
    let module = env::module_name().unwrap_or_default();
    Ok(router().await?.publish(&module, topic, bytes).await?)
}
