//! The policies at work: stale-while-revalidate, XFetch, stale-if-error, and
//! the route table, through the layer.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::State, http::StatusCode, routing::get};
use common::{Calls, ORIGIN_DELAY, count_status, get_request, send, slow_app, tokio_clock, wave};
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, service_fn};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Lets background work of one origin call finish. Time is paused: it moves
/// only when every task is idle, so past the origin's delay the refresh has
/// stored (or failed) for sure.
async fn settle() {
    tokio::time::sleep(ORIGIN_DELAY + Duration::from_millis(1)).await;
}

fn layer(policy: Policy) -> StampedeLayer<MemoryStore> {
    StampedeLayer::new(MemoryStore::new())
        .policy(policy)
        .clock(tokio_clock())
}

#[tokio::test(start_paused = true)]
async fn swr_in_its_stale_window_answers_everyone_at_once_and_refreshes_once() {
    let calls = Calls::default();
    let layer = layer(Policy::stale_while_revalidate(secs(10), secs(60)));
    let app = slow_app(&calls).layer(layer.clone());
    let stored = send(app.clone(), get_request("/api/popular-posts")).await;

    tokio::time::advance(secs(15)).await;
    let start = Instant::now();
    let replies = wave(&app, 200, |_| get_request("/api/popular-posts")).await;

    assert_eq!(start.elapsed(), Duration::ZERO, "nobody waited on the origin");
    assert!(replies.iter().all(|r| r.status == 200 && r.body == stored.body));
    assert_eq!(count_status(&replies, "tower-stampede; fwd=stale; ttl=-5"), 200);
    let stats = layer.stats();
    assert_eq!((stats.stale_hits, stats.refreshes), (200, 1));

    // The one refresh lands in the background.
    settle().await;
    assert_eq!(calls.get(), 2);
    let fresh = send(app, get_request("/api/popular-posts")).await;
    assert_eq!(fresh.text(), "/api/popular-posts answered by call 2");
    assert_eq!(fresh.cache_status(), "tower-stampede; hit; ttl=9");
}

#[tokio::test(start_paused = true)]
async fn swr_past_its_stale_window_is_a_collapsed_miss() {
    let calls = Calls::default();
    let layer = layer(Policy::stale_while_revalidate(secs(10), secs(60)));
    let app = slow_app(&calls).layer(layer.clone());
    send(app.clone(), get_request("/hot")).await;

    tokio::time::advance(secs(60)).await;
    let replies = wave(&app, 50, |_| get_request("/hot")).await;

    assert_eq!(calls.get(), 2);
    assert!(replies.iter().all(|r| r.text().ends_with("call 2")));
    assert_eq!(count_status(&replies, "collapsed"), 49);
    assert_eq!(layer.stats().stale_hits, 0);
}

#[tokio::test(start_paused = true)]
async fn xfetch_under_steady_load_refreshes_before_expiry_and_nobody_waits() {
    let calls = Calls::default();
    let layer = layer(Policy::xfetch(secs(2)).beta(2.0)).random(common::seeded(42));
    let app = slow_app(&calls).layer(layer.clone());
    let first = send(app.clone(), get_request("/hot")).await;
    assert!(first.cache_status().contains("stored"));

    // 50 requests a second for 10 s: five times the ttl.
    let mut replies = Vec::new();
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        replies.push(tokio::spawn(send(app.clone(), get_request("/hot"))));
    }
    let mut waited = 0;
    for reply in replies {
        let reply = reply.await.expect("no panic");
        assert_eq!(reply.status, 200);
        if reply.cache_status().contains("fwd=miss") {
            waited += 1;
        }
    }

    assert_eq!(waited, 0, "every request was a hit");
    let stats = layer.stats();
    assert_eq!(stats.hits, 500);
    assert!(
        calls.get() >= 5,
        "refreshed every ttl or sooner: {} calls",
        calls.get()
    );
    assert_eq!(
        stats.refreshes as usize,
        calls.get() - 1,
        "every later call was an early refresh"
    );
}

