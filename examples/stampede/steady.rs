//! Steady load: a fixed rate of requests at one hot key, across several
//! expiries, under each policy. What matters is how many requests had to wait
//! for the origin (their `Cache-Status` says `fwd=miss`) and what that did to
//! the latency, against how often the origin was called.

use std::{
    process::ExitCode,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use axum::Router;
use tower_stampede::Policy;

use crate::{Args, client, percentile, send_one, serve_replicas, store_name, uris};

/// The steady load to apply.
pub(crate) struct Load {
    pub(crate) policies: Vec<Named>,
    pub(crate) rate: usize,
    pub(crate) duration: Duration,
    pub(crate) ttl: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            rate: 200,
            duration: Duration::from_secs(10),
            ttl: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Named {
    Ttl,
    XFetch,
    Swr,
}

impl Named {
    fn name(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::XFetch => "xfetch",
            Self::Swr => "swr",
        }
    }

    /// The policy with freshness `ttl`; SWR serves stale for as long again.
    fn policy(self, ttl: Duration) -> Policy {
        match self {
            Self::Ttl => Policy::ttl(ttl),
            Self::XFetch => Policy::xfetch(ttl),
            Self::Swr => Policy::stale_while_revalidate(ttl, ttl * 2),
        }
    }
}

pub(crate) fn parse_policies(name: &str) -> Result<Vec<Named>, String> {
    Ok(match name {
        "ttl" => vec![Named::Ttl],
        "xfetch" => vec![Named::XFetch],
        "swr" => vec![Named::Swr],
        "all" => vec![Named::Ttl, Named::XFetch, Named::Swr],
        other => return Err(format!("--policy takes ttl, xfetch, swr or all, not {other:?}")),
    })
}

pub(crate) async fn run(
    app: &Router,
    args: &Args,
    load: &Load,
    queries: &AtomicUsize,
) -> Result<ExitCode, String> {
    println!(
        "{} requests/s at one key for {} s, fresh for {} s, origin {} ms, {}",
        load.rate,
        load.duration.as_secs(),
        load.ttl.as_secs(),
        crate::QUERY_TIME.as_millis(),
        store_name(args),
    );
    println!(
        "{:<7} {:>8} {:>13} {:>17} {:>8} {:>8} {:>8} {:>7}",
        "policy", "requests", "origin calls", "waited on origin", "p50", "p99", "max", "failed"
    );
    let mut failures = 0;
    for &named in &load.policies {
        let (addrs, _layers) = serve_replicas(app, args, &named.policy(load.ttl)).await?;
        let uris = uris(&addrs);
        let total = load.rate * load.duration.as_secs() as usize;
        let client = client(load.rate);
        // A hot key: stored before the load starts, so what follows is
        // expiry after expiry, not the cold start.
        for uri in &uris {
            send_one(client.clone(), uri.clone()).await;
        }
        queries.store(0, Ordering::SeqCst);
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / load.rate as u32);
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            ticker.tick().await;
            tasks.push(tokio::spawn(send_one(
                client.clone(),
                uris[i % uris.len()].clone(),
            )));
        }
        let (mut latencies, mut waited, mut failed) = (Vec::with_capacity(total), 0, 0);
        for task in tasks {
            match task.await.ok().flatten() {
                Some((latency, status)) => {
                    waited += usize::from(status.contains("fwd=miss"));
                    latencies.push(latency);
                }
                None => failed += 1,
            }
        }
        latencies.sort();
        failures += failed;
        println!(
            "{:<7} {:>8} {:>13} {:>17} {:>8} {:>8} {:>8} {:>7}",
            named.name(),
            total,
            queries.load(Ordering::SeqCst),
            waited,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            percentile(&latencies, 100.0),
            failed,
        );
    }
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
