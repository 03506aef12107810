//! Run with: cargo run -p example-axum-routes
//!
//! Per-route policies on axum, both ways, composed with tower-http's
//! `TraceLayer`, `CompressionLayer` and `TimeoutLayer`. A self-checking smoke
//! run: it serves the app on 127.0.0.1:0, sends itself real HTTP requests,
//! prints what each one got, and exits 1 if anything differs from what is
//! expected.
//!
//! 1. The layer's own route table: one `StampedeLayer` over a whole `Router`,
//!    with `.route(pattern, policy)` for `/api/popular-posts` (SWR),
//!    `/api/prices/*` (a short TTL) and `/admin/*` (bypass).
//! 2. axum's `route_layer`: one `StampedeLayer` per route, each with its own
//!    policy (and flight table, and counters), all on one `MemoryStore`.
//!
//! Order, outermost first: `TraceLayer`, `CompressionLayer`,
//! `StampedeLayer`, `TimeoutLayer`, handler. The stampede layer caches the
//! response the layers inside it produce. With `CompressionLayer` outside it,
//! as here, the layer stores the identity body once and that one copy answers
//! every `Accept-Encoding`; each response, hits included, is gzipped again on
//! its way out (compression CPU per hit, one stored copy). With
//! `CompressionLayer` inside it (`.layer(CompressionLayer::new())` before
//! `.layer(stampede)`), the stored entry is the gzip body carrying
//! `Content-Encoding: gzip` and `Vary: Accept-Encoding`; the layer honours
//! `Vary`, so it stores one variant per `Accept-Encoding` value (each one a
//! miss and an origin call the first time) and its hits go out already
//! compressed, with no recompression: pick that when CPU per hit matters more
//! than one origin call and one stored copy per encoding. `TimeoutLayer` must
//! be inside the stampede layer, so that a hung origin call ends its flight:
//! its `408` reaches the leader and every waiter, is not stored, and the next
//! request calls the handler again. Outside, it would only cut each client's
//! wait, while the origin call (which runs in a task of its own) hangs on and
//! every later request for the key queues behind it. `TraceLayer` goes
//! outermost so that it sees every request, hits and collapsed waiters
//! included, with the headers the client gets.
//!
//! `RUST_LOG=tower_http=debug` shows `TraceLayer`'s spans, hits included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::{error::Error, process::ExitCode, time::Duration};

use axum::routing::{MethodRouter, get};
use axum::{Router, http::StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_http::{compression::CompressionLayer, timeout::TimeoutLayer, trace::TraceLayer};
use tower_stampede::{MemoryStore, Policy, StampedeLayer};
use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    prelude::*,
};

type BoxError = Box<dyn Error + Send + Sync>;
type HttpClient = Client<HttpConnector, Empty<bytes::Bytes>>;

/// 408 after `limit`, inside the stampede layer so that it ends the flight.
fn timeout(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

// How many times each handler ran.
static POPULAR: AtomicUsize = AtomicUsize::new(0);
static PRICES: AtomicUsize = AtomicUsize::new(0);
static ADMIN: AtomicUsize = AtomicUsize::new(0);
static AUTHORS: AtomicUsize = AtomicUsize::new(0);
static HUNG: AtomicUsize = AtomicUsize::new(0);

// At least `CompressionLayer`'s 32-byte minimum, so that it gzips them;
// the prices and admin bodies are smaller and go out as they are.
const AUTHORS_JSON: &str = r#"[{"id":7,"name":"Ada Lovelace","posts":12}]"#;
const POSTS: &str = r#"[{"id":1,"title":"Cache stampedes, explained","views":48213},
{"id":2,"title":"Single flight in practice","views":31877},
{"id":3,"title":"Stale while revalidate","views":29990}]"#;

/// A GET handler that counts its runs and answers `body`.
fn counted(runs: &'static AtomicUsize, body: &'static str) -> MethodRouter {
    get(move || async move {
        runs.fetch_add(1, Ordering::SeqCst);
        body
    })
}

/// An origin call that never ends: only a timeout gets its callers an answer.
async fn hung() -> &'static str {
    HUNG.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
    "never"
}

