//! The `metrics` feature: the layer's counters and origin latency reach the
//! installed recorder under the documented names.
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;

use common::{Calls, count_status, get_request, send, slow_app, wave};
use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder},
};
use tower::Layer;
use tower_stampede::{MemoryStore, StampedeLayer};

#[tokio::test]
async fn counters_and_origin_latency_reach_the_recorder() {
    // The only test of this binary: the recorder is the process's.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("no other recorder in this test binary");
    tower_stampede::describe_metrics();

    let calls = Calls::default();
    let layer = StampedeLayer::new(MemoryStore::new());
    let service = layer.layer(slow_app(&calls));
    let replies = wave(&service, 20, |_| get_request("/api/popular-posts")).await;
    assert_eq!(count_status(&replies, "collapsed"), 19);
    send(service, get_request("/api/popular-posts")).await;

    let mut counters = HashMap::new();
    let mut origin_seconds = Vec::new();
    for (key, _unit, _help, value) in snapshotter.snapshot().into_vec() {
        let name = key.key().name().to_owned();
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert(name, n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(samples))
                if name == "tower_stampede_origin_seconds" =>
            {
                origin_seconds = samples.into_iter().map(|s| s.into_inner()).collect();
            }
            _ => {}
        }
    }
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(counter("tower_stampede_requests_total"), 21);
    assert_eq!(counter("tower_stampede_misses_total"), 20);
    assert_eq!(counter("tower_stampede_coalesced_total"), 19);
    assert_eq!(counter("tower_stampede_origin_calls_total"), 1);
    assert_eq!(counter("tower_stampede_hits_total"), 1);
    assert_eq!(calls.get(), 1);
    assert_eq!(origin_seconds.len(), 1, "one origin call timed");
    assert!(
        origin_seconds[0] >= common::ORIGIN_DELAY.as_secs_f64(),
        "the origin's 200 ms: {origin_seconds:?}"
    );
    assert_eq!(layer_stats_match(&counters, layer), Ok(()));
}

/// The recorder and `stats()` count the same events.
fn layer_stats_match(
    counters: &HashMap<String, u64>,
    layer: StampedeLayer<MemoryStore>,
) -> Result<(), String> {
    let stats = layer.stats();
    for (name, value) in [
        ("tower_stampede_requests_total", stats.requests),
        ("tower_stampede_hits_total", stats.hits),
        ("tower_stampede_misses_total", stats.misses),
        ("tower_stampede_coalesced_total", stats.coalesced),
        ("tower_stampede_origin_calls_total", stats.origin_calls),
    ] {
        if counters.get(name).copied().unwrap_or(0) != value {
            return Err(format!(
                "{name}: recorder {:?}, stats {value}",
                counters.get(name)
            ));
        }
    }
    Ok(())
}
