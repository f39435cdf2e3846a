//! Registered functions, with their argument types erased so that one
//! table can hold them all.

use std::{future::Future, pin::Pin, sync::Arc};

use serde::{de::DeserializeOwned, Serialize};

use crate::{codec, Emitter, Error};

/// A started call, ready to be spawned.
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

type Start = dyn Fn(&[u8], Emitter) -> Result<CallFuture, String> + Send + Sync;

/// One function of a module.
pub(crate) struct Function {
    start: Box<Start>,
    /// What the arguments should look like, for error messages.
    pub(crate) shape: String,
}

impl Function {
    /// A function that sends its results through an [`Emitter`].
    pub(crate) fn streaming<A, F, Fut>(handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(A, Emitter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self {
            shape: codec::shape_of::<A>(),
            start: Box::new(move |bytes, out| {
                let args: A = codec::decode(bytes)?;
                let handler = Arc::clone(&handler);
                // The handler runs inside the future, so that even building
                // its future happens in the call's task (where a panic is
                // caught and becomes an error for this call only).
                Ok(Box::pin(async move { handler(args, out).await }))
            }),
        }
    }

    /// A function that answers with exactly one value.
    pub(crate) fn plain<A, R, F, Fut>(handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        Self::streaming(move |args: A, out: Emitter| {
            let result = handler(args);
            async move { out.send(&result.await?).await }
        })
    }

    /// Decodes `args` and prepares the call; the error is the decoder's
    /// complaint.
    pub(crate) fn start(&self, args: &[u8], out: Emitter) -> Result<CallFuture, String> {
        (self.start)(args, out)
    }
}
