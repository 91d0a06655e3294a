//! The response side of a covered request: the handler's body reaches the client as it is
//! produced while idem keeps a copy, and the record is written when the body ends.
//!
//! - A body that is complete at once (the usual `Json`, `String` or `Bytes`) is stored before
//!   the response is sent, so a client that has its response and retries gets the replay.
//! - A body that is still being produced (a stream: SSE, a proxied upstream, an export) is sent
//!   chunk by chunk; the record is written when it ends, before the end of the body (or the
//!   trailers that end it) is signalled.
//!   The claim's lease is renewed all the while, however long the body takes.
//! - Trailers after the body reach the client as the handler sent them, and the record keeps
//!   those a replay repeats with the body; they count toward the store's limit with it.
//! - A body that fails after the handler ran is stored as status and headers with a problem body
//!   ([`StoredBody::Failed`]): the handler never runs twice for it.
//! - A body that panics while it is produced releases the key, as a handler panic does.
//! - A client that goes away mid-body does not stop it: the rest is produced in a task of its own
//!   and stored for the retry.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::owner::Owner;
use crate::record::{replayable_trailers, trailers_len, StoredBody};

type Completing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One poll of a body.
type Polled = Poll<Option<Result<Frame<Bytes>, axum::Error>>>;

/// Answers with the handler's storable `response`, storing it as described in the module docs.
pub(crate) async fn respond(mut owner: Owner, response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let mut tee = Tee::new(body, status, owner.call.idempotency.store.max_body_bytes());
    match std::future::poll_fn(|cx| Poll::Ready(tee.read_ready(cx))).await {
        ReadReady::OnePiece(bytes) => {
            let body = Body::from(bytes.clone());
            let kept = if tee.copy.fits(bytes.len()) { StoredBody::Kept(bytes) } else { StoredBody::TooLarge };
            owner.complete(status, &parts.headers, kept).await;
            Response::from_parts(parts, body)
        }
        ReadReady::Waiting => {
            // The body's production is the handler's time, not idem's.
            owner.call.watch.pause();
            tee.headers = parts.headers.clone();
            tee.owner = Some(owner);
            Response::from_parts(parts, Body::new(tee))
        }
        ReadReady::Ended => {
            owner.complete(status, &parts.headers, tee.copy.finish()).await;
            Response::from_parts(parts, tee.into_body())
        }
        ReadReady::Failed => {
            owner.complete(status, &parts.headers, StoredBody::Failed).await;
            Response::from_parts(parts, Body::new(tee))
        }
        ReadReady::Panicked => owner.panicked().await,
    }
}

/// What a body had ready before it would wait.
enum ReadReady {
    /// The usual body: one piece of data, complete at once.
    OnePiece(Bytes),
    /// It ended: every frame is in hand.
    Ended,
    /// It failed after the frames in hand.
    Failed,
    /// It panicked.
    Panicked,
    /// It is still being produced, or is larger than the store keeps.
    Waiting,
}

/// What is kept of a body for the record: the whole body and the trailers a replay repeats,
/// up to the store's limit, which they count toward together.
#[derive(Default)]
struct BodyCopy {
    chunks: Vec<Bytes>,
    trailers: HeaderMap,
    len: usize,
    limit: usize,
    too_large: bool,
}

impl BodyCopy {
    fn push(&mut self, frame: &Frame<Bytes>) {
        if self.too_large {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.len += data.len();
            self.chunks.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            let kept = replayable_trailers(trailers);
            self.len += trailers_len(&kept);
            for (name, value) in &kept {
                self.trailers.append(name, value.clone());
            }
        }
        if !self.fits(self.len) {
            self.too_large = true;
            self.chunks = Vec::new();
            self.trailers = HeaderMap::new();
        }
    }

    /// Whether a body of `len` bytes is kept whole.
    fn fits(&self, len: usize) -> bool {
        len <= self.limit
    }

    fn finish(&mut self) -> StoredBody {
        if self.too_large {
            return StoredBody::TooLarge;
        }
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().expect("one chunk"),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                self.chunks.drain(..).for_each(|chunk| all.extend_from_slice(&chunk));
                all.freeze()
            }
        };
        StoredBody::kept(body, std::mem::take(&mut self.trailers))
    }
}

/// The body sent to the client: first the frames read ahead, then the handler's body frame by
/// frame, copying what the record keeps; at its end, the record is written before the end (or
/// the body's error) is passed on.
struct Tee {
    /// Frames read ahead and not sent yet.
    ready: VecDeque<Frame<Bytes>>,
    /// The handler's body, until it ends.
    inner: Option<Body>,
    copy: BodyCopy,
    status: StatusCode,
    headers: HeaderMap,
    /// The claim, until the record is written or the key released.
    owner: Option<Owner>,
    /// The record write or release under way.
    completing: Option<Completing>,
    /// The body's own error, passed on once the record is written.
    error: Option<axum::Error>,
    /// Produced to its end in a task of its own, after the client went away.
    draining: bool,
}

impl Tee {
    fn new(body: Body, status: StatusCode, limit: usize) -> Self {
        Self {
            ready: VecDeque::new(),
            inner: Some(body),
            copy: BodyCopy { limit, ..BodyCopy::default() },
            status,
            headers: HeaderMap::new(),
            owner: None,
            completing: None,
            error: None,
            draining: false,
        }
    }

