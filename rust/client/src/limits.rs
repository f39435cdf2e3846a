//! Size limits both client connections (HTTP/2 and lean) enforce.

/// Largest message we send or accept (call arguments, results, status).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
