//! Run with: `cargo run --release --example loadgen -- --url http://127.0.0.1:8080/api/popular-posts`
//!
//! Load for comparing caches, in two modes.
//!
//! - A stampede (the default): `--requests N` (default 1000) GETs, each on a
//!   connection of its own, released together once every one is connected;
//!   spread round-robin over the `--url`s given (one per replica).
//! - A fixed rate: `--rate R` requests a second for `--duration S` seconds,
//!   over `--keys K` paths (`URL/0` .. `URL/K-1`) on pooled keep-alive
//!   connections, not waiting for answers before sending the next (an open
//!   loop, so a slow answer cannot hide the requests behind it). It reports
//!   latency second by second and, given the TTL of the entries
//!   (`--ttl S`), the p99 of requests sent inside an expiry window (from
//!   the moment an entry expires until one origin call later plus 100 ms)
//!   against the others, and how many requests waited on the origin (took
//!   at least 90% of `--origin-delay-ms`, default 200) after the first
//!   second.
//!
//! `--host NAME` sends `Host: NAME` instead of each URL's authority, as a
//! load balancer in front of replicas would: the host is part of the cache
//! key.
//!
//! With `--origin URL` (the `origin` example) it reads the origin's call
//! counter and log before and after: origin calls, and per key per TTL
//! window. `--expect-origin-calls N` makes the exit status say whether the
//! count held. The last line is `RESULT key=value ...`, for scripts.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::{BodyExt, Empty};
use hyper::{Uri, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpStream, sync::Barrier, time::Instant};

struct Args {
    urls: Vec<Uri>,
    requests: usize,
    rate: Option<u64>,
    duration: Duration,
    keys: usize,
    ttl: Duration,
    origin_delay: Duration,
    origin: Option<Uri>,
    expect: Option<u64>,
    /// The `Host` to send instead of each URL's authority.
    host: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut parsed = Args {
        urls: Vec::new(),
        requests: 1000,
        rate: None,
        duration: Duration::from_secs(30),
        keys: 1,
        ttl: Duration::from_secs(2),
        origin_delay: Duration::from_millis(200),
        origin: None,
        expect: None,
        host: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => parsed
                .urls
                .push(value.parse().map_err(|e| format!("--url: {e}"))?),
            "--requests" => parsed.requests = number()? as usize,
            "--rate" => parsed.rate = Some(number()?.max(1)),
            "--duration" => parsed.duration = Duration::from_secs(number()?),
            "--keys" => parsed.keys = number()?.max(1) as usize,
            "--ttl" => parsed.ttl = Duration::from_secs(number()?),
            "--origin-delay-ms" => parsed.origin_delay = Duration::from_millis(number()?),
            "--origin" => parsed.origin = Some(value.parse().map_err(|e| format!("--origin: {e}"))?),
            "--expect-origin-calls" => parsed.expect = Some(number()?),
            "--host" => parsed.host = Some(value),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if parsed.urls.is_empty() {
        return Err("--url is required".into());
    }
    if parsed.expect.is_some() && parsed.origin.is_none() {
        return Err("--expect-origin-calls needs --origin".into());
    }
    Ok(parsed)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A GET of `url`'s path, with `host` as `Host` (else the URL's authority).
fn get(url: &Uri, host: Option<&str>) -> Result<hyper::Request<Empty<Bytes>>, String> {
    let authority = url.authority().ok_or("the url has no host")?;
    hyper::Request::get(url.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(hyper::header::HOST, host.unwrap_or(authority.as_str()))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())
}

/// A connection of its own to `url`'s host.
async fn connect(url: &Uri) -> Result<Sender, String> {
    let authority = url.authority().ok_or("the url has no host")?;
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A request's outcome: status and `Cache-Status` kind, or why it failed.
type Outcome = Result<(u16, &'static str), String>;

/// A `Cache-Status` in a word.
fn kind(value: Option<&hyper::header::HeaderValue>) -> &'static str {
    let value = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    [
        "hit",
        "collapsed",
        "stored",
        "fwd=stale",
        "fwd=miss",
        "fwd=bypass",
    ]
    .into_iter()
    .find(|k| value.contains(k))
    .unwrap_or("-")
}

async fn read<B>(response: hyper::Response<B>) -> Outcome
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    read_timed(response, Instant::now()).await.0
}

/// As [`read`], and when the first byte of the body came, after `sent`.
async fn read_timed<B>(response: hyper::Response<B>, sent: Instant) -> (Outcome, Option<Duration>)
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let (status, kind) = (
        response.status().as_u16(),
        kind(response.headers().get("cache-status")),
    );
    let mut body = std::pin::pin!(response.into_body());
    let mut first = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) if frame.is_data() => {
                first.get_or_insert_with(|| sent.elapsed());
            }
            Ok(_) => {}
            Err(error) => return (Err(error.to_string()), first),
        }
    }
    (Ok((status, kind)), first)
}