    /// Polls the handler's body, catching a panic as a handler's panic is caught.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Result<Polled, ()> {
        let inner = self.inner.as_mut().expect("polled after its end");
        std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll_frame(cx))).map_err(|_panic| {
            self.inner = None;
            self.ready.clear();
        })
    }

    /// Reads ahead what the body has ready, up to the store's limit.
    fn read_ready(&mut self, cx: &mut Context<'_>) -> ReadReady {
        loop {
            if self.copy.too_large {
                return ReadReady::Waiting;
            }
            match self.poll_inner(cx) {
                Err(()) => return ReadReady::Panicked,
                Ok(Poll::Pending) => return ReadReady::Waiting,
                Ok(Poll::Ready(Some(Ok(frame)))) => {
                    let inner = self.inner.as_ref().expect("not ended");
                    if self.ready.is_empty() && frame.is_data() && inner.is_end_stream() {
                        self.inner = None;
                        return ReadReady::OnePiece(frame.into_data().expect("a data frame"));
                    }
                    self.copy.push(&frame);
                    let last = frame.is_trailers();
                    self.ready.push_back(frame);
                    if last {
                        self.inner = None;
                        return ReadReady::Ended;
                    }
                }
                Ok(Poll::Ready(Some(Err(error)))) => {
                    self.inner = None;
                    self.error = Some(error);
                    return ReadReady::Failed;
                }
                Ok(Poll::Ready(None)) => {
                    self.inner = None;
                    return ReadReady::Ended;
                }
            }
        }
    }

    /// A body that ended while read ahead: in one piece when it is one piece.
    fn into_body(mut self) -> Body {
        let one_piece = self.ready.len() == 1 && self.ready.front().is_some_and(Frame::is_data);
        match self.ready.pop_front() {
            None => Body::empty(),
            Some(frame) if one_piece => Body::from(frame.into_data().expect("a data frame")),
            Some(frame) => {
                self.ready.push_front(frame);
                Body::new(self)
            }
        }
    }

    /// The body ended or failed: write the record before passing that on.
    fn finish(&mut self, body: StoredBody) {
        if let Some(owner) = self.owner.take() {
            let (status, headers) = (self.status, std::mem::take(&mut self.headers));
            self.completing = Some(Box::pin(async move { owner.complete(status, &headers, body).await }));
        }
    }

    fn done(&self) -> bool {
        self.inner.is_none() && self.owner.is_none() && self.completing.is_none()
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        loop {
            // The record is written before anything after the body's end is passed on.
            if let Some(completing) = &mut this.completing {
                std::task::ready!(completing.as_mut().poll(cx));
                this.completing = None;
            }
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.inner.is_none() {
                return Poll::Ready(this.error.take().map(Err));
            }
            match this.poll_inner(cx) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Some(Ok(frame)))) if frame.is_trailers() => {
                    // Trailers end the body (HTTP/1.1 sends them as its end): the record is
                    // written before they are passed on.
                    this.copy.push(&frame);
                    this.inner = None;
                    this.ready.push_back(frame);
                    let body = this.copy.finish();
                    this.finish(body);
                }
                Ok(Poll::Ready(Some(Ok(frame)))) => {
                    this.copy.push(&frame);
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Poll::Ready(Some(Err(error)))) => {
                    this.inner = None;
                    this.error = Some(error);
                    this.finish(StoredBody::Failed);
                }
                Ok(Poll::Ready(None)) => {
                    this.inner = None;
                    let body = this.copy.finish();
                    this.finish(body);
                }
                Err(()) => {
                    this.error = Some(axum::Error::new("the response body panicked while it was produced"));
                    if let Some(owner) = this.owner.take() {
                        this.completing = Some(Box::pin(async move {
                            owner.panicked().await;
                        }));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.done() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let ready: u64 = self.ready.iter().filter_map(Frame::data_ref).map(|data| data.len() as u64).sum();
        let trailers = self.ready.iter().any(Frame::is_trailers);
        match &self.inner {
            // Exact only once nothing can follow: a failure must not look like a complete body,
            // and trailers need a chunked body on HTTP/1.1, not one framed by its length.
            None if self.done() && self.error.is_none() && !trailers => SizeHint::with_exact(ready),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(ready);
                hint
            }
            Some(inner) => {
                let inner = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(ready));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(ready));
                }
                hint
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.owner.is_none() && self.completing.is_none() {
            return;
        }
        if self.draining {
            // The task finishing the body was dropped: its runtime is shutting down.
            tracing::error!(
                target: "idem",
                "a response body was still being produced when the runtime shut down; its claim is held until the lease expires"
            );
            return;
        }
        // The client went away before the body ended: the rest is produced, and the record
        // written, in a task of its own.
        let mut rest = Tee {
            ready: VecDeque::new(),
            inner: self.inner.take(),
            copy: std::mem::take(&mut self.copy),
            status: self.status,
            headers: std::mem::take(&mut self.headers),
            owner: self.owner.take(),
            completing: self.completing.take(),
            error: None,
            draining: true,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { while rest.frame().await.is_some() {} })),
            Err(_) => tracing::error!(
                target: "idem",
                "a response body was dropped outside a Tokio runtime; its claim is held until the lease expires"
            ),
        }
    }
}
