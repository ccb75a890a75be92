//! Request bodies on the wire: a body that is cut when it is not complete in time or arrives too
//! slowly, and that, when a handler answers without reading it (or after cutting it), is drained
//! (bounded) after the answer so the client receives its response instead of a reset.
//!
//! Why the drain: a handler that rejects a request before reading its body (a POST that is not
//! multipart, a GUN with a control character) drops the body. Over HTTP/2 h2 then resets the
//! stream (`RST_STREAM`) while the client is still sending, and clients such as curl report
//! "Stream error in the HTTP/2 framing layer" instead of the 4xx that was already on its way; over
//! HTTP/1.1 hyper closes the connection with unread bytes, which makes the kernel send a TCP reset
//! that can destroy the response. Reading the rest of the body after the response has been handed
//! to hyper lets the client finish its request, so the stream ends normally and the response
//! arrives. The drain is bounded in bytes and time, so it costs no memory and cannot be held open.
//!
//! A body cut for being late or slow is drained the same way, from the moment it is cut. Dropping
//! it there would make h2 end the stream with `RST_STREAM(NO_ERROR)` right behind the `408`
//! (RFC 9113 8.1 allows that), and clients that are still sending, such as curl 7.88, then report
//! "Stream error in the HTTP/2 framing layer" and drop the answer. Drained, the stream stays open
//! until the client has read the `408` and ended its request (curl stops sending on an error
//! status), or until the drain's time is up.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// How a request body must arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRules {
    /// The whole body must have arrived this long after the request's headers.
    pub timeout: Duration,
    /// The body must keep up with this many bytes per second, counted from the end of
    /// [`Self::rate_grace`] (the grace period is a head start); a body that falls behind is cut.
    /// Zero disables the rate check.
    pub min_rate: u64,
    /// How long a body may arrive below [`Self::min_rate`] at first.
    pub rate_grace: Duration,
    /// Most bytes read and discarded from a body its handler did not read.
    pub drain_max_bytes: u64,
    /// Longest time spent draining a body its handler did not read, or one that was cut.
    pub drain_timeout: Duration,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            min_rate: 1024,
            rate_grace: Duration::from_secs(10),
            drain_max_bytes: 32 << 20,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a body was cut; the error a [`GuardedBody`] returns (find it with [`cut_reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyCut {
    /// The body did not complete within [`BodyRules::timeout`].
    #[error("the request body was not complete within {0} s")]
    TooLong(u64),
    /// The body arrived at less than [`BodyRules::min_rate`] bytes per second.
    #[error("the request body arrived at less than {0} bytes per second")]
    TooSlow(u64),
}

/// The [`BodyCut`] somewhere in an error's source chain, if the error is one.
pub fn cut_reason(error: &(dyn std::error::Error + 'static)) -> Option<BodyCut> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(cut) = error.downcast_ref::<BodyCut>() {
            return Some(cut.clone());
        }
        current = error.source();
    }
    None
}

/// A request body held to [`BodyRules`]: its frames pass through unchanged, and it fails with a
/// [`BodyCut`] when it is late or slow. Cut, or dropped before its end, it is drained in the
/// background.
pub struct GuardedBody {
    inner: Option<Incoming>,
    rules: BodyRules,
    started: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl GuardedBody {
    /// Guards `inner`, whose request began now.
    pub fn new(inner: Incoming, rules: BodyRules) -> Self {
        let started = Instant::now();
        let mut body = Self {
            inner: Some(inner),
            rules,
            started,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(started)),
        };
        let next = body.next_check();
        body.timer.as_mut().reset(next);
        body
    }

    /// The moment the body is next due to be checked: its overall deadline, or the moment the
    /// bytes received so far stop satisfying the minimum rate, whichever comes first.
    fn next_check(&self) -> Instant {
        let deadline = self.started + self.rules.timeout;
        if self.rules.min_rate == 0 {
            return deadline;
        }
        // Received bytes buy time at the minimum rate, after the grace period.
        let earned = Duration::from_secs_f64(self.received as f64 / self.rules.min_rate as f64);
        deadline.min(self.started + self.rules.rate_grace.saturating_add(earned))
    }

    /// The cut due at `now`, if any.
    fn verdict(&self, now: Instant) -> Option<BodyCut> {
        verdict(&self.rules, now.saturating_duration_since(self.started), self.received)
    }
}

/// The cut due for a body that has delivered `received` bytes `elapsed` after its request began.
fn verdict(rules: &BodyRules, elapsed: Duration, received: u64) -> Option<BodyCut> {
    if elapsed >= rules.timeout {
        return Some(BodyCut::TooLong(rules.timeout.as_secs()));
    }
    // The grace period is a head start: by time t the body owes (t - grace) * rate bytes.
    if rules.min_rate > 0
        && let Some(owed_for) = elapsed.checked_sub(rules.rate_grace)
        && (received as f64) < owed_for.as_secs_f64() * rules.min_rate as f64
    {
        return Some(BodyCut::TooSlow(rules.min_rate));
    }
    None
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                    let next = this.next_check();
                    this.timer.as_mut().reset(next);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            if let Some(cut) = this.verdict(Instant::now()) {
                // The body has had its time, but is drained a little longer so that the client
                // can read the answer to it (see the module documentation).
                this.release(Instant::now() + this.rules.drain_timeout);
                return Poll::Ready(Some(Err(Box::new(cut))));
            }
            let next = this.next_check().max(Instant::now() + Duration::from_millis(1));
            this.timer.as_mut().reset(next);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl GuardedBody {
    /// Gives up the body: what is left of it is drained in the background until `deadline`.
    fn release(&mut self, deadline: Instant) {
        let Some(inner) = self.inner.take() else { return };
        if inner.is_end_stream() {
            return;
        }
        // Without a runtime (never the case inside the server) the body is simply dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(drain(inner, self.rules.drain_max_bytes, deadline));
    }
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // An unread body is drained no longer than it could have taken to arrive.
        let deadline = (self.started + self.rules.timeout).min(Instant::now() + self.rules.drain_timeout);
        self.release(deadline);
    }
}

/// Reads and discards what is left of a body, at most `max_bytes` bytes and until `deadline`;
/// then drops it (which resets an HTTP/2 stream that is still sending).
async fn drain(mut inner: Incoming, max_bytes: u64, deadline: Instant) {
    let mut discarded: u64 = 0;
    loop {
        match tokio::time::timeout_at(deadline, inner.frame()).await {
            Ok(Some(Ok(frame))) => {
                discarded = discarded.saturating_add(frame.data_ref().map_or(0, |data| data.len() as u64));
                if discarded > max_bytes {
                    tracing::debug!(discarded, "stopped draining an unread request body: too large");
                    return;
                }
            }
            Ok(Some(Err(_)) | None) => return,
            Err(_) => {
                tracing::debug!(discarded, "stopped draining an unread request body: too slow");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_when_late_or_behind_the_rate_after_the_grace_period() {
        let rules = BodyRules {
            timeout: Duration::from_secs(60),
            min_rate: 1000,
            rate_grace: Duration::from_secs(10),
            ..BodyRules::default()
        };
        let secs = Duration::from_secs;
        // Nothing is owed during the grace period.
        assert_eq!(verdict(&rules, secs(9), 0), None);
        assert_eq!(verdict(&rules, secs(10), 0), None);
        // Five seconds after the grace period, 5000 bytes are owed.
        assert_eq!(verdict(&rules, secs(15), 4999), Some(BodyCut::TooSlow(1000)));
        assert_eq!(verdict(&rules, secs(15), 5000), None);
        // However fast, a body is cut at the deadline.
        assert_eq!(verdict(&rules, secs(60), u64::MAX), Some(BodyCut::TooLong(60)));
        assert_eq!(verdict(&rules, secs(59), 49_000), None);
        // Without a minimum rate only the deadline applies.
        let unrated = BodyRules { min_rate: 0, ..rules };
        assert_eq!(verdict(&unrated, secs(59), 0), None);
        assert_eq!(verdict(&unrated, secs(61), 0), Some(BodyCut::TooLong(60)));
    }

    #[test]
    fn the_cut_is_found_inside_wrapping_errors() {
        let wrapped = axum::Error::new(BodyCut::TooSlow(7));
        assert_eq!(cut_reason(&wrapped), Some(BodyCut::TooSlow(7)));
        let other = std::io::Error::other("reset");
        assert_eq!(cut_reason(&other), None);
    }
}
