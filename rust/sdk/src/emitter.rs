//! The sending side of a streaming call.

use std::{future::Future, sync::Arc};

use norgopolis_proto::module_communication::MessagePack;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{codec, conn_probe::ConnProbe, stream_probe::StreamProbe, Error};

/// How to learn that the connection has written what it was given.
#[derive(Clone, Debug)]
pub(crate) enum ConnFlush {
    /// The HTTP/2 connection, watched through its I/O.
    H2(Arc<ConnProbe>),
    /// The lean transport's writer queue, which answers flush markers.
    Lean(mpsc::UnboundedSender<norgopolis_proto::lean_frame::Outgoing>),
}

impl ConnFlush {
    /// Resolves once everything queued before the call is written.
    async fn flushed(&self) -> Result<(), Error> {
        match self {
            ConnFlush::H2(probe) => probe.flushed().await.map_err(|_| caller_gone()),
            ConnFlush::Lean(out) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                out.send(norgopolis_proto::lean_frame::Outgoing::Flushed(tx))
                    .map_err(|_| caller_gone())?;
                rx.await.map_err(|_| caller_gone())
            }
        }
    }
}

/// Sends a call's results to the caller, one item at a time, as they are
/// produced.
///
/// The channel behind it is small and bounded: [`Emitter::send`] waits while
/// the caller is slower than the handler, so a stream never piles up in
/// memory. Once the caller has gone away (cancelled the call, or the router
/// closed the connection) every send fails with [`crate::Code::Cancelled`],
/// which a handler usually passes on with `?`.
///
/// Clones send into the same call; items sent after the handler returned
/// are dropped.
#[derive(Clone, Debug)]
pub struct Emitter {
    tx: mpsc::Sender<MessagePack>,
    stream: Arc<StreamProbe>,
    conn: ConnFlush,
}

impl Emitter {
    pub(crate) fn new(
        tx: mpsc::Sender<MessagePack>,
        stream: Arc<StreamProbe>,
        conn: ConnFlush,
    ) -> Self {
        Self { tx, stream, conn }
    }

    /// Encodes `item` as MessagePack (structs as maps) and sends it.
    ///
    /// The item is encoded before the returned future first runs, so it
    /// need not outlive the call (nor be `Sync`).
    pub fn send<T: Serialize + ?Sized>(
        &self,
        item: &T,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        let data =
            codec::encode(item).map_err(|e| Error::internal(format!("cannot encode result: {e}")));
        async move { self.send_encoded(data?).await }
    }

    /// Sends one already encoded MessagePack value as is.
    pub async fn send_encoded(&self, data: Vec<u8>) -> Result<(), Error> {
        self.tx
            .send(MessagePack { data })
            .await
            .map_err(|_| caller_gone())?;
        self.stream.note_sent();
        Ok(())
    }

    /// Waits until every item sent so far has been written to the
    /// transport (the router's pipe), not just queued.
    ///
    /// For a module about to end its own process (`std::process::exit`)
    /// without losing the items it already produced. Items are written as
    /// fast as the caller reads them anyway, so ordinary handlers never need
    /// this.
    pub async fn flush(&self) -> Result<(), Error> {
        tokio::select! {
            handed = self.stream.handed_over() => handed.map_err(|_| caller_gone())?,
            () = self.tx.closed() => return Err(caller_gone()),
        }
        self.conn.flushed().await
    }

    /// Whether the caller has gone away, so that further sends would fail.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the caller has gone away; for handlers that produce
    /// nothing for a long time but should stop early when cancelled.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

fn caller_gone() -> Error {
    Error::cancelled("the caller went away")
}
