//! Reading a response body within bounds, whatever the server sends.
//!
//! A body is streamed chunk by chunk and aborted as soon as it passes its cap (or at once when
//! its Content-Length already does), so a 1 GB answer costs at most the cap. Memory across
//! requests in flight is bounded too: any number of bodies may grow up to [`LARGE_BODY`], but
//! only one at a time beyond it — a body that grows past it waits for the process-wide large
//! lane, and holds the lane (with the response) until the caller drops the response. So the
//! peak is about `in_flight × LARGE_BODY + cap`, not `in_flight × cap`.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this size need no lane.
pub const LARGE_BODY: usize = 4 * 1024 * 1024;

/// Held by a response whose body is larger than [`LARGE_BODY`]; released when it is dropped.
#[derive(Debug, Clone)]
pub struct LargeBodyLane(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

fn lane() -> Arc<Semaphore> {
    static LANE: OnceLock<Arc<Semaphore>> = OnceLock::new();
    LANE.get_or_init(|| Arc::new(Semaphore::new(1))).clone()
}

#[derive(Debug)]
pub(crate) enum BodyError {
    /// Past the cap: `read` bytes were read before stopping.
    TooLarge {
        read: u64,
        cap: u64,
        declared: bool,
    },
    Transport(reqwest::Error),
}

/// Reads the whole body, stopping at `cap` bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
) -> Result<(Bytes, Option<LargeBodyLane>), BodyError> {
    if resp.content_length().is_some_and(|l| l > cap) {
        return Err(BodyError::TooLarge {
            read: 0,
            cap,
            declared: true,
        });
    }
    let mut buf = BytesMut::new();
    let mut held: Option<LargeBodyLane> = None;
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        let len = buf.len() as u64 + chunk.len() as u64;
        if len > cap {
            return Err(BodyError::TooLarge {
                read: len,
                cap,
                declared: false,
            });
        }
        if held.is_none() && len as usize > LARGE_BODY {
            // The lane cannot be closed, so acquiring only fails if it were: then go on
            // without it rather than fail a request.
            held = lane()
                .acquire_owned()
                .await
                .ok()
                .map(|p| LargeBodyLane(Arc::new(p)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), held))
}
