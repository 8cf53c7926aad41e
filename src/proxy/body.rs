//! Reading client request bodies: bounded, and timed, so that a client that
//! stops sending gets 408 and its memory back instead of holding both.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};

use super::errors::{ErrorKind, ProxyError};

/// The next piece of a body, or an error once `idle` passes without one. A
/// piece already there (most bodies arrive whole) arms no timer.
pub async fn next_within(payload: &mut web::Payload, idle: Duration) -> Result<Option<Bytes>, ProxyError> {
    let next = match payload.next().now_or_never() {
        Some(next) => next,
        None => actix_rt::time::timeout(idle, payload.next()).await.map_err(|_| timed_out(idle))?,
    };
    next.transpose().map_err(read_error)
}

/// Reads the request body, up to `limit` bytes, with at most `idle` between
/// two pieces. A body that arrives in one piece (most chat requests) is kept
/// as it came, without a copy.
pub async fn read_body(mut payload: web::Payload, limit: usize, idle: Duration) -> Result<Bytes, ProxyError> {
    let Some(first) = next_within(&mut payload, idle).await? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        return Err(too_large(limit));
    }
    let Some(second) = next_within(&mut payload, idle).await? else {
        return Ok(first);
    };
    let mut buf = BytesMut::with_capacity(first.len() + second.len());
    buf.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
        next = next_within(&mut payload, idle).await?;
    }
    Ok(buf.freeze())
}

pub fn read_error(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::bad_request(format!("could not read the request body: {e}"))
}

pub fn too_large(limit: usize) -> ProxyError {
    ProxyError::new(
        ErrorKind::TooLarge,
        format!("request body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)"),
    )
}

pub fn timed_out(idle: Duration) -> ProxyError {
    ProxyError::new(
        ErrorKind::RequestTimeout,
        format!("the request body stopped arriving for {} s (BODY_READ_TIMEOUT)", idle.as_secs()),
    )
}

/// Why an upload streamed to the upstream broke off.
#[derive(Debug)]
pub enum UploadError {
    /// The client sent nothing for this long.
    Stalled(Duration),
    Payload(PayloadError),
    /// The proxy stopped it: what passed broke a rule of the caller's (a
    /// second `model` part in an upload of a client held to a model list).
    Refused(String),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Stalled(d) => write!(f, "the client sent nothing for {} s", d.as_secs()),
            UploadError::Payload(e) => write!(f, "{e}"),
            UploadError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UploadError {}

impl UploadError {
    /// The answer for an upload that broke off on the client's side.
    pub fn to_proxy_error(&self) -> ProxyError {
        match self {
            UploadError::Stalled(d) => timed_out(*d),
            UploadError::Payload(e) => read_error(e),
            UploadError::Refused(why) => ProxyError::new(ErrorKind::Forbidden, why.clone()),
        }
    }
}

/// A client's upload on its way upstream, ended with `Stalled` when the
/// client stops sending. The timer is armed only while the body waits.
pub struct IdleLimited<S> {
    inner: S,
    idle: Duration,
    timer: Option<Pin<Box<actix_rt::time::Sleep>>>,
}

impl<S> IdleLimited<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleLimited { inner, idle, timer: None }
    }
}

impl<S> Stream for IdleLimited<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, UploadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.timer = None;
                Poll::Ready(item.map(|r| r.map_err(UploadError::Payload)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(actix_rt::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(UploadError::Stalled(idle)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