async fn text(url: &Uri) -> Result<String, String> {
    let mut sender = connect(url).await?;
    let response = sender
        .send_request(get(url, None)?)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn origin_url(origin: &Uri, path: &str) -> Result<Uri, String> {
    let authority = origin.authority().ok_or("--origin has no host")?;
    format!("http://{authority}{path}")
        .parse()
        .map_err(|e| format!("{e}"))
}

async fn origin_calls(origin: &Uri) -> Result<u64, String> {
    text(&origin_url(origin, "/calls")?)
        .await?
        .trim()
        .parse()
        .map_err(|e| format!("/calls: {e}"))
}

/// The origin's calls: when each started (ms since the epoch), and its path.
async fn origin_log(origin: &Uri) -> Result<Vec<(u64, String)>, String> {
    let log = text(&origin_url(origin, "/calls/log")?).await?;
    Ok(log
        .lines()
        .filter_map(|line| {
            let (ms, path) = line.split_once(' ')?;
            Some((ms.parse().ok()?, path.to_owned()))
        })
        .collect())
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(latencies: &mut [Duration]) -> (f64, f64, f64) {
    latencies.sort();
    (
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(latencies, 1.0),
    )
}

/// Counts of statuses and `Cache-Status` kinds, and the failures.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    kinds: BTreeMap<&'static str, usize>,
    failed: usize,
}

impl Tally {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Ok((status, kind)) => {
                *self.statuses.entry(*status).or_default() += 1;
                *self.kinds.entry(kind).or_default() += 1;
            }
            Err(error) => {
                if self.failed < 5 {
                    eprintln!("request failed: {error}");
                }
                self.failed += 1;
            }
        }
    }
}

async fn burst(args: &Args) -> Result<String, String> {
    let start = Arc::new(Barrier::new(args.requests));
    let tasks: Vec<_> = (0..args.requests)
        .map(|i| {
            let (url, start) = (args.urls[i % args.urls.len()].clone(), Arc::clone(&start));
            let host = args.host.clone();
            tokio::spawn(async move {
                let connected = connect(&url).await;
                // Every task reaches the barrier, connected or not, or none
                // would pass it.
                start.wait().await;
                let sent = Instant::now();
                let (outcome, first_byte) = match connected {
                    Ok(mut sender) => match sender.send_request(get(&url, host.as_deref())?).await {
                        Ok(response) => read_timed(response, sent).await,
                        Err(error) => (Err(error.to_string()), None),
                    },
                    Err(error) => (Err(error), None),
                };
                Ok::<_, String>((outcome, sent.elapsed(), first_byte))
            })
        })
        .collect();
    let (mut tally, mut latencies, mut first_bytes) = (Tally::default(), Vec::new(), Vec::new());
    for task in tasks {
        let (outcome, latency, first_byte) = task.await.map_err(|e| e.to_string())??;
        if outcome.is_ok() {
            latencies.push(latency);
            first_bytes.extend(first_byte);
        }
        tally.add(&outcome);
    }
    let (p50, p99, max) = summary(&mut latencies);
    let (first_p50, first_p99, _) = summary(&mut first_bytes);
    let first_min = first_bytes.first().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{} requests released together at {}",
        args.requests,
        args.urls
            .iter()
            .map(Uri::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "statuses: {:?}; failed: {}; cache-status: {:?}",
        tally.statuses, tally.failed, tally.kinds
    );
    println!("latency ms: p50 {p50:.1}, p99 {p99:.1}, max {max:.1}");
    println!("first byte ms: first {first_min:.1}, p50 {first_p50:.1}, p99 {first_p99:.1}");
    Ok(format!(
        "mode=burst requests={} failed={} p50={p50:.1} p99={p99:.1} max={max:.1} \
         first_byte_min={first_min:.1} first_byte_p50={first_p50:.1} first_byte_p99={first_p99:.1}",
        args.requests, tally.failed
    ))
}

/// One request of the fixed-rate mode.
struct Sent {
    at: SystemTime,
    key: usize,
    latency: Duration,
    outcome: Outcome,
}

