//! The poisoning and deception attacks of `tests/leak_suite.rs`, sent as
//! raw bytes over a real connection to a served app: what hyper lets
//! through to the layer (a `Host` with a path in it, two `Host` fields, a
//! request line with `//` or `%61`) is what these requests test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, Uri, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

/// An origin that normalises paths the way many do (empty and `.`
/// segments dropped, `%61` decoded) and builds its link from the last
/// `Host` and `X-Forwarded-Prefix`; every answer public for a minute and
/// unique to its call.
async fn origin(calls: Arc<AtomicUsize>, uri: Uri, request: HeaderMap) -> impl IntoResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    let path = uri.path().replace("%61", "a");
    let segments: Vec<_> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let host = request
        .get_all(header::HOST)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let prefix = request
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!(
            "call {n}; path=/{}; link=https://{host}{prefix}/next",
            segments.join("/")
        ),
    )
}

/// Serves the origin behind the layer on a loopback port.
async fn serve() -> (u16, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = Router::new()
        .fallback(get(move |uri: Uri, headers: HeaderMap| {
            origin(Arc::clone(&counted), uri, headers)
        }))
        .layer(
            StampedeLayer::new(MemoryStore::new())
                .route("/admin/*", Policy::bypass())
                .store_timeout(Duration::from_secs(5)),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, calls)
}

/// Sends `head` (request line and header lines) over a new connection;
/// the response's status line and body.
async fn raw(port: u16, head: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("served");
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("answered");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// The plain page at `path` of api.example, asked after an attack.
async fn plain(port: u16, path: &str) -> String {
    let (status, body) = raw(port, &format!("GET {path} HTTP/1.1\r\nHost: api.example")).await;
    assert!(status.contains(" 200 "), "{status}");
    body
}

#[tokio::test]
async fn a_host_with_a_path_in_it_does_not_make_another_pages_key() {
    let (port, _) = serve().await;
    let (status, attacked) = raw(port, "GET /intro HTTP/1.1\r\nHost: api.example/docs").await;
    assert!(status.contains(" 200 "), "hyper lets it through: {status}");
    assert!(attacked.contains("path=/intro"), "{attacked}");
    let page = plain(port, "/docs/intro").await;
    assert!(
        page.contains("path=/docs/intro"),
        "/docs/intro was served {page:?}"
    );
}

#[tokio::test]
async fn a_second_host_or_a_forwarded_prefix_poisons_no_one() {
    let (port, _) = serve().await;
    let attacks = [
        ("/two-hosts", "Host: api.example\r\nHost: evil.example"),
        (
            "/prefix",
            "Host: api.example\r\nX-Forwarded-Prefix: //evil.example",
        ),
    ];
    for (path, headers) in attacks {
        let (status, attacked) = raw(port, &format!("GET {path} HTTP/1.1\r\n{headers}")).await;
        assert!(status.contains(" 200 "), "{path}: {status}");
        assert!(
            attacked.contains("evil.example"),
            "{path}: the origin reflects it"
        );
        let page = plain(port, path).await;
        assert!(!page.contains("evil.example"), "{path} was served {page:?}");
    }
}

#[tokio::test]
async fn a_bypassed_route_is_not_cached_under_another_spelling() {
    let (port, calls) = serve().await;
    for path in ["//admin/users", "/%61dmin/users", "/./admin/users"] {
        let before = calls.load(Ordering::SeqCst);
        let first = plain(port, path).await;
        let second = plain(port, path).await;
        assert!(
            first.contains("path=/admin/users"),
            "the origin normalises {path}"
        );
        assert_ne!(first, second, "{path} was stored");
        assert_eq!(calls.load(Ordering::SeqCst), before + 2, "{path}");
    }
}
