//! Outbound HTTP for the fetches a policy aims: the JWKS and Cloudflare's get-identity. One setup
//! for all: connect and total timeouts, a body cap checked while reading, no redirects (a 3xx is
//! `redirect`), and, when configured, the address [`guard`] in the resolver: one refused address
//! refuses the whole DNS answer, so rebinding and mixed answers gain nothing. IP literals are
//! checked before the request, and a guarded client ignores `HTTP(S)_PROXY` (through a proxy the
//! guard could not see the address). Failures are categories ([`FetchError`]'s `Display`), which
//! reach status and Events; only logs add [`FetchError::detail`], never a body. See
//! docs/security.md, "Security notes".

pub mod guard;

pub use guard::{AddressPolicy, AllowList, BadCidr, is_allowed, parse_net};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use url::{Host, Url};

/// Why a fetch failed. `Display` is the category (what status and Events show); the strings
/// some variants carry are transport details for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("timeout")]
    Timeout,
    #[error("dns")]
    Dns(String),
    #[error("connect")]
    Connect(String),
    #[error("tls")]
    Tls(String),
    /// The host is, or resolves to, an address the guard refuses.
    #[error("blocked_address")]
    BlockedAddress(IpAddr),
    #[error("http_status {0}")]
    HttpStatus(u16),
    #[error("redirect")]
    Redirect(u16),
    #[error("too_large")]
    TooLarge,
    /// The body is not a key document (not JSON, or not the JWKS/certs shape).
    #[error("not_jwks")]
    NotJwks,
    /// A key document without a single usable signing key.
    #[error("no_usable_keys")]
    NoUsableKeys,
    /// get-identity answered something other than a JSON object.
    #[error("not_identity")]
    NotIdentity,
    /// get-identity's groups exceed the caps (see [`crate::identity`]).
    #[error("groups_over_limit")]
    GroupsOverLimit,
    /// Any other transport failure (protocol error, connection reset mid-answer, bad URL).
    #[error("request")]
    Request(String),
}

impl FetchError {
    /// The category without arguments: a bounded set, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Dns(_) => "dns",
            FetchError::Connect(_) => "connect",
            FetchError::Tls(_) => "tls",
            FetchError::BlockedAddress(_) => "blocked_address",
            FetchError::HttpStatus(_) => "http_status",
            FetchError::Redirect(_) => "redirect",
            FetchError::TooLarge => "too_large",
            FetchError::NotJwks => "not_jwks",
            FetchError::NoUsableKeys => "no_usable_keys",
            FetchError::NotIdentity => "not_identity",
            FetchError::GroupsOverLimit => "groups_over_limit",
            FetchError::Request(_) => "request",
        }
    }

    /// More for a log line: the transport's error chain, the refused address or the
    /// redirect's status. Never text from a response body.
    pub fn detail(&self) -> Option<String> {
        match self {
            FetchError::Dns(d)
            | FetchError::Connect(d)
            | FetchError::Tls(d)
            | FetchError::Request(d) => Some(d.clone()),
            FetchError::BlockedAddress(ip) => Some(format!("refused address {ip}")),
            FetchError::Redirect(code) => Some(format!("answered HTTP {code}")),
            _ => None,
        }
    }
}

/// A client for policy-aimed fetches; cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    addresses: AddressPolicy,
}

