//! `notes`: the bundled Neorg workspace index module (see the crate docs).

use std::{process::ExitCode, sync::Arc};

use norgopolis_notes::{config::Config, notes::Notes, service, watch};
use tokio::sync::{mpsc, watch as signal};

#[tokio::main]
async fn main() -> ExitCode {
    norgopolis_sdk::init_logging();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // A bad config is reported, not fatal: every call names it.
            tracing::error!("{e}");
            return service::broken_module(e.to_string()).run().await;
        }
    };
    let notes = Arc::new(Notes::new(config));
    let (ready_tx, ready_rx) = signal::channel(false);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    tokio::spawn(publish_changes(events_rx));

    // Watch first, then index, so no change falls between the two.
    let watching = watch::start(notes.clone(), move |changes| {
        let _ = events_tx.send(changes);
    });
    if let Err(e) = watching {
        tracing::warn!("cannot watch the workspaces, changes need reindex: {e}");
    }
    let indexing = notes.clone();
    tokio::task::spawn_blocking(move || {
        indexing.initial_index();
        let _ = ready_tx.send(true);
    });

    let code = service::module(notes.clone(), ready_rx).run().await;
    notes.stop_following();
    let _ = tokio::task::spawn_blocking(move || notes.save_if_dirty()).await;
    code
}

/// Publishes `notes.changed` for every change, in order. Without a router
/// (a module run by hand) there is no one to tell.
async fn publish_changes(
    mut batches: mpsc::UnboundedReceiver<Vec<norgopolis_notes::notes::Change>>,
) {
    let routed = norgopolis_sdk::env::socket_path().is_some();
    while let Some(changes) = batches.recv().await {
        if !routed {
            continue;
        }
        for change in changes {
            if let Err(e) = norgopolis_sdk::publish("notes.changed", &change).await {
                tracing::debug!("cannot publish notes.changed: {e}");
            }
        }
    }
}
