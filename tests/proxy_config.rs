//! The proxy example started from its commented file, examples/proxy.toml,
//! as its `--config` reads it: each kind of route answers over real HTTP
//! as the file says (a ttl route, a stale-while-revalidate route, a bypass
//! route). The layer's clock is a manual one, so that expiry is a step,
//! not a wait.

#[allow(
    dead_code,
    reason = "the example's `main` and its Redis path are not used here"
)]
#[path = "../examples/proxy.rs"]
mod proxy;

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::State, http::Uri, routing::get};
use bytes::Bytes;
use common::{t0, within};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, sync::watch};
use tower_stampede::clock::ManualClock;

/// An origin that numbers its calls, per process, and says how many it
/// has answered.
async fn origin() -> (SocketAddr, watch::Receiver<usize>) {
    let (calls, counted) = watch::channel(0);
    async fn answer(State(calls): State<watch::Sender<usize>>, uri: Uri) -> String {
        let mut n = 0;
        calls.send_modify(|count| {
            *count += 1;
            n = *count;
        });
        format!("{} by call {n}", uri.path())
    }
    let app = Router::new().fallback(get(answer)).with_state(calls);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("origin serves") });
    (address, counted)
}

/// A GET through the proxy: its `Cache-Status` and body.
async fn fetch(proxy: SocketAddr, path: &str) -> (String, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = within(
        path,
        client.get(format!("http://{proxy}{path}").parse().expect("a URI")),
    )
    .await
    .expect("the proxy answers");
    assert_eq!(response.status(), 200, "{path}");
    let status = response
        .headers()
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_example_file_gives_each_route_its_policy() {
    let (origin, mut calls) = origin().await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.toml");
    let args = [
        "--config",
        file,
        "--upstream",
        &format!("http://{origin}"),
        "--listen",
        "127.0.0.1:0",
    ];
    let args = proxy::parse_args(args.map(String::from)).expect("the example file reads");
    let clock = ManualClock::new(t0());
    let layer = proxy::memory_layer(&args).expect("a layer").clock(clock.clone());
    let (proxy, serving) = proxy::serve(layer, args).await.expect("the proxy listens");
    tokio::spawn(serving);

    // /api/prices/*: ttl 5 s. A hit within it; a new call after it.
    let (status, first) = fetch(proxy, "/api/prices/eur").await;
    assert!(status.contains("fwd=miss"), "{status}");
    let (status, again) = fetch(proxy, "/api/prices/eur").await;
    assert!(status.contains("hit") && status.contains("ttl=5"), "{status}");
    assert_eq!((again.as_str(), *calls.borrow()), (first.as_str(), 1));
    clock.advance(Duration::from_secs(6));
    let (status, after) = fetch(proxy, "/api/prices/eur").await;
    assert!(status.contains("fwd="), "expired at 5 s: {status}");
    assert_eq!(
        (after.as_str(), *calls.borrow()),
        ("/api/prices/eur by call 2", 2)
    );

    // /api/popular-posts: fresh 50 s, then served stale while one refresh
    // runs, until 2 minutes after it was stored.
    let (_, first) = fetch(proxy, "/api/popular-posts").await;
    assert_eq!(first, "/api/popular-posts by call 3");
    let (status, _) = fetch(proxy, "/api/popular-posts").await;
    assert!(status.contains("hit") && status.contains("ttl=50"), "{status}");
    clock.advance(Duration::from_secs(60));
    let (status, stale) = fetch(proxy, "/api/popular-posts").await;
    assert!(status.contains("fwd=stale"), "{status}");
    assert_eq!(stale, first, "the stale answer, at once");
    within("the background refresh", calls.wait_for(|n| *n == 4))
        .await
        .expect("the origin runs");
    let fresh = within("the refreshed entry", async {
        loop {
            let (status, body) = fetch(proxy, "/api/popular-posts").await;
            if !status.contains("fwd=stale") {
                break (status, body);
            }
            // The refresh is written after its call answers: yield to it.
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(fresh.0.contains("hit"), "{}", fresh.0);
    assert_eq!(fresh.1, "/api/popular-posts by call 4");

    // /admin/*: bypass. Every request reaches the origin, none is stored.
    let (status, one) = fetch(proxy, "/admin/users").await;
    assert!(status.contains("fwd=bypass"), "{status}");
    let (_, two) = fetch(proxy, "/admin/users").await;
    assert_eq!(
        (one.as_str(), two.as_str()),
        ("/admin/users by call 5", "/admin/users by call 6")
    );
}

#[test]
fn a_bad_file_is_refused_with_its_field_and_line() {
    let dir = std::env::temp_dir().join(format!("proxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "upstream = \"http://127.0.0.1:1\"\n\n[cache]\npolicy = { kind = \"ttl\", ttl = \"60\" }\n",
    )
    .expect("written");
    let args = ["--config".to_owned(), path.display().to_string()];
    let error = proxy::parse_args(args).err().expect("refused");
    assert!(
        error.contains("cache.policy.ttl (line 4)") && error.contains("not a duration"),
        "{error}"
    );
    let args = ["--config", "x.toml", "--policy", "ttl:1s"].map(String::from);
    let error = proxy::parse_args(args).err().expect("refused");
    assert!(error.contains("--policy is set in the file"), "{error}");
    std::fs::remove_dir_all(&dir).expect("removed");
}