impl Fetcher {
    pub fn new(timeout: Duration, addresses: AddressPolicy) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("accessgate/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                addresses: addresses.clone(),
            }));
        if addresses.is_guarded() {
            builder = builder.no_proxy();
        }
        Ok(Self {
            http: builder.build()?,
            addresses,
        })
    }

    pub fn addresses(&self) -> &AddressPolicy {
        &self.addresses
    }

    /// GETs `url` and returns the body of a 200 answer, at most `max_body` bytes.
    pub async fn get(
        &self,
        url: &Url,
        headers: HeaderMap,
        max_body: usize,
    ) -> Result<Vec<u8>, FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Request(format!(
                "unsupported scheme {}",
                url.scheme()
            )));
        }
        // The resolver is not consulted for an IP literal: check it here.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
            None => return Err(FetchError::Request("URL without a host".into())),
        };
        if let Some(ip) = literal
            && !self.addresses.permits(ip)
        {
            return Err(FetchError::BlockedAddress(ip));
        }
        let mut resp = self
            .http
            .get(url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect(status.as_u16()));
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::HttpStatus(status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max_body as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > max_body {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The resolver refused the answer: carried through reqwest's error chain to [`classify`].
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, which fetches may not reach")]
struct Blocked {
    host: String,
    ip: IpAddr,
}

/// Resolution itself failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
struct DnsFailed {
    host: String,
    reason: String,
}

/// The system resolver, then the guard over the whole answer.
struct GuardedResolver {
    addresses: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let addresses = self.addresses.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let answer: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| DnsFailed {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            if answer.is_empty() {
                return Err(DnsFailed {
                    host,
                    reason: "no addresses".into(),
                }
                .into());
            }
            // Refuse the whole answer if any address is refused: connecting to the others
            // would be safe, but a name that mixes public and internal addresses is not one a
            // policy has any business naming, and this leaves no ordering to reason about.
            if let Some(bad) = answer.iter().find(|a| !addresses.permits(a.ip())) {
                return Err(Blocked { host, ip: bad.ip() }.into());
            }
            Ok(Box::new(answer.into_iter()) as Addrs)
        })
    }
}

