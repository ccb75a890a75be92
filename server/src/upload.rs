//! Bounds on uploads in progress across the whole server, so uploads cannot starve reads: a byte
//! budget for the bodies being buffered, and a bound on how many are parsed and verified at once
//! (that work runs on the blocking pool, never on the async workers). An upload that cannot get
//! its share within the configured wait is refused with `503 UNAVAILABLE`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::cut_reason;
use crate::error::ApiError;

/// Budget reserved at a time for a body whose length was not declared.
const RESERVE_STEP: u64 = 256 * 1024;

/// The server-wide bounds on uploads; cheap to clone (the bounds are shared).
#[derive(Clone, Debug)]
pub struct UploadGate {
    /// One permit per upload being parsed, verified and stored.
    verifying: Arc<Semaphore>,
    /// One permit per byte of upload body held in memory.
    buffer: Arc<Semaphore>,
    /// How long an upload waits for a verification slot or for buffer space.
    wait: Duration,
}

impl Default for UploadGate {
    /// Four uploads verified at once, 64 MiB of bodies, a 5 s wait.
    fn default() -> Self {
        Self::new(4, 64 << 20, Duration::from_secs(5))
    }
}

/// What an upload holds while it is handled: its place among the uploads being verified and its
/// share of the buffer budget. Both are given back when this is dropped.
#[derive(Debug)]
pub struct UploadPermit {
    _verifying: OwnedSemaphorePermit,
    _buffer: Option<OwnedSemaphorePermit>,
}

/// An upload body read into memory, with the budget it occupies.
#[derive(Debug)]
pub struct BufferedBody {
    /// The body's bytes, in one buffer of the body's size that the caller may take over (the
    /// largest uploaded file keeps it, so it is never copied).
    pub bytes: Vec<u8>,
    budget: Option<OwnedSemaphorePermit>,
}

impl BufferedBody {
    /// Joins the body's budget to a verification slot and hands out the bytes: the budget stays
    /// held, for the bytes and what is parsed from them, until the permit is dropped.
    pub fn into_parts(self, verifying: OwnedSemaphorePermit) -> (Vec<u8>, UploadPermit) {
        (self.bytes, UploadPermit { _verifying: verifying, _buffer: self.budget })
    }
}

impl UploadGate {
    /// At most `max_concurrent` uploads verified at once and `max_buffered_bytes` of bodies held;
    /// an upload waits at most `wait` for either.
    pub fn new(max_concurrent: usize, max_buffered_bytes: u64, wait: Duration) -> Self {
        let bytes = usize::try_from(max_buffered_bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self {
            verifying: Arc::new(Semaphore::new(max_concurrent.clamp(1, Semaphore::MAX_PERMITS))),
            buffer: Arc::new(Semaphore::new(bytes)),
            wait,
        }
    }

    /// Waits (at most the configured time) for a slot to parse and verify an upload.
    pub async fn verification_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(self.wait, self.verifying.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::Busy("every upload verification slot is in use".into())),
        }
    }

    /// Adds `bytes` to `held`, waiting at most the configured time for them.
    async fn reserve(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: u64) -> Result<(), ApiError> {
        let busy = || ApiError::Busy("the server's buffer for uploads is full".into());
        let count = u32::try_from(bytes).map_err(|_| busy())?;
        let permit = match tokio::time::timeout(self.wait, self.buffer.clone().acquire_many_owned(count)).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(busy()),
        };
        match held {
            Some(existing) => existing.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// Reads a body of at most `limit` bytes into memory under the buffer budget.
    ///
    /// Budget is reserved as bytes arrive, in steps of at least [`RESERVE_STEP`] (never beyond the
    /// declared length or the limit). So a client holds budget only for bytes it has actually
    /// sent, and a declared length alone (which costs a client nothing) blocks no other upload.
    /// The buffer is allocated at the declared length once the first bytes arrive (see [`grow`]):
    /// address space, whose pages become memory only as the bytes are written into them.
    pub async fn read_body(&self, body: Body, declared: Option<u64>, limit: usize) -> Result<BufferedBody, ApiError> {
        let limit_bytes = u64::try_from(limit).unwrap_or(u64::MAX);
        if declared.is_some_and(|length| length > limit_bytes) {
            return Err(ApiError::TooLarge(limit));
        }
        // Where reservations stop: the declared length, else the limit.
        let ceiling = declared.unwrap_or(limit_bytes);
        let mut budget = None;
        let mut reserved: u64 = 0;
        let mut data = Vec::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                let error = error.into_inner();
                match cut_reason(error.as_ref()) {
                    Some(cut) => ApiError::BodyCut(cut.to_string()),
                    None => ApiError::MalformedUpload("the request body could not be read".into()),
                }
            })?;
            let Ok(chunk) = frame.into_data() else { continue };
            let total = u64::try_from(data.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
            if total > limit_bytes {
                return Err(ApiError::TooLarge(limit));
            }
            if total > reserved {
                let wanted = total.saturating_sub(reserved).max(RESERVE_STEP);
                let step = wanted.min(ceiling.max(total).saturating_sub(reserved));
                self.reserve(&mut budget, step).await?;
                reserved = reserved.saturating_add(step);
            }
            grow(&mut data, chunk.len(), declared, limit);
            data.extend_from_slice(&chunk);
        }
        Ok(BufferedBody { bytes: data, budget })
    }
}

