//! Panics stay inside the library: the default hook would print to stderr,
//! which is Neovim's terminal. Our hook only remembers the message, which
//! the request that panicked then reports as its error. (Each cdylib has its
//! own copy of std, so this hook is ours alone.)

use std::sync::Mutex;

static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook of this library's std.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST.lock() {
            *last = Some(format!("{msg}{at}"));
        }
    }));
}

/// The most recent panic message, if any.
pub fn last() -> Option<String> {
    LAST.lock().ok().and_then(|last| last.clone())
}
