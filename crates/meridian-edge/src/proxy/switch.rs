//! Requests that switch protocols (WebSocket): an HTTP/1.1 `Connection: upgrade`, or an
//! HTTP/2 extended CONNECT (RFC 8441). Backends are spoken to in HTTP/1.1 either way, so the
//! second is sent as the first — the way Envoy bridges them — and the backend's `101` comes
//! back as the `200` that opens the client's stream. Once the answer is out, the client's
//! connection (or stream) is spliced to the backend's in a task of the edge's tunnels.

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::{finish, json_error};
use crate::state::{Edge, ProxyBody};
use crate::{metrics, upstream};

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// RFC 6455 §1.3: appended to the key before hashing it into `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A CONNECT without `:protocol`: a tunnel to another host, which a reverse proxy does not
/// open.
pub(crate) struct PlainConnect;

impl PlainConnect {
    /// The 405 the client gets.
    pub(crate) fn refusal(&self) -> Response<ProxyBody> {
        json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect_not_supported",
            "CONNECT opens a tunnel to another host, which this reverse proxy does not do",
            "for a WebSocket over HTTP/2, send an extended CONNECT (RFC 8441) with :protocol = websocket and the :path of the app's endpoint",
        )
    }
}

/// How a client asked to switch protocols, taken from its request.
pub(crate) struct Switch {
    /// The protocol asked for (`Upgrade` / `:protocol`).
    protocol: HeaderValue,
    /// The client's connection (HTTP/1.1) or stream (HTTP/2) once the answer is out.
    client: OnUpgrade,
    /// How the client asked.
    via: Via,
}

/// How a client asked to switch protocols.
enum Via {
    /// HTTP/1.1 `Connection: upgrade`: the client holds its own WebSocket key and checks the
    /// backend's answer itself.
    Upgrade,
    /// HTTP/2 extended CONNECT, bridged: for a WebSocket, the `Sec-WebSocket-Key` the edge sent
    /// the backend (its `Sec-WebSocket-Accept` is checked against it); `None` for another
    /// protocol.
    ExtendedConnect { key: Option<HeaderValue> },
}

impl Switch {
    /// Takes the switch `req` asks for, if any, leaving `req` as the HTTP/1.1 request the
    /// backend will get (an extended CONNECT becomes a `GET` of its `:path`, routed as one).
    /// A CONNECT without `:protocol` is refused.
    pub(crate) fn take(
        edge: &Edge,
        req: &mut Request<Incoming>,
    ) -> Result<Option<Switch>, PlainConnect> {
        if req.method() == Method::CONNECT {
            return Self::bridge(edge, req).map(Some);
        }
        let Some(protocol) = req.headers().get(header::UPGRADE).cloned() else {
            return Ok(None);
        };
        if req.version() != http::Version::HTTP_11 {
            return Ok(None);
        }
        let asks = req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        Ok(asks.then(|| Switch {
            protocol,
            client: hyper::upgrade::on(req),
            via: Via::Upgrade,
        }))
    }

    /// An HTTP/2 extended CONNECT made the HTTP/1.1 upgrade request it stands for.
    fn bridge(edge: &Edge, req: &mut Request<Incoming>) -> Result<Switch, PlainConnect> {
        let protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .and_then(|p| HeaderValue::from_str(p.as_str()).ok());
        let (Some(protocol), true) = (protocol, req.uri().path_and_query().is_some()) else {
            return Err(PlainConnect);
        };
        let key = protocol
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
            .then(|| {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&edge.random().to_le_bytes());
                nonce[8..].copy_from_slice(&edge.random().to_le_bytes());
                let key = base64::engine::general_purpose::STANDARD.encode(nonce);
                HeaderValue::from_str(&key).expect("invariant: base64 text is a valid header value")
            });
        *req.method_mut() = Method::GET;
        Ok(Switch {
            protocol,
            client: hyper::upgrade::on(req),
            via: Via::ExtendedConnect { key },
        })
    }

    /// Puts the headers that ask the backend to switch into `headers` (already stripped of
    /// the client's hop-by-hop ones): `Upgrade`, `Connection: upgrade`, and the edge's own
    /// `Sec-WebSocket-Key` for a bridged WebSocket.
    pub(crate) fn ask_backend(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Via::ExtendedConnect { key: Some(key) } = &self.via {
            headers.insert(SEC_WEBSOCKET_KEY, key.clone());
        }
    }

    /// Whether a backend's answer `status`, which did not switch, cannot go to the client
    /// as it is: a success to an extended CONNECT would tell the client its stream is open.
    pub(crate) fn refuses_success(&self, status: StatusCode) -> bool {
        matches!(self.via, Via::ExtendedConnect { .. }) && status.is_success()
    }
}

