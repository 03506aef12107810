//! Run with: `cargo run --release -p example-popular-posts -- --stampede 1000`
//!
//! The service this crate's story starts with: an axum app on PostgreSQL
//! whose `/api/popular-posts` runs `ORDER BY views DESC LIMIT 10` over a
//! million posts without an index (about 150-200 ms on a 2-core machine; the
//! app measures it at start and says so), behind the layer:
//!
//! - `GET /api/popular-posts`: stale-while-revalidate, fresh 10 s, then
//!   served stale while one refresh runs, gone at 5 min;
//! - `GET /api/posts/{id}`: XFetch over 60 s, refreshed early as expiry
//!   nears;
//! - `GET /metrics`: the layer's counters and origin latency in Prometheus'
//!   text format (the `metrics` feature with a Prometheus recorder), never
//!   cached.
//!
//! `DATABASE_URL` names the database (default
//! `postgres://postgres@127.0.0.1:5432/test`); the `posts` table (uuid id,
//! title, views, created_at) is created and seeded with `--rows` posts
//! (default 1 000 000, about 12 s) on first run. `REDIS_URL` puts the cache
//! in Redis, shared by every replica; without it the memory store is used,
//! and the log says so.
//!
//! Without `--stampede` it serves on `--listen` (default `127.0.0.1:3000`).
//! `--stampede N` expires the cached list instead, fires N concurrent
//! requests at it over HTTP, prints what they got and the `/metrics` lines
//! of the layer, and as its last line `database queries: <q> of <N>
//! requests`, counted around the query itself; the exit status says
//! whether the layer held it to one.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use deadpool_postgres::{Pool, Runtime};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio::sync::Barrier;
use tokio_postgres::NoTls;
use tower_stampede::{MemoryStore, Policy, RedisStore, StampedeLayer, Store};
use uuid::Uuid;

const POPULAR: &str = "/api/popular-posts";
const TOP_TEN: &str = "SELECT id, title, views, created_at FROM posts ORDER BY views DESC LIMIT 10";

struct Args {
    listen: SocketAddr,
    stampede: Option<usize>,
    rows: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        stampede: None,
        rows: 1_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--listen" => parsed.listen = value.parse().map_err(|e| format!("--listen: {e}"))?,
            "--stampede" => parsed.stampede = Some(number()? as usize),
            "--rows" => parsed.rows = number()?,
            other => {
                return Err(format!(
                    "unknown argument {other}: --stampede N, --listen ADDR, --rows N"
                ));
            }
        }
    }
    Ok(parsed)
}

#[derive(Serialize)]
struct Post {
    id: Uuid,
    title: String,
    views: i64,
    created_at: String,
}

impl Post {
    fn from_row(row: &tokio_postgres::Row) -> Self {
        let created: std::time::SystemTime = row.get("created_at");
        Self {
            id: row.get("id"),
            title: row.get("title"),
            views: row.get("views"),
            created_at: httpdate::fmt_http_date(created),
        }
    }
}

#[derive(Clone)]
struct App {
    pool: Pool,
    /// Queries of the popular list that reached the database.
    popular_queries: Arc<AtomicU64>,
    metrics: PrometheusHandle,
}

/// An answer for the client, from a database error: the cache stores none.
fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "database");
    (StatusCode::SERVICE_UNAVAILABLE, "the database is unavailable").into_response()
}

async fn popular_posts(State(app): State<App>) -> Response {
    let client = match app.pool.get().await {
        Ok(client) => client,
        Err(error) => return unavailable(error),
    };
    app.popular_queries.fetch_add(1, Ordering::SeqCst);
    match client.query(TOP_TEN, &[]).await {
        Ok(rows) => {
            let posts: Vec<Post> = rows.iter().map(Post::from_row).collect();
            // The tag lets `--stampede` (or an admin endpoint) purge it.
            ([("surrogate-key", "popular-posts")], Json(posts)).into_response()
        }
        Err(error) => unavailable(error),
    }
}

