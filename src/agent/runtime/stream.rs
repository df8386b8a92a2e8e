//! The Unix stream socket (`dogstatsd_stream_socket`): accepts clients on
//! one shard and reads each connection in its own task. Every frame
//! ([`crate::stream_frame`]) goes through the tap and the shard exactly
//! like a datagram of the Unix datagram socket.
//!
//! Bounds: at most `max_connections` clients at once (further ones wait in
//! the listen backlog: backpressure, logged once, counted) and frames of at
//! most `dogstatsd_buffer_size` bytes. A bad frame (too large, zero length)
//! closes that connection only, with one log line; frames decoded before
//! it are kept.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncRead;
use glommio::net::{UnixListener, UnixStream};

use super::{or_stop, ShardCtx};
use crate::agent::clock::{mono_nanos, unix_now};
use crate::core::stream_frame::FrameDecoder;

/// After the stop signal, a connection is done once a read finds nothing
/// for this long.
const STOP_READ_WAIT: Duration = Duration::from_millis(50);
/// While at the connection bound, how often a free slot is looked for.
const FULL_RETRY: Duration = Duration::from_millis(10);

/// The stream socket of one shard.
#[derive(Debug, Clone)]
pub struct StreamSocket {
    /// Socket path (a stale socket file was removed before).
    pub path: PathBuf,
    /// `EDGESTAT_STREAM_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Largest frame (`dogstatsd_buffer_size`).
    pub max_frame_bytes: usize,
    /// `dogstatsd_stream_log_too_big`: log the start of a too-large frame.
    pub log_too_big: bool,
    /// Counters (read by `edgestat status`).
    pub stats: Arc<StreamStats>,
}

/// Counters of the stream socket.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Frames read.
    pub frames: AtomicU64,
    /// Connections closed because of a bad frame (too large or empty).
    pub bad_frames: AtomicU64,
    /// Connections that ended in the middle of a frame (the partial frame is dropped).
    pub truncated: AtomicU64,
    /// Times an accept waited because `EDGESTAT_STREAM_MAX_CONNECTIONS` clients were connected.
    pub connection_limit_waits: AtomicU64,
}

/// Binds the socket (mode 0o722 like the Agent) and starts the accept task.
pub(super) fn listen(s: StreamSocket, ctx: Rc<ShardCtx>) -> Result<glommio::Task<()>, super::RuntimeError> {
    let listener = UnixListener::bind(&s.path).map_err(|e| super::RuntimeError::Bind {
        what: format!("unix stream socket {}", s.path.display()),
        source: e.into(),
    })?;
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o722)) {
        tracing::warn!(error = %e, path = %s.path.display(), "cannot set the unix stream socket mode");
    }
    tracing::info!(path = %s.path.display(), max_connections = s.max_connections, "unix stream socket listening");
    Ok(glommio::spawn_local(accept_loop(listener, s, ctx)))
}

/// Makes a pending accept return at shutdown (the accept loop then sees
/// the stop flag).
pub(super) fn wake_accept(path: &Path) {
    let _ = std::os::unix::net::UnixStream::connect(path);
}

async fn accept_loop(listener: UnixListener, s: StreamSocket, ctx: Rc<ShardCtx>) {
    let live = Rc::new(Cell::new(0usize));
    let mut limit_logged = false;
    while !ctx.stop.is_set() {
        if live.get() >= s.max_connections {
            s.stats.connection_limit_waits.fetch_add(1, Ordering::Relaxed);
            if !limit_logged {
                limit_logged = true;
                tracing::warn!(max = s.max_connections, "unix stream socket: connection limit reached (EDGESTAT_STREAM_MAX_CONNECTIONS); new clients wait until one disconnects");
            }
            glommio::timer::sleep(FULL_RETRY).await;
            continue;
        }
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "unix stream socket: accept failed");
                glommio::timer::sleep(FULL_RETRY).await;
                continue;
            }
        };
        if ctx.stop.is_set() {
            break;
        }
        s.stats.accepted.fetch_add(1, Ordering::Relaxed);
        s.stats.open.fetch_add(1, Ordering::Relaxed);
        live.set(live.get() + 1);
        glommio::spawn_local(serve(conn, s.clone(), ctx.clone(), live.clone())).detach();
    }
    // Each connection drains what its client already sent (it ends at its
    // first idle read), then this reader is done.
    while live.get() > 0 {
        glommio::timer::sleep(FULL_RETRY).await;
    }
}

async fn read_some(conn: &mut UnixStream, buf: &mut [u8]) -> glommio::Result<usize, ()> {
    let n = std::future::poll_fn(|cx| Pin::new(&mut *conn).poll_read(cx, buf)).await?;
    Ok(n)
}

async fn serve(mut conn: UnixStream, s: StreamSocket, ctx: Rc<ShardCtx>, live: Rc<Cell<usize>>) {
    let mut dec = FrameDecoder::new(s.max_frame_bytes);
    loop {
        // Waits for data or the stop signal, no timer. After the stop,
        // what the client already sent is still taken: reads go on until
        // one finds nothing for STOP_READ_WAIT (dropping a timed-out read
        // loses nothing: glommio reads a stream only once it is readable).
        let r = match or_stop(read_some(&mut conn, dec.spare()), &ctx.stop).await {
            Some(r) => r,
            None => match glommio::timer::timeout(STOP_READ_WAIT, read_some(&mut conn, dec.spare())).await {
                Err(glommio::GlommioError::TimedOut(_)) => Ok(0),
                r => r,
            },
        };
        let n = match r {
            Ok(0) => {
                if dec.pending() > 0 {
                    s.stats.truncated.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bytes = dec.pending(), "unix stream socket: client disconnected in the middle of a frame; that partial frame is dropped");
                }
                break;
            }
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "unix stream socket: read failed; closing the connection");
                break;
            }
        };
        dec.filled(n);
        let mut frames = 0;
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    frames += 1;
                    ctx.tap.datagram(frame);
                    ctx.state.borrow_mut().handle_datagram_from(
                        crate::core::shard::Transport::Uds,
                        frame,
                        unix_now(),
                        mono_nanos(),
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    s.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    if s.log_too_big {
                        let start = String::from_utf8_lossy(&dec.pending_bytes()[..dec.pending().min(68)]).into_owned();
                        tracing::warn!(error = %e, starts_with = %start, "unix stream socket: bad frame; closing this connection (other clients are not affected)");
                    } else {
                        tracing::warn!(error = %e, "unix stream socket: bad frame; closing this connection (other clients are not affected)");
                    }
                    s.stats.frames.fetch_add(frames, Ordering::Relaxed);
                    return close(&s, &live);
                }
            }
        }
        s.stats.frames.fetch_add(frames, Ordering::Relaxed);
        if frames > 0 {
            ctx.changed.raise();
        }
        glommio::executor().yield_if_needed().await;
    }
    close(&s, &live);
}

fn close(s: &StreamSocket, live: &Cell<usize>) {
    live.set(live.get().saturating_sub(1));
    s.stats.open.fetch_sub(1, Ordering::Relaxed);
}
