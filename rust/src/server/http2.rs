//! HTTP/2 limits of every connection, chosen so that a server that falls
//! behind holds its clients back instead of closing their connections.
//!
//! h2 guards against floods of tiny DATA frames: each frame of under 256
//! bytes that it holds unread costs `256 - len` from a budget of half the
//! connection's flow-control window, and when the budget is spent it closes
//! the connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames"),
//! failing every call on it. hyper-based clients (tonic; our own load
//! generator) make such frames in ordinary use: a call claims one byte of
//! window before it sends its message, and when the window is short that
//! one byte goes out as a frame of its own. So when the server falls behind
//! (a burst it parses slower than it comes, a paused process), every call
//! waiting for window leaves a one-byte frame unread, and with no limit on
//! streams (tonic's default) about 2,000 of them closed the connection: at
//! 2.5 times the mlp's capacity on one core, most calls failed with
//! `UNKNOWN "transport error"` instead of being answered or refused.
//!
//! Bounding the streams of a connection bounds those frames: a stream holds
//! at most [`SMALL_FRAMES_PER_STREAM`] of them (its one-byte claim, and the
//! piece a short window update may cut from its message), so the budget
//! covers [`MAX_STREAMS`] streams. A client with more calls than that keeps
//! the rest until a stream ends, as HTTP/2 intends; a server that answers or
//! refuses within deadlines has far fewer open. The window stays hyper's
//! default: a larger one would raise the limit, and also the requests a
//! connection holds unread when the server cannot parse them as fast as they
//! come, each waiting longer than the last.

/// Flow-control window of each connection, in bytes (hyper's default,
/// stated because the stream limit is derived from it).
pub(super) const CONNECTION_WINDOW: u32 = 1 << 20;

/// Small DATA frames one stream leaves unread at most.
const SMALL_FRAMES_PER_STREAM: u32 = 2;

/// The cost h2 counts against its budget for one small frame, at most.
const SMALL_FRAME_COST: u32 = 256;

/// Streams open at once on one connection.
pub(super) const MAX_STREAMS: u32 =
    CONNECTION_WINDOW / 2 / (SMALL_FRAMES_PER_STREAM * SMALL_FRAME_COST);

// The budget covers every stream a connection may open, and that is far
// more than a client keeps in flight on one connection.
const _: () =
    assert!(MAX_STREAMS * SMALL_FRAMES_PER_STREAM * SMALL_FRAME_COST <= CONNECTION_WINDOW / 2);
const _: () = assert!(MAX_STREAMS >= 1024);