async fn post(State(app): State<App>, Path(id): Path<Uuid>) -> Response {
    let client = match app.pool.get().await {
        Ok(client) => client,
        Err(error) => return unavailable(error),
    };
    let query = "SELECT id, title, views, created_at FROM posts WHERE id = $1";
    match client.query_opt(query, &[&id]).await {
        Ok(Some(row)) => Json(Post::from_row(&row)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such post").into_response(),
        Err(error) => unavailable(error),
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// Creates and seeds `posts` unless it already holds `rows` posts; one
/// process at a time, under an advisory lock.
async fn seed(pool: &Pool, rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(4242)", &[]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS posts (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            title text NOT NULL,
            views bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let have: i64 = tx.query_one("SELECT count(*) FROM posts", &[]).await?.get(0);
    if (have as u64) < rows {
        tracing::info!(have, rows, "seeding posts (first run)");
        let started = Instant::now();
        tx.execute(
            "INSERT INTO posts (title, views, created_at)
             SELECT 'Post ' || i || ': ' || md5(i::text), (random() * 10000000)::bigint,
                    now() - random() * interval '365 days'
             FROM generate_series($1::bigint + 1, $2::bigint) AS i",
            &[&have, &(rows as i64)],
        )
        .await?;
        tx.batch_execute("ANALYZE posts").await?;
        tracing::info!(took = ?started.elapsed(), "seeded");
    }
    tx.commit().await?;
    Ok(())
}

/// How long the popular query takes on the database, by its own clock.
async fn measure(pool: &Pool) -> Result<String, Box<dyn std::error::Error>> {
    let client = pool.get().await?;
    let plan = client.query(&format!("EXPLAIN ANALYZE {TOP_TEN}"), &[]).await?;
    let last: String = plan.last().map(|row| row.get(0)).unwrap_or_default();
    Ok(last.trim().to_owned())
}

fn app<St: Store>(layer: StampedeLayer<St>, state: App) -> Router {
    Router::new()
        .route(POPULAR, get(popular_posts))
        .route("/api/posts/{id}", get(post))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(layer)
}

fn layer<St: Store>(store: St) -> StampedeLayer<St> {
    StampedeLayer::new(store)
        .route(
            POPULAR,
            Policy::stale_while_revalidate(Duration::from_secs(10), Duration::from_secs(300)),
        )
        .route("/api/posts/*", Policy::xfetch(Duration::from_secs(60)))
        .route("/metrics", Policy::bypass())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = parse_args()?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    tower_stampede::describe_metrics();

    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url.clone());
    let pool = config.create_pool(Some(Runtime::Tokio1), NoTls)?;
    seed(&pool, args.rows)
        .await
        .map_err(|e| format!("cannot prepare {url}: {e} (is PostgreSQL running?)"))?;
    tracing::info!(query = TOP_TEN, "{}, without an index", measure(&pool).await?);

    let state = App {
        pool,
        popular_queries: Arc::new(AtomicU64::new(0)),
        metrics,
    };
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = RedisStore::from_url(&url)?;
            store
                .connect()
                .await
                .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
            tracing::info!(%url, "cache in Redis");
            run(layer(store), state, &args).await
        }
        Err(_) => {
            tracing::info!("REDIS_URL is not set: the cache is in this process's memory");
            run(layer(MemoryStore::new()), state, &args).await
        }
    }
}

async fn run<St: Store>(
    layer: StampedeLayer<St>,
    state: App,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    let listen = match args.stampede {
        Some(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        None => args.listen,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let server = axum::serve(listener, app(layer.clone(), state.clone()));
    let Some(n) = args.stampede else {
        tracing::info!("serving on http://{addr}{POPULAR}");
        server.await?;
        return Ok(());
    };
    tokio::spawn(async move { server.await });

    // Expire the list, wherever it is stored, so that every request misses.
    layer.invalidate_tag("popular-posts").await?;
    let before = state.popular_queries.load(Ordering::SeqCst);
    let replies = stampede(addr, n).await?;
    let queries = state.popular_queries.load(Ordering::SeqCst) - before;

    let mut statuses = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    for (status, _, latency) in &replies {
        *statuses.entry(*status).or_insert(0) += 1;
        latencies.push(*latency);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let identical = replies
        .iter()
        .filter(|(_, body, _)| *body == replies[0].1)
        .count();
    println!("{n} concurrent GET {POPULAR}, the cached list expired first");
    println!("statuses: {statuses:?}; identical bodies: {identical} of {n}");
    println!(
        "latency ms: p50 {:.1}, p99 {:.1}, max {:.1}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    // And one request after the stampede: a hit, for the metrics to show.
    send(connect(addr).await?, POPULAR).await?;
    println!("/metrics, after one more request:");
    for line in fetch(addr, "/metrics").await?.1.lines() {
        if line.starts_with("tower_stampede_") && !line.contains("quantile") {
            println!("  {line}");
        }
    }
    println!("database queries: {queries} of {n} requests");
    if queries != 1 || statuses.get(&200) != Some(&n) || identical != n {
        std::process::exit(1);
    }
    Ok(())
}

/// `n` GETs of the popular list, each on its own connection, released
/// together: status, body and latency of each.
async fn stampede(
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<(u16, Bytes, Duration)>, Box<dyn std::error::Error>> {
    let start = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let connected = connect(addr).await;
                start.wait().await;
                let sent = Instant::now();
                let (status, body) = send(connected?, POPULAR).await?;
                Ok::<_, String>((status, body, sent.elapsed()))
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await??);
    }
    Ok(replies)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn send(mut sender: Sender, path: &str) -> Result<(u16, Bytes), String> {
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "popular-posts.local")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

async fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let (status, body) = send(connect(addr).await?, path).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