/// An origin that answers "good N" until told to fail, then 503.
fn flaky_app(calls: &Calls, failing: &Arc<AtomicBool>) -> Router {
    async fn handler(State((calls, failing)): State<(Calls, Arc<AtomicBool>)>) -> (StatusCode, String) {
        let n = calls.record();
        tokio::time::sleep(ORIGIN_DELAY).await;
        if failing.load(Ordering::SeqCst) {
            (StatusCode::SERVICE_UNAVAILABLE, format!("down {n}"))
        } else {
            (StatusCode::OK, format!("good {n}"))
        }
    }
    Router::new()
        .route("/{*path}", get(handler))
        .with_state((calls.clone(), Arc::clone(failing)))
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_last_good_value_when_the_origin_fails() {
    let (calls, failing) = (Calls::default(), Arc::new(AtomicBool::new(false)));
    let layer = layer(Policy::ttl(secs(10)).stale_if_error(secs(60)));
    let app = flaky_app(&calls, &failing).layer(layer.clone());
    send(app.clone(), get_request("/prices")).await;

    failing.store(true, Ordering::SeqCst);
    tokio::time::advance(secs(15)).await;
    let replies = wave(&app, 20, |_| get_request("/prices")).await;

    assert_eq!(calls.get(), 2, "one failed rebuild, collapsed");
    assert!(replies.iter().all(|r| r.status == 200 && r.text() == "good 1"));
    assert!(
        replies[0]
            .cache_status()
            .ends_with("fwd-status=503; detail=stale-if-error")
    );
    assert_eq!(count_status(&replies, "collapsed; detail=stale-if-error"), 19);
    assert!(replies.iter().all(|r| r.header("age") == Some("15")));

    // Past the window the failure shows.
    tokio::time::advance(secs(60)).await;
    let late = send(app, get_request("/prices")).await;
    assert_eq!((late.status.as_u16(), late.text()), (503, "down 3"));
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_covers_an_inner_service_error_too() {
    let calls = Calls::default();
    let origin = {
        let calls = calls.clone();
        service_fn(move |_: Request<Body>| {
            let n = calls.record();
            async move {
                tokio::time::sleep(ORIGIN_DELAY).await;
                match n {
                    1 => Ok(Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        "good",
                    )))),
                    _ => Err("connection refused"),
                }
            }
        })
    };
    let service = layer(Policy::ttl(secs(10)).stale_if_error(secs(60))).layer(origin);
    common::try_send(service.clone(), get_request("/prices"))
        .await
        .expect("first call works");

    tokio::time::advance(secs(11)).await;
    let (reply, _) = common::try_send(service, get_request("/prices"))
        .await
        .expect("the error is covered");

    assert_eq!((reply.status.as_u16(), reply.text()), (200, "good"));
    assert_eq!(
        reply.cache_status(),
        "tower-stampede; fwd=miss; detail=stale-if-error"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_keeps_the_stale_value() {
    let (calls, failing) = (Calls::default(), Arc::new(AtomicBool::new(false)));
    let layer = layer(Policy::stale_while_revalidate(secs(10), secs(60)));
    let app = flaky_app(&calls, &failing).layer(layer.clone());
    send(app.clone(), get_request("/feed")).await;

    failing.store(true, Ordering::SeqCst);
    tokio::time::advance(secs(15)).await;
    let first = send(app.clone(), get_request("/feed")).await;
    settle().await;
    let second = send(app, get_request("/feed")).await;
    settle().await;

    assert_eq!(calls.get(), 3, "two refreshes tried, both failed");
    for reply in [first, second] {
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "good 1"));
        assert!(reply.cache_status().starts_with("tower-stampede; fwd=stale"));
    }
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_over_the_bound_are_dropped_not_queued() {
    let calls = Calls::default();
    let layer = layer(Policy::stale_while_revalidate(secs(10), secs(60))).max_refreshes(1);
    let app = slow_app(&calls).layer(layer.clone());
    send(app.clone(), get_request("/a")).await;
    send(app.clone(), get_request("/b")).await;

    tokio::time::advance(secs(15)).await;
    let (a, b) = tokio::join!(
        send(app.clone(), get_request("/a")),
        send(app.clone(), get_request("/b"))
    );

    assert!(a.cache_status().contains("fwd=stale") && b.cache_status().contains("fwd=stale"));
    let stats = layer.stats();
    assert_eq!((stats.refreshes, stats.refreshes_dropped), (1, 1));
    settle().await;
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_most_specific_route_wins_and_bypass_skips_the_cache() {
    let calls = Calls::default();
    let layer = layer(Policy::ttl(secs(60)))
        .route("/api/*", Policy::ttl(secs(5)))
        .route("/api/live", Policy::bypass())
        .route("/admin/*", Policy::bypass());
    let app = slow_app(&calls).layer(layer);

    let status = |path: &'static str| {
        let app = app.clone();
        async move { send(app, get_request(path)).await.cache_status() }
    };
    assert_eq!(status("/api/live").await, "tower-stampede; fwd=bypass");
    assert_eq!(status("/admin/users").await, "tower-stampede; fwd=bypass");
    assert!(status("/api/posts").await.ends_with("stored; ttl=5"));
    assert!(
        status("/api/live/extra").await.ends_with("stored; ttl=5"),
        "exact means exact"
    );
    assert!(status("/home").await.ends_with("stored; ttl=60"));
    assert_eq!(calls.get(), 5);
}

