//! Answers made before a request becomes a poem request (the [`Shortcut`]), and handing
//! every other request on to the endpoint with its body as the client sent it.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{request::Parts, uri::Scheme};
use hyper::body::{Body as _, Incoming};
use poem::{
    Endpoint, RequestParts, Response,
    web::{LocalAddr, RemoteAddr},
};

/// How long a body a [`Shortcut`] asked for may take to arrive here in full; one that takes
/// longer goes on to the endpoint, whose body deadline counts from [`Arrived`] too.
const SHORTCUT_BODY_WAIT: Duration = Duration::from_millis(100);

/// When a request's head had been read: its answer's duration and its body's deadline
/// count from here. Every request the endpoint gets carries it as an extension.
#[derive(Clone, Copy, Debug)]
pub struct Arrived(pub Instant);

/// Answers some requests before they become poem requests: the router, the OpenAPI layer
/// and their buffers cost more than the answer itself on the busiest routes.
pub trait Shortcut: Send + Sync {
    /// Whether [`Shortcut::answer`] wants this request's body (the request has one); it
    /// must say yes only to a body whose declared `Content-Length` is small, since the
    /// body is then read here first. It goes on to the endpoint, with its body as sent,
    /// if it has not arrived whole within [`SHORTCUT_BODY_WAIT`].
    fn wants_body(&self, request: &Parts) -> bool;

    /// The answer, or `None` to pass the request on to the endpoint, with whatever
    /// extensions it added to `request` (what it found, so the endpoint need not find it
    /// again). `body`: all of it, or empty for a request without one.
    fn answer(
        &self,
        request: &mut Parts,
        body: &[u8],
        remote: SocketAddr,
        arrived: Instant,
    ) -> Option<Response>;
}

/// What becomes of a request once its head is read.
pub(super) enum Next<E> {
    Answered(Response),
    Endpoint(PassOn<E>, Parts, Incoming),
    /// The shortcut wants the body before it can answer.
    ReadBody(PassOn<E>, Arc<dyn Shortcut>, Parts, Incoming, SocketAddr),
}

impl<E: Endpoint<Output = Response>> Next<E> {
    /// Asks `shortcut` about a request whose head has just been read; `pass_on` is
    /// called only for a request that may go on to the endpoint.
    pub(super) fn of(
        shortcut: Option<&Arc<dyn Shortcut>>,
        request: http::Request<Incoming>,
        remote: SocketAddr,
        arrived: Instant,
        pass_on: impl FnOnce() -> PassOn<E>,
    ) -> Self {
        let (mut parts, body) = request.into_parts();
        match shortcut {
            Some(shortcut) if body.is_end_stream() => {
                match shortcut.answer(&mut parts, &[], remote, arrived) {
                    Some(response) => Self::Answered(response),
                    None => Self::Endpoint(pass_on(), parts, body),
                }
            }
            Some(shortcut) if shortcut.wants_body(&parts) => {
                Self::ReadBody(pass_on(), shortcut.clone(), parts, body, remote)
            }
            _ => Self::Endpoint(pass_on(), parts, body),
        }
    }

    pub(super) async fn respond(self) -> Response {
        match self {
            Self::Answered(response) => response,
            Self::Endpoint(pass_on, parts, body) => {
                let request = poem::Request::from((
                    http::Request::from_parts(pass_on.arrived(parts), body),
                    pass_on.local.clone(),
                    pass_on.remote.clone(),
                    Scheme::HTTP,
                ));
                pass_on.call(request).await
            }
            Self::ReadBody(pass_on, shortcut, parts, body, remote) => {
                // Boxed like the endpoint's future, for the same reason.
                Box::pin(answer_with_body(
                    shortcut.as_ref(),
                    parts,
                    body,
                    remote,
                    pass_on,
                ))
                .await
            }
        }
    }
}

/// The endpoint, for a request the shortcut does not answer.
pub(super) struct PassOn<E> {
    pub(super) endpoint: Arc<E>,
    pub(super) local: LocalAddr,
    pub(super) remote: RemoteAddr,
    pub(super) arrived: Instant,
}

impl<E: Endpoint<Output = Response>> PassOn<E> {
    /// `parts` with [`Arrived`] among their extensions.
    fn arrived(&self, mut parts: Parts) -> Parts {
        parts.extensions.insert(Arrived(self.arrived));
        parts
    }

    async fn call(self, request: poem::Request) -> Response {
        // Boxed: the endpoint's state is kilobytes, which hyper would otherwise move
        // around with every poll.
        Box::pin(self.endpoint.get_response(request)).await
    }
}

/// Reads the body the shortcut asked for and asks it again; a request it does not answer
/// goes on to the endpoint with its body as the client sent it: all of it when it arrived
/// in time, else what arrived followed by the rest, still to be read.
async fn answer_with_body<E: Endpoint<Output = Response>>(
    shortcut: &dyn Shortcut,
    mut parts: Parts,
    mut body: Incoming,
    remote: SocketAddr,
    pass_on: PassOn<E>,
) -> Response {
    let first = tokio::time::timeout(
        SHORTCUT_BODY_WAIT,
        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
    )
    .await;
    let body = match first {
        Ok(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if body.is_end_stream() => {
                if let Some(response) = shortcut.answer(&mut parts, &data, remote, pass_on.arrived)
                {
                    return response;
                }
                poem::Body::from(data)
            }
            Ok(data) => poem::Body::from_bytes_stream(
                futures_util::stream::iter([Ok(data)]).chain(rest_of(body)),
            ),
            // Trailers before any data: the endpoint reads only data frames anyway.
            Err(_trailers) => poem::Body::from_bytes_stream(rest_of(body)),
        },
        Ok(Some(Err(err))) => {
            poem::Body::from_bytes_stream(futures_util::stream::iter([Err::<Bytes, _>(
                io::Error::other(err),
            )]))
        }
        Ok(None) => poem::Body::empty(),
        // Still on its way: nothing was taken from it.
        Err(_elapsed) => poem::Body::from_bytes_stream(rest_of(body)),
    };
    let parts = RequestParts::from((
        pass_on.arrived(parts),
        pass_on.local.clone(),
        pass_on.remote.clone(),
        Scheme::HTTP,
    ));
    pass_on.call(poem::Request::from_parts(parts, body)).await
}

/// The data frames still to come of a body.
fn rest_of(mut body: Incoming) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| {
        loop {
            return match std::task::ready!(Pin::new(&mut body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(err)) => Poll::Ready(Some(Err(io::Error::other(err)))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
            };
        }
    })
}
