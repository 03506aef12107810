//! Run with: `cargo run --release --example origin -- --listen 127.0.0.1:8081`
//!
//! A slow origin that counts its calls, to put caches in front of: every path
//! answers after `--delay-ms` (default 200) with 1 KiB of JSON and
//! `Cache-Control: public, max-age=<--max-age>` (default 60), except
//! `GET /calls`, which answers how many calls the other paths have had, and
//! `GET /calls/log`, when each started (ms since the epoch) and its path,
//! a line each (neither is slow). With `--body-bytes N`, the other paths
//! answer N bytes of dots instead, large and slow: headers at once (with
//! `Content-Length`), then the body in 64 KiB chunks spread over
//! `--delay-ms`. The first line printed is `listening on http://ADDR`.
//!
//! For `bench/attack-vary.sh`, the slow paths' answers can be made to
//! reach the layer's in-process tables rather than its store:
//! `--status 404` answers with that status (not stored, yet its `Vary` is
//! learned), `--vary accept-encoding` adds that `Vary`, and `--set-cookie`
//! adds a `Set-Cookie` (an answer for one client, whose key then passes).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

struct Origin {
    calls: AtomicU64,
    log: Mutex<Vec<(u64, String)>>,
    delay: Duration,
    cache_control: String,
    status: StatusCode,
    vary: Option<HeaderValue>,
    set_cookie: bool,
    /// What every call answers with `--body-bytes`: one buffer, shared, so
    /// that the origin's own memory stays flat.
    large: Option<Bytes>,
}

/// About 1 KiB of JSON naming the path and the call that made it.
fn body(path: &str, call: u64) -> String {
    let posts: Vec<String> = (0..12)
        .map(|rank| {
            format!(
                r#"{{"id":{rank},"title":"popular post number {rank}","views":{}}}"#,
                100_000 - rank
            )
        })
        .collect();
    format!(
        r#"{{"path":"{path}","call":{call},"posts":[{}]}}"#,
        posts.join(",")
    )
}

async fn slow(State(origin): State<Arc<Origin>>, uri: Uri) -> Response {
    let call = origin.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Ok(mut log) = origin.log.lock() {
        log.push((now, uri.path().to_owned()));
    }
    if let Some(large) = &origin.large {
        return trickle(large.clone(), origin.delay, &origin.cache_control);
    }
    tokio::time::sleep(origin.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(cache_control) = HeaderValue::from_str(&origin.cache_control) {
        headers.insert(header::CACHE_CONTROL, cache_control);
    }
    if let Some(vary) = &origin.vary {
        headers.insert(header::VARY, vary.clone());
    }
    if origin.set_cookie {
        // A session of its own each call, as a login page would hand out.
        if let Ok(cookie) = HeaderValue::from_str(&format!("session={call}")) {
            headers.insert(header::SET_COOKIE, cookie);
        }
    }
    (origin.status, headers, body(uri.path(), call)).into_response()
}

/// `body`, its headers at once, then 64 KiB at a time spread over `over`:
/// a response that is large and slow to arrive, as a big file from a busy
/// backend is.
fn trickle(body: Bytes, over: Duration, cache_control: &str) -> Response {
    const CHUNK: usize = 64 * 1024;
    let len = body.len();
    let pause = over / u32::try_from(len.div_ceil(CHUNK).max(1)).unwrap_or(u32::MAX);
    let chunks = futures_util::stream::unfold(body, move |mut rest| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(pause).await;
        let chunk = rest.split_to(CHUNK.min(rest.len()));
        Some((Ok::<_, Infallible>(chunk), rest))
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CACHE_CONTROL, cache_control.to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn calls(State(origin): State<Arc<Origin>>) -> String {
    origin.calls.load(Ordering::SeqCst).to_string()
}

async fn calls_log(State(origin): State<Arc<Origin>>) -> String {
    let log = origin.log.lock().map(|log| log.clone()).unwrap_or_default();
    log.iter().map(|(ms, path)| format!("{ms} {path}\n")).collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8081));
    let (mut delay_ms, mut max_age) = (200u64, 60u64);
    let (mut status, mut vary, mut set_cookie) = (StatusCode::OK, None, false);
    let mut body_bytes = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--set-cookie" {
            set_cookie = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--delay-ms" => delay_ms = value.parse()?,
            "--max-age" => max_age = value.parse()?,
            "--status" => status = StatusCode::from_u16(value.parse()?)?,
            "--vary" => vary = Some(HeaderValue::from_str(&value)?),
            "--body-bytes" => body_bytes = Some(value.parse::<usize>()?),
            other => {
                return Err(format!(
                    "unknown argument {other}: --listen ADDR --delay-ms N --max-age S \
                     --status CODE --vary NAMES --set-cookie --body-bytes N"
                )
                .into());
            }
        }
    }
    let origin = Arc::new(Origin {
        calls: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        delay: Duration::from_millis(delay_ms),
        cache_control: format!("public, max-age={max_age}"),
        status,
        vary,
        set_cookie,
        large: body_bytes.map(|n| Bytes::from(vec![b'.'; n])),
    });
    let app = Router::new()
        .route("/calls", get(calls))
        .route("/calls/log", get(calls_log))
        .fallback(slow)
        .with_state(origin);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