/// Makes room in `data` for `more` bytes. The buffer is allocated once at the declared length,
/// else doubled (never past `limit`): growing it a step at a time would reallocate, and so copy
/// and fragment, a buffer of tens of MiB dozens of times. A large allocation is address space
/// only until it is written, so the memory a client holds still follows the bytes it has sent
/// (and its budget is reserved as they arrive).
fn grow(data: &mut Vec<u8>, more: usize, declared: Option<u64>, limit: usize) {
    let needed = data.len().saturating_add(more);
    if needed <= data.capacity() {
        return;
    }
    let target = match declared.and_then(|length| usize::try_from(length).ok()) {
        Some(length) => length,
        None => data.capacity().saturating_mul(2).max(RESERVE_STEP as usize),
    };
    data.reserve_exact(target.min(limit).max(needed).saturating_sub(data.len()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn gate(bytes: u64) -> UploadGate {
        UploadGate::new(1, bytes, Duration::from_millis(50))
    }

    #[tokio::test]
    async fn a_body_is_read_under_the_budget_and_gives_it_back_when_dropped() {
        let gate = gate(10);
        let body = gate.read_body(Body::from("0123456789"), Some(10), 100).await.unwrap();
        assert_eq!(body.bytes, b"0123456789");
        assert_eq!(gate.buffer.available_permits(), 0);
        // While the budget is held, another upload waits and is then refused.
        let refused = gate.read_body(Body::from("x"), Some(1), 100).await.unwrap_err();
        assert_eq!(refused.to_string(), "busy: the server's buffer for uploads is full");
        drop(body);
        assert_eq!(gate.buffer.available_permits(), 10);
        let body = gate.read_body(Body::from("x"), Some(1), 100).await.unwrap();
        assert_eq!(body.bytes, b"x");
    }

    #[tokio::test]
    async fn an_undeclared_length_is_reserved_as_it_arrives() {
        let gate = gate(1 << 20);
        let stream = chunked(vec![vec![b'a'; 300 * 1024], vec![b'b'; 10]]);
        let body = gate.read_body(stream, None, 1 << 20).await.unwrap();
        assert_eq!(body.bytes.len(), 300 * 1024 + 10);
        // The first chunk reserves its own size (more than one step); the second a whole step.
        assert_eq!(gate.buffer.available_permits(), (1 << 20) - (300 * 1024 + 256 * 1024));
        drop(body);
        assert_eq!(gate.buffer.available_permits(), 1 << 20);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_or_not() {
        let gate = gate(1 << 20);
        let declared = gate.read_body(Body::from("0123456789"), Some(10), 5).await.unwrap_err();
        assert_eq!(declared.to_string(), "request body exceeds 5 bytes");
        let undeclared = gate.read_body(Body::from("0123456789"), None, 5).await.unwrap_err();
        assert_eq!(undeclared.to_string(), "request body exceeds 5 bytes");
        assert_eq!(gate.buffer.available_permits(), 1 << 20);
    }

    #[test]
    fn the_buffer_is_allocated_once_at_the_declared_length_else_doubled_up_to_the_limit() {
        let mut data = Vec::new();
        grow(&mut data, 10, Some(5_000_000), 32 << 20);
        assert_eq!(data.capacity(), 5_000_000);
        data.resize(4_999_990, 0);
        grow(&mut data, 10, Some(5_000_000), 32 << 20);
        assert_eq!(data.capacity(), 5_000_000);
        let mut data = Vec::new();
        grow(&mut data, 10, None, 1 << 20);
        assert_eq!(data.capacity(), 256 * 1024);
        data.resize(256 * 1024, 0);
        grow(&mut data, 1, None, 1 << 20);
        assert_eq!(data.capacity(), 512 * 1024);
        data.resize(1000 * 1024, 0);
        grow(&mut data, 1, None, 1 << 20);
        assert_eq!(data.capacity(), 1 << 20);
        // Never less than what the chunk needs, whatever was declared.
        let mut data = Vec::new();
        grow(&mut data, 300, Some(100), 1 << 20);
        assert_eq!(data.capacity(), 300);
    }

    #[tokio::test]
    async fn verification_slots_are_bounded() {
        let gate = gate(10);
        let slot = gate.verification_slot().await.unwrap();
        let refused = gate.verification_slot().await.unwrap_err();
        assert_eq!(refused.to_string(), "busy: every upload verification slot is in use");
        drop(slot);
        let _slot = gate.verification_slot().await.unwrap();
    }

    /// A body delivered in the given chunks, without a declared length.
    fn chunked(chunks: Vec<Vec<u8>>) -> Body {
        Body::new(Chunks(chunks.into_iter().map(Bytes::from).collect()))
    }

    struct Chunks(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(hyper::body::Frame::data(chunk))))
        }
    }
}