async fn rate(args: &Args, rate: u64) -> Result<String, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let total = rate * args.duration.as_secs();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = SystemTime::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total as usize {
        tick.tick().await;
        let key = i % args.keys;
        let base = &args.urls[i % args.urls.len()];
        let url: Uri = format!("{}/{key}", base.to_string().trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("{e}"))?;
        let (client, host) = (client.clone(), args.host.clone());
        tasks.push(tokio::spawn(async move {
            let (at, sent) = (SystemTime::now(), Instant::now());
            // The pooled client takes the absolute URL and sends its path.
            let mut request = hyper::Request::get(url);
            if let Some(host) = &host {
                request = request.header(hyper::header::HOST, host.as_str());
            }
            let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
            let outcome = match client.request(request).await {
                Ok(response) => read(response).await,
                Err(error) => Err(error.to_string()),
            };
            Ok::<_, String>(Sent {
                at,
                key,
                latency: sent.elapsed(),
                outcome,
            })
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for task in tasks {
        sent.push(task.await.map_err(|e| e.to_string())??);
    }
    let mut tally = Tally::default();
    let mut by_second: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for request in &sent {
        tally.add(&request.outcome);
        let second = request.at.duration_since(started).map_or(0, |d| d.as_secs());
        by_second.entry(second).or_default().push(request.latency);
    }
    println!(
        "{total} requests at {rate}/s for {} s over {} key(s)",
        args.duration.as_secs(),
        args.keys
    );
    println!(
        "statuses: {:?}; failed: {}; cache-status: {:?}",
        tally.statuses, tally.failed, tally.kinds
    );
    println!("second  requests   p50 ms   p99 ms   max ms");
    for (second, latencies) in &mut by_second {
        let (p50, p99, max) = summary(latencies);
        println!(
            "{second:>6} {:>9} {p50:>8.1} {p99:>8.1} {max:>8.1}",
            latencies.len()
        );
    }

    let delay = args.origin_delay;
    let warmup = unix_ms(started) + 1000;
    let waited = sent
        .iter()
        .filter(|r| unix_ms(r.at) >= warmup && r.latency >= delay.mul_f64(0.9))
        .count();
    let mut result = format!(
        "mode=rate requests={total} failed={} waited={waited}",
        tally.failed
    );
    if let Some(origin) = &args.origin {
        // Each origin call makes an entry that expires a TTL after it lands.
        let log = origin_log(origin).await?;
        let (from, to) = (unix_ms(started), unix_ms(SystemTime::now()));
        let base_path = args.urls[0].path().trim_end_matches('/').to_owned();
        let mut windows: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
        let mut calls = 0;
        for (ms, path) in log.iter().filter(|(ms, _)| (from..=to).contains(ms)) {
            let Some(key) = path
                .strip_prefix(base_path.as_str())
                .and_then(|k| k.trim_start_matches('/').parse().ok())
            else {
                continue;
            };
            calls += 1;
            let expires = ms + (delay + args.ttl).as_millis() as u64;
            let until = expires + (delay + Duration::from_millis(100)).as_millis() as u64;
            windows.entry(key).or_default().push((expires, until));
        }
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        for request in sent
            .iter()
            .filter(|r| r.outcome.is_ok() && unix_ms(r.at) >= warmup)
        {
            let at = unix_ms(request.at);
            let in_window = windows
                .get(&request.key)
                .is_some_and(|w| w.iter().any(|(a, b)| (*a..=*b).contains(&at)));
            if in_window {
                inside.push(request.latency);
            } else {
                outside.push(request.latency);
            }
        }
        let per_window = calls as f64
            / args.keys as f64
            / (args.duration.as_secs_f64() / args.ttl.as_secs_f64().max(0.001));
        let (_, p99_in, _) = summary(&mut inside);
        let (_, p99_out, _) = summary(&mut outside);
        println!(
            "origin calls: {calls} ({per_window:.2} per key per {} s window)",
            args.ttl.as_secs()
        );
        println!(
            "p99 inside expiry windows {p99_in:.1} ms ({} requests), outside {p99_out:.1} ms ({})",
            inside.len(),
            outside.len()
        );
        result.push_str(&format!(
            " origin_calls={calls} per_key_window={per_window:.2} p99_inside={p99_in:.1} p99_outside={p99_out:.1}"
        ));
    }
    println!("requests that waited on the origin after the first second: {waited}");
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let before = match &args.origin {
        Some(origin) => Some(origin_calls(origin).await?),
        None => None,
    };
    let mut result = match args.rate {
        Some(rate) => self::rate(&args, rate).await?,
        None => burst(&args).await?,
    };
    let mut held = result.contains(" failed=0 ");
    if let (Some(origin), Some(before)) = (&args.origin, before) {
        let calls = origin_calls(origin).await? - before;
        if args.rate.is_none() {
            println!("origin calls: {calls} of {} requests", args.requests);
            result.push_str(&format!(" origin_calls={calls}"));
        }
        if let Some(expected) = args.expect {
            held &= calls == expected;
        }
    }
    println!("RESULT {result}");
    if !held {
        std::process::exit(1);
    }
    Ok(())
}
