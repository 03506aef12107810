//! What the three peer proxies share: their arguments, the pooled upstream
//! client, hop-by-hop header stripping and the server around the layer.
//!
//! Each part has the shape of the same part of the `proxy` example
//! (examples/proxy.rs at the repository's root), so that bench/compare.sh
//! compares the caching layers and not the proxies around them: an axum
//! server with the cached service as its fallback, a multi-threaded tokio
//! runtime, a legacy hyper-util client with `TCP_NODELAY`, idle connections
//! kept 90 s and up to 1024 per host, and `502` when the upstream fails.

use std::{convert::Infallible, io::Write, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header},
    response::IntoResponse,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Service, ServiceExt};

/// What every peer is given on its command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Where to serve (`--listen`, default `127.0.0.1:8080`; port 0 picks one).
    pub listen: SocketAddr,
    /// The origin, `http://host:port` (`--upstream`, required).
    pub upstream: Uri,
}

/// `--listen ADDR` and `--upstream http://host:port`, from the process's
/// arguments; `name` is the binary's, for the usage line.
pub fn parse_args(name: &str) -> Result<Args, String> {
    parse(name, std::env::args().skip(1))
}

fn parse(name: &str, mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let usage = format!("usage: {name} --upstream http://host:port [--listen ADDR]");
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let mut upstream = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{usage}"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--upstream" => {
                let uri: Uri = value()?.parse().map_err(|e| format!("--upstream: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!("--upstream takes http://host:port, not {uri}"));
                }
                upstream = Some(uri);
            }
            "-h" | "--help" => return Err(usage),
            other => return Err(format!("unknown argument {other:?}\n{usage}")),
        }
    }
    Ok(Args {
        listen,
        upstream: upstream.ok_or(format!("--upstream is required\n{usage}"))?,
    })
}

/// Headers that belong to one connection (RFC 9110 section 7.6.1), not to
/// the message a proxy forwards.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Drops the hop-by-hop headers, and those that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in named.iter().map(HeaderName::as_str).chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// The body of what the upstream answers: boxed, as the proxy example's
/// `Body::new` boxes it, and `Sync`, which tower-http-cache asks of the
/// bodies it wraps (axum's `Body` is not).
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// `bytes` as an [`UpstreamBody`].
pub fn full(bytes: Bytes) -> UpstreamBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty response with status `code`.
pub fn status(code: StatusCode) -> Response<UpstreamBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// The inner service of every peer: the request, sent on to the upstream
/// over pooled keep-alive connections.
#[derive(Clone, Debug)]
pub struct Upstream {
    // Behind an `Arc`: every request clones the service (axum's router,
    // the layer's readied-service swap), and a client is some 350 bytes.
    inner: Arc<(Client<HttpConnector, Body>, Uri)>,
}

impl Upstream {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Self {
            inner: Arc::new((client, base)),
        }
    }

    /// `request`'s method, path, query, headers (less the hop-by-hop ones;
    /// `Host` kept) and body, sent to the upstream; its answer, less its
    /// hop-by-hop headers, or `502` if it cannot be reached.
    pub async fn forward(self, mut request: Request<Body>) -> Response<UpstreamBody> {
        let (client, base) = &*self.inner;
        let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let target = format!(
            "{}://{}{path}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map_or("", |a| a.as_str())
        );
        match target.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return status(StatusCode::BAD_REQUEST),
        }
        strip_hop_by_hop(request.headers_mut());
        match client.request(request).await {
            Ok(response) => {
                let mut response = response.map(BodyExt::boxed);
                strip_hop_by_hop(response.headers_mut());
                response
            }
            Err(error) => {
                eprintln!("upstream unreachable: {error}");
                status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

/// Serves `service` (the cache layer around an [`Upstream`]) on
/// `args.listen` until Ctrl-C. The first line printed is
/// `listening on http://ADDR`. An error from the layer itself answers
/// `502`, as an unreachable upstream does.
pub async fn serve<S>(args: &Args, service: S) -> Result<(), String>
where
    S: Service<Request<Body>> + Clone + Send + Sync + 'static,
    S::Response: IntoResponse,
    S::Error: std::fmt::Display,
    S::Future: Send,
{
    let service = tower::service_fn(move |request: Request<Body>| {
        let service = service.clone();
        async move {
            Ok::<_, Infallible>(match service.oneshot(request).await {
                Ok(response) => response.into_response(),
                Err(error) => {
                    eprintln!("cache layer failed: {error}");
                    status(StatusCode::BAD_GATEWAY).into_response()
                }
            })
        }
    });
    let listener = listener(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts wait for this line (bench/compare.sh's `start_example`).
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}").map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())?;
    axum::serve(listener, Router::new().fallback_service(service))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// The process's exit status for `result`, its error printed on stderr.
pub fn exit(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse("peer", list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments_parse() {
        let parsed = args(&["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:8081"]);
        assert!(parsed.is_ok_and(|a| a.listen.port() == 0 && a.upstream.port_u16() == Some(8081)));
        assert!(args(&["--listen", "127.0.0.1:0"]).is_err());
        assert!(args(&["--upstream", "https://example.test"]).is_err());
        assert!(args(&["--upstream"]).is_err());
        assert!(args(&["--upstream", "http://127.0.0.1:1", "--policy", "ttl:1s"]).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-trace"));
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::HOST, HeaderValue::from_static("posts.internal"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::HOST));
    }
}

/// A listener on `addr` with the `proxy` example's backlog of 4096, so that
/// a stampede's thousand connections reach every proxy alike: with the
/// default of 128 the kernel drops SYNs and the retransmits land in the tail.
fn listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