#[tokio::test(start_paused = true)]
async fn route_layers_on_axum_routes_share_one_store() {
    let calls = Calls::default();
    let store = MemoryStore::new();
    let slow = || {
        let calls = calls.clone();
        get(move || async move {
            let n = calls.record();
            tokio::time::sleep(ORIGIN_DELAY).await;
            format!("call {n}")
        })
    };
    let app: Router = Router::new()
        .route("/api/popular-posts", slow())
        .route_layer(StampedeLayer::new(store.clone()).policy(Policy::ttl(secs(50))))
        .route("/api/prices", slow())
        .route_layer(StampedeLayer::new(store.clone()).policy(Policy::ttl(secs(5))));

    let posts = wave(&app, 20, |_| get_request("/api/popular-posts")).await;
    let prices = wave(&app, 20, |_| get_request("/api/prices")).await;

    assert_eq!(calls.get(), 2);
    assert!(posts.iter().all(|r| r.body == posts[0].body));
    assert!(prices.iter().all(|r| r.body == prices[0].body));
    assert_eq!(store.entry_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn respecting_the_origin_lets_its_cache_control_shorten_the_policy() {
    async fn directed(
        axum::extract::Path(directive): axum::extract::Path<String>,
    ) -> impl axum::response::IntoResponse {
        (
            [(http::header::CACHE_CONTROL, directive.replace('_', ", "))],
            "page",
        )
    }
    let app_with = |policy: Policy| {
        Router::new()
            .route("/{directive}", get(directed))
            .layer(layer(policy))
    };
    let respecting = app_with(Policy::ttl(secs(60)).respect_origin());
    let deciding = app_with(Policy::ttl(secs(60)));
    let status = |app: &Router, path: &'static str| {
        let app = app.clone();
        async move { send(app, get_request(path)).await.cache_status() }
    };

    assert!(status(&respecting, "/max-age=5").await.ends_with("stored; ttl=5"));
    assert!(
        status(&respecting, "/public_s-maxage=7_max-age=30")
            .await
            .ends_with("stored; ttl=7")
    );
    assert!(
        status(&respecting, "/public").await.ends_with("stored; ttl=60"),
        "silent: the policy"
    );
    assert!(
        status(&respecting, "/max-age=3600")
            .await
            .ends_with("stored; ttl=60"),
        "never longer"
    );
    assert!(
        !status(&respecting, "/max-age=0_must-revalidate")
            .await
            .contains("stored")
    );
    assert!(
        status(&deciding, "/max-age=5").await.ends_with("stored; ttl=60"),
        "off by default"
    );
}
