//! Identity providers' key sets fetched from their JWKS URLs (`--token-jwks https://…`): each
//! URL is fetched at start, again every [`EdgeOptions::token_jwks_refresh`], and sooner when a
//! token names a `kid` no key has (the provider published a new key) — at most once per
//! [`EdgeOptions::token_jwks_cooldown`], so tokens with made-up `kid`s cannot hammer the
//! provider. A failed fetch keeps the keys of the last good one and is tried again after 1 s,
//! doubling up to [`MAX_BACKOFF`]; until a first fetch succeeds, that provider's tokens carry
//! no claim.
//!
//! [`EdgeOptions::token_jwks_refresh`]: crate::EdgeOptions::token_jwks_refresh
//! [`EdgeOptions::token_jwks_cooldown`]: crate::EdgeOptions::token_jwks_cooldown

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::proxy::full;
use crate::state::Edge;
use crate::token::jwks;
use crate::upstream::{self, Target};

/// Key-set fetches, by `outcome` (`ok`, `error`).
pub const FETCHES: &str = "meridian_edge_jwks_fetches_total";
/// Keys in use from JWKS URLs, over every URL.
pub const KEYS: &str = "meridian_edge_jwks_keys";

/// The soonest a URL is fetched again after its last fetch began, however many tokens name an
/// unknown `kid`, by default (jose's `cooldownDuration`), and the shortest refresh period the
/// binary accepts.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// The longest wait between attempts while a URL keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one fetch (connect, TLS, answer and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One JWKS URL and what its fetches found.
pub(crate) struct Source {
    /// The URL as given.
    pub url: String,
    target: Target,
    authority: Authority,
    path: PathAndQuery,
    status: Mutex<Status>,
}

/// What the admin API reports of a JWKS URL.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// The URL.
    pub url: String,
    /// Keys in use from it (those of the last good fetch).
    pub keys: usize,
    /// When the last good fetch ended (Unix seconds); `None` before one.
    pub fetched_unix: Option<u64>,
    /// Why the last fetch failed, while it is the latest outcome.
    pub error: Option<String>,
    /// Keys of the set left out, and why (see [`jwks::KeySet::skipped`]).
    pub skipped: Vec<String>,
}

impl Source {
    /// Checks `url` (`http://` or `https://`, a host, an optional port and path) and prepares
    /// its connection; `tls` verifies an `https://` provider's certificate.
    pub(crate) fn new(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Source, Error> {
        let bad = |what: String| Error::Config {
            message: format!("--token-jwks {url}: {what}"),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(format!("not a URL ({e}); give https://host/path")))?;
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(bad("give an http:// or https:// URL".into())),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("the URL names no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user information in the URL is not sent; remove it".into()
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| bad(format!("`{host}` cannot name a TLS server: {e}")))?;
            Some((TlsConnector::from(Arc::clone(tls)), name))
        } else {
            None
        };
        Ok(Source {
            url: url.to_string(),
            target: Target {
                port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                host,
                tls,
                http2: false,
            },
            path: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            authority,
            status: Mutex::new(Status {
                url: url.to_string(),
                ..Status::default()
            }),
        })
    }

    /// What its fetches found so far.
    pub(crate) fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// One fetch: the key set, or why there is none.
    async fn fetch(&self, connect_timeout: Duration) -> Result<jwks::KeySet, String> {
        let req = Request::get(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(header::USER_AGENT, "meridian-edge")
            .body(full(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fetched = async {
            let resp = upstream::send_once(&self.target, connect_timeout, req)
                .await
                .map_err(|e| match e {
                    upstream::Failure::Connect(e) => format!("connecting: {e}"),
                    upstream::Failure::Exchange(e) => format!("asking: {e}"),
                })?;
            if resp.status() != StatusCode::OK {
                return Err(format!(
                    "answered {} (redirects are not followed); give the URL that answers 200 \
                     with the key set",
                    resp.status()
                ));
            }
            let body = http_body_util::Limited::new(resp.into_body(), jwks::MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the key set: {e}"))?
                .to_bytes();
            jwks::parse(&body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetched)
            .await
            .unwrap_or_else(|_| Err(format!("no key set within {FETCH_TIMEOUT:?}")))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps `source`'s keys fresh in `edge` until the task is dropped (see the module's doc).
pub(crate) async fn run(edge: Edge, source: Arc<Source>) {
    let cooldown = edge.options().token_jwks_cooldown;
    let refresh = edge.options().token_jwks_refresh.max(cooldown);
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        // Listen before fetching, so a token with an unknown `kid` seen during the fetch
        // still asks for the next one.
        let wanted = edge.jwks_wanted();
        tokio::pin!(wanted);
        wanted.as_mut().enable();
        let began = tokio::time::Instant::now();
        let wait = match source.fetch(edge.connect_timeout()).await {
            Ok(set) => {
                crate::metrics::counter!(FETCHES, "outcome" => "ok").increment(1);
                if failing {
                    tracing::info!(url = %source.url, keys = set.keys.len(), "JWKS fetched again");
                }
                if !set.skipped.is_empty() && !failing {
                    tracing::debug!(url = %source.url, skipped = %set.skipped.join("; "), "JWKS keys left out");
                }
                let keys = set.keys.len();
                {
                    let mut s = lock(&source.status);
                    s.keys = keys;
                    s.fetched_unix = Some(crate::clock::unix_now());
                    s.error = None;
                    s.skipped = set.skipped;
                }
                edge.set_fetched_keys(&source.url, set.keys);
                failing = false;
                backoff = Duration::from_secs(1);
                refresh
            }
            Err(why) => {
                crate::metrics::counter!(FETCHES, "outcome" => "error").increment(1);
                let kept = {
                    let mut s = lock(&source.status);
                    s.error = Some(why.clone());
                    s.keys
                };
                if !failing {
                    tracing::warn!(
                        url = %source.url,
                        error = %why,
                        kept,
                        "JWKS fetch failed: the keys of the last good fetch stay in use; \
                         trying again with backoff"
                    );
                }
                failing = true;
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(began + wait) => {}
            () = async {
                wanted.await;
                tokio::time::sleep_until(began + cooldown).await;
            } => {}
        }
    }
}