/// What the client gets when the backend answered its switch with `status` and did not
/// switch.
pub(crate) fn not_switched(status: StatusCode) -> Response<ProxyBody> {
    json_error(
        StatusCode::BAD_GATEWAY,
        "upstream_did_not_switch",
        &format!("the backend answered the request to switch protocols with {status}, not 101"),
        "check that the app serves this protocol on this path",
    )
}

/// A backend's `101 Switching Protocols` to a request whose client asked to switch (`client`):
/// the client's connection is spliced to the backend's once the answer has gone out (in a task
/// of `edge`'s tunnels, until both sides close, nothing moved either way for the tunnel idle
/// timeout, or shutdown's drain ends). An HTTP/1.1 client gets the `101` with
/// `Connection: upgrade` and `Upgrade`; a bridged HTTP/2 one a `200`, once the backend's
/// `Sec-WebSocket-Accept` proves it answered the edge's key (else 502). A `101` no client
/// asked for is passed on and the backend's connection closed.
pub(crate) fn switch_protocols(
    edge: &Edge,
    mut resp: Response<ProxyBody>,
    client: Option<Switch>,
) -> Response<ProxyBody> {
    let idle = edge.options().tunnel_idle_timeout;
    let protocol = resp.headers().get(header::UPGRADE).cloned();
    let tunnel = resp.extensions_mut().remove::<upstream::Tunnel>();
    let mut resp = finish(resp);
    let (Some(client), Some(tunnel), Some(protocol)) = (client, tunnel, protocol) else {
        return resp;
    };
    match &client.via {
        Via::Upgrade => {
            resp.headers_mut().insert(header::UPGRADE, protocol);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Via::ExtendedConnect { key } => {
            let accept = resp.headers_mut().remove(SEC_WEBSOCKET_ACCEPT);
            if let Some(key) = key
                && accept.as_ref().map(HeaderValue::as_bytes)
                    != Some(websocket_accept(key.as_bytes()).as_bytes())
            {
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_bad_handshake",
                    "the backend switched to WebSocket without the Sec-WebSocket-Accept that answers the edge's key",
                    "check that the app's WebSocket server follows RFC 6455",
                );
            }
            *resp.status_mut() = StatusCode::OK;
        }
    }
    let upgraded = client.client;
    edge.tunnels().spawn(async move {
        let open = metrics::gauge!(metrics::UPGRADED_OPEN);
        open.increment(1.0);
        let spliced = match upgraded.await {
            Ok(upgraded) => upstream::splice(tunnel, upgraded, idle).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        open.decrement(1.0);
        match spliced {
            Ok(upstream::Spliced { up, down, idle }) => {
                metrics::counter!(metrics::UPGRADED_BYTES, "direction" => "to_backend")
                    .increment(up);
                metrics::counter!(metrics::UPGRADED_BYTES, "direction" => "to_client")
                    .increment(down);
                if idle {
                    metrics::counter!(metrics::UPGRADED_IDLE_CLOSED).increment(1);
                }
                tracing::debug!(up, down, idle, "switched-protocol connection closed");
            }
            Err(e) => tracing::debug!(error = %e, "switched-protocol connection failed"),
        }
    });
    resp
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of the
/// key followed by the protocol's GUID.
fn websocket_accept(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

#[cfg(test)]
mod tests {
    /// RFC 6455 §1.3's worked example.
    #[test]
    fn websocket_accept_matches_the_rfc_example() {
        assert_eq!(
            super::websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