fn app() -> Router {
    let store = MemoryStore::new();

    // 1. One layer, its own route table; unmatched routes get 60 s.
    let swr = Policy::stale_while_revalidate(Duration::from_secs(50), Duration::from_secs(120));
    let table = StampedeLayer::new(store.clone())
        .policy(Policy::ttl(Duration::from_secs(60)))
        .route("/api/popular-posts", swr)
        .route("/api/prices/*", Policy::ttl(Duration::from_secs(1)))
        .route("/admin/*", Policy::bypass());
    let with_table = Router::new()
        .route("/api/popular-posts", counted(&POPULAR, POSTS))
        .route("/api/prices/btc", counted(&PRICES, r#"{"btc":64000}"#))
        .route("/admin/stats", counted(&ADMIN, r#"{"uptime":1}"#))
        .layer(timeout(Duration::from_secs(5)))
        .layer(table);

    // 2. `route_layer`, one router per route: a `route_layer` wraps every
    // route added before it, so two on one router would stack on the first.
    let authors = Router::new()
        .route("/api/authors", counted(&AUTHORS, AUTHORS_JSON))
        .route_layer(timeout(Duration::from_secs(5)))
        .route_layer(StampedeLayer::new(store.clone()).policy(Policy::ttl(Duration::from_secs(30))));
    // A short timeout on the route whose origin hangs, to show it quickly.
    let report = Router::new()
        .route("/api/report", get(hung))
        .route_layer(timeout(Duration::from_millis(300)))
        .route_layer(StampedeLayer::new(store).policy(Policy::ttl(Duration::from_secs(60))));

    with_table
        .merge(authors)
        .merge(report)
        // Outside the stampede layers: the identity body is stored, every
        // response is compressed on its way out.
        .layer(CompressionLayer::new())
        // Outermost: sees hits and collapsed waiters too.
        .layer(TraceLayer::new_for_http())
}

/// What one response said, to a request that asked for gzip or not.
struct Seen {
    gzip: bool,
    status: u16,
    cache: String,
    encoding: String,
}

const GZIP: bool = true;
const IDENTITY: bool = false;

/// Sends requests to one route at a time, prints a row per response and
/// counts the responses that were not as expected.
struct Smoke {
    client: HttpClient,
    base: String,
    failures: usize,
    path: &'static str,
    runs: &'static AtomicUsize,
    /// Whether the route's body is big enough for `CompressionLayer`.
    compresses: bool,
    n: usize,
}

impl Smoke {
    fn route(&mut self, path: &'static str, runs: &'static AtomicUsize, compresses: bool) {
        (self.path, self.runs, self.compresses, self.n) = (path, runs, compresses, 0);
    }

    async fn get(&self, gzip: bool) -> Result<Seen, BoxError> {
        let mut request = http::Request::get(format!("{}{}", self.base, self.path));
        if gzip {
            request = request.header(http::header::ACCEPT_ENCODING, "gzip");
        }
        let response = self.client.request(request.body(Empty::new())?).await?;
        // One value each here: one stampede layer on each route, one encoding.
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        };
        let seen = Seen {
            gzip,
            status: response.status().as_u16(),
            cache: header("cache-status").to_owned(),
            encoding: header("content-encoding").to_owned(),
        };
        // The whole body: a response only counts once it has all arrived.
        response.into_body().collect().await?;
        Ok(seen)
    }

    /// Expects `Cache-Status` to contain `want`, the body gzipped exactly
    /// when asked for and compressible, and the handler to have run `runs` times.
    fn row(&mut self, seen: &Seen, want: &str, runs: usize) {
        let ran = self.runs.load(Ordering::SeqCst);
        let gzipped = seen.encoding == "gzip";
        let ok = seen.cache.contains(want) && gzipped == (seen.gzip && self.compresses) && ran == runs;
        self.n += 1;
        let (path, n, status, cache, encoding) =
            (self.path, self.n, seen.status, &seen.cache, &seen.encoding);
        let asked = if seen.gzip { "gzip" } else { "-" };
        let verdict = if ok { "ok" } else { "UNEXPECTED" };
        println!("{path:<19}{n:>2}  {asked:<5}{status:>4}  {cache:<57} {encoding:<8}{ran:>4}  {verdict}");
        self.failures += usize::from(!ok);
    }

    async fn check(&mut self, gzip: bool, want: &str, runs: usize) -> Result<(), BoxError> {
        let seen = self.get(gzip).await?;
        self.row(&seen, want, runs);
        Ok(())
    }
}

/// What `RUST_LOG` asks for, as `target=level` directives (tracing-subscriber's
/// `Targets`, which needs no regex engine, unlike `EnvFilter`); `default`
/// when it is unset or unreadable.
fn log_filter(default: LevelFilter) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(default))
}

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(log_filter(LevelFilter::WARN))
        .init();

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app()).await });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let (path, runs, compresses, n, failures) = ("", &POPULAR, false, 0, 0);
    let s = &mut Smoke {
        client,
        base,
        failures,
        path,
        runs,
        compresses,
        n,
    };
    println!(
        "route               #  asks http  {:<57} encoding runs",
        "Cache-Status"
    );

    // SWR from the table: a miss, then a hit, both gzipped on their way out;
    // a client without gzip then gets the same one stored identity copy.
    s.route("/api/popular-posts", &POPULAR, true);
    s.check(GZIP, "stored; ttl=50", 1).await?;
    s.check(GZIP, "; hit;", 1).await?;
    s.check(IDENTITY, "; hit;", 1).await?;

    // `/api/prices/*`, 1 s TTL: stored, a hit, and a miss once expired.
    s.route("/api/prices/btc", &PRICES, false);
    s.check(GZIP, "stored; ttl=1", 1).await?;
    s.check(GZIP, "; hit;", 1).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.check(GZIP, "stored; ttl=1", 2).await?;

    // `/admin/*` is bypassed: every request runs the handler.
    s.route("/admin/stats", &ADMIN, false);
    s.check(GZIP, "tower-stampede; fwd=bypass", 1).await?;
    s.check(GZIP, "tower-stampede; fwd=bypass", 2).await?;

    // A route_layer'd route, cached by its own layer with its own 30 s TTL.
    s.route("/api/authors", &AUTHORS, true);
    s.check(GZIP, "stored; ttl=30", 1).await?;
    s.check(GZIP, "; hit;", 1).await?;

    // A hung origin: two concurrent requests share one call and its 408;
    // the 408 is not stored, so the next request calls the handler again.
    s.route("/api/report", &HUNG, false);
    let (a, b) = tokio::join!(s.get(GZIP), s.get(GZIP));
    let mut pair = [a?, b?];
    pair.sort_by_key(|r| r.cache.contains("collapsed")); // the leader first
    s.row(&pair[0], "fwd=miss; fwd-status=408", 1);
    s.row(&pair[1], "fwd=miss; fwd-status=408; collapsed", 1);
    s.check(GZIP, "fwd=miss; fwd-status=408", 2).await?;

    if s.failures > 0 {
        println!("{} response(s) not as expected", s.failures);
        return Ok(ExitCode::FAILURE);
    }
    println!("all as expected");
    Ok(ExitCode::SUCCESS)
}