/// The first error of type `T` in `e`'s chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap).
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(t) = find::<T>(inner)
        {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

fn has_io_kind(e: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A transport error's category.
fn classify(e: &reqwest::Error) -> FetchError {
    if let Some(b) = find::<Blocked>(e) {
        return FetchError::BlockedAddress(b.ip);
    }
    if e.is_timeout() || has_io_kind(e, std::io::ErrorKind::TimedOut) {
        return FetchError::Timeout;
    }
    let detail = error_chain(e);
    if find::<DnsFailed>(e).is_some() {
        return FetchError::Dns(detail);
    }
    if find::<rustls::Error>(e).is_some() {
        return FetchError::Tls(detail);
    }
    if e.is_connect() {
        return FetchError::Connect(detail);
    }
    FetchError::Request(detail)
}

/// reqwest's top-level message hides the cause ("error sending request"); keep the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_fixed_words() {
        let cases = [
            (FetchError::Timeout, "timeout"),
            (FetchError::Dns("x: nope".into()), "dns"),
            (FetchError::Connect("refused SECRET".into()), "connect"),
            (FetchError::Tls("bad cert".into()), "tls"),
            (
                FetchError::BlockedAddress("169.254.169.254".parse().unwrap()),
                "blocked_address",
            ),
            (FetchError::HttpStatus(404), "http_status 404"),
            (FetchError::Redirect(302), "redirect"),
            (FetchError::TooLarge, "too_large"),
            (FetchError::NotJwks, "not_jwks"),
            (FetchError::NoUsableKeys, "no_usable_keys"),
            (FetchError::NotIdentity, "not_identity"),
            (FetchError::GroupsOverLimit, "groups_over_limit"),
            (FetchError::Request("reset".into()), "request"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
            assert!(want.starts_with(e.kind()), "{want} vs {}", e.kind());
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A one-shot HTTP server on loopback answering `response` (raw HTTP) to each connection.
    async fn serve(response: &'static str) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    fn guarded(allow: &[&str]) -> Fetcher {
        Fetcher::new(
            Duration::from_secs(5),
            AddressPolicy::Guarded(AllowList::parse(allow).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn guard_refuses_literals_and_resolved_names_unless_allowed() {
        runtime().block_on(async {
            let addr = serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            let port = addr.port();
            let lit = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
            let name = Url::parse(&format!("http://localhost:{port}/")).unwrap();
            let v6 = Url::parse(&format!("http://[::ffff:127.0.0.1]:{port}/")).unwrap();
            let meta = Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
            let off = Fetcher::new(Duration::from_secs(5), AddressPolicy::AllowAll).unwrap();
            assert_eq!(off.get(&lit, HeaderMap::new(), 10).await.unwrap(), b"ok");

            let on = guarded(&[]);
            for u in [&lit, &name, &v6, &meta] {
                let e = on.get(u, HeaderMap::new(), 10).await.unwrap_err();
                assert!(
                    matches!(e, FetchError::BlockedAddress(_)),
                    "{u}: {e:?} {:?}",
                    e.detail()
                );
                assert_eq!(e.to_string(), "blocked_address");
            }

            let loopback = guarded(&["127.0.0.0/8"]);
            assert_eq!(
                loopback.get(&lit, HeaderMap::new(), 10).await.unwrap(),
                b"ok"
            );
            assert_eq!(
                loopback.get(&v6, HeaderMap::new(), 10).await.unwrap(),
                b"ok"
            );
            // `localhost` may resolve to ::1 too, which 127.0.0.0/8 does not allow.
            let both = guarded(&["127.0.0.0/8", "::1"]);
            assert_eq!(both.get(&name, HeaderMap::new(), 10).await.unwrap(), b"ok");
            let e = loopback.get(&meta, HeaderMap::new(), 10).await.unwrap_err();
            assert_eq!(e.to_string(), "blocked_address");
        });
    }

    #[test]
    fn answers_map_to_categories() {
        runtime().block_on(async {
            let f = Fetcher::new(Duration::from_secs(5), AddressPolicy::AllowAll).unwrap();
            let get = |addr: std::net::SocketAddr, cap: usize| {
                let f = f.clone();
                async move {
                    f.get(
                        &Url::parse(&format!("http://{addr}/")).unwrap(),
                        HeaderMap::new(),
                        cap,
                    )
                    .await
                }
            };
            let redirect = serve(
                "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
            assert_eq!(get(redirect, 100).await, Err(FetchError::Redirect(302)));
            let missing = serve(
                "HTTP/1.1 404 Not Found\r\ncontent-length: 27\r\n\r\n{\"error\":\"SECRET-INTERNAL\"}",
            )
            .await;
            let e = get(missing, 100).await.unwrap_err();
            assert_eq!(e.to_string(), "http_status 404");
            assert_eq!(e.detail(), None);
            let big = serve("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world").await;
            assert_eq!(get(big, 5).await, Err(FetchError::TooLarge));
            let chunked = serve(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
            )
            .await;
            assert_eq!(get(chunked, 8).await, Err(FetchError::TooLarge));
            assert_eq!(get(chunked, 11).await.unwrap(), b"hello world");
            let garbage = serve("NOT HTTP AT ALL\r\n\r\n").await;
            assert_eq!(get(garbage, 100).await.unwrap_err().kind(), "request");

            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            assert_eq!(get(closed, 100).await.unwrap_err().kind(), "connect");

            let nowhere = Url::parse("http://accessgate-test.invalid/").unwrap();
            let e = f.get(&nowhere, HeaderMap::new(), 100).await.unwrap_err();
            assert_eq!(e.to_string(), "dns", "{:?}", e.detail());

            let tls = serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            let e = f
                .get(
                    &Url::parse(&format!("https://{tls}/")).unwrap(),
                    HeaderMap::new(),
                    100,
                )
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), "tls", "{:?}", e.detail());
        });
    }

    #[test]
    fn timeouts_are_timeouts() {
        runtime().block_on(async {
            // Accepts and never answers.
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = l.accept().await {
                    held.push(s);
                }
            });
            let f = Fetcher::new(Duration::from_millis(300), AddressPolicy::AllowAll).unwrap();
            let e = f
                .get(
                    &Url::parse(&format!("http://{addr}/")).unwrap(),
                    HeaderMap::new(),
                    100,
                )
                .await
                .unwrap_err();
            assert_eq!(e, FetchError::Timeout);
        });
    }
}
