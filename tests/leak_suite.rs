//! The never-leak rule, case by case: a response meant for one user is never
//! served to another.
//!
//! Each case is a rule that makes a response personal (a cookie, `private`,
//! `no-store`, `no-cache`, `Vary: *`, a request's `Authorization` or
//! `Cookie`, an authorized request's response that allows sharing only
//! until it must be revalidated), a response that `Vary`s on a request
//! header, a poisoned `Host` (another host, or one with a path in it),
//! headers that rewrite the target the origin builds links from or routes
//! on, or a path an origin normalises onto a bypassed route; on both
//! stores (in memory, and a real `redis-server`), and in memory under
//! `Policy::origin` (freshness from the origin's headers); and on both paths a
//! response could leak by: stored and served to a later request (direct),
//! or handed to the waiters of a shared flight (collapsed). The origin makes
//! every body unique to its call and echoes who asked, so a body that
//! reached the wrong client shows. Cases run one after another, each in its
//! own task, and a test fails listing every case that failed.
//!
//! Two more tests at the end try hosts beyond `Host` (an absolute target
//! naming another authority, `X-Forwarded-Host`), which origins read too.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderName, Request, Uri, header},
    response::IntoResponse,
    routing::get,
};
use common::{Calls, ORIGIN_DELAY, Reply, send, wave};
use tokio::sync::watch;
use tower_stampede::{MemoryStore, Policy, StampedeLayer, Stats, Store};

/// What makes the origin's response for one client only, or tempts the
/// cache into handing it to others.
#[derive(Debug, Clone, Copy)]
enum Rule {
    SetCookie,
    Private,
    NoStore,
    NoCache,
    VaryStar,
    Authorization,
    /// A plain response to a request with a session cookie.
    Cookie,
    VaryLanguage,
    HostPoisoning,
    /// An authorized request's response with `max-age=0, must-revalidate`.
    MustRevalidate,
    /// ... with `max-age=60, proxy-revalidate`: no permission to share.
    ProxyRevalidate,
    /// ... with `s-maxage=0`.
    SMaxAgeZero,
    /// A `Host` with a path in it, making the key of another path.
    HostWithPath,
    /// Headers that frameworks build links from or route on.
    Forwarding,
    /// A path that the origin normalises onto a bypassed route.
    NotNormal,
}

impl Rule {
    /// The first path segment, which tells the origin which headers to send.
    fn kind(self) -> &'static str {
        match self {
            Self::SetCookie => "set-cookie",
            Self::Private => "private",
            Self::NoStore => "no-store",
            Self::NoCache => "no-cache",
            Self::VaryStar => "vary-star",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::VaryLanguage => "vary-language",
            Self::HostPoisoning => "host",
            Self::MustRevalidate => "must-revalidate",
            Self::ProxyRevalidate => "proxy-revalidate",
            Self::SMaxAgeZero => "s-maxage-zero",
            Self::HostWithPath => "host-path",
            Self::Forwarding => "forwarding",
            Self::NotNormal => "admin",
        }
    }

    /// The `Cache-Status` detail of a response that is its client's alone.
    fn private_detail(self) -> &'static str {
        match self {
            Self::SetCookie => "set-cookie",
            Self::Private | Self::NoStore | Self::NoCache => "cache-control",
            Self::VaryStar => "vary",
            Self::Authorization | Self::MustRevalidate | Self::ProxyRevalidate | Self::SMaxAgeZero => {
                "authorization"
            }
            Self::Cookie => "cookie",
            Self::VaryLanguage
            | Self::HostPoisoning
            | Self::HostWithPath
            | Self::Forwarding
            | Self::NotNormal => {
                unreachable!("{self:?} responses are shareable")
            }
        }
    }
}

/// How a response could reach a client it was not made for.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// One client after another: a later one could be served a stored
    /// response.
    Direct,
    /// This many clients at once: they could share one flight's response.
    Collapsed(usize),
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    rule: Rule,
    path: Path,
}

const CLIENTS: usize = 10;

// One case a line reads as the table it is.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "set-cookie.direct", rule: Rule::SetCookie, path: Path::Direct },
    Case { name: "set-cookie.collapsed", rule: Rule::SetCookie, path: Path::Collapsed(CLIENTS) },
    Case { name: "private.direct", rule: Rule::Private, path: Path::Direct },
    Case { name: "private.collapsed", rule: Rule::Private, path: Path::Collapsed(CLIENTS) },
    Case { name: "no-store.direct", rule: Rule::NoStore, path: Path::Direct },
    Case { name: "no-store.collapsed", rule: Rule::NoStore, path: Path::Collapsed(CLIENTS) },
    Case { name: "no-cache.direct", rule: Rule::NoCache, path: Path::Direct },
    Case { name: "no-cache.collapsed", rule: Rule::NoCache, path: Path::Collapsed(CLIENTS) },
    Case { name: "vary-star.direct", rule: Rule::VaryStar, path: Path::Direct },
    Case { name: "vary-star.collapsed", rule: Rule::VaryStar, path: Path::Collapsed(CLIENTS) },
    Case { name: "authorization.direct", rule: Rule::Authorization, path: Path::Direct },
    Case { name: "authorization.collapsed", rule: Rule::Authorization, path: Path::Collapsed(CLIENTS) },
    Case { name: "cookie.direct", rule: Rule::Cookie, path: Path::Direct },
    Case { name: "cookie.collapsed", rule: Rule::Cookie, path: Path::Collapsed(CLIENTS) },
    Case { name: "vary-language.direct", rule: Rule::VaryLanguage, path: Path::Direct },
    Case { name: "vary-language.collapsed", rule: Rule::VaryLanguage, path: Path::Collapsed(CLIENTS) },
    Case { name: "host-poisoning.direct", rule: Rule::HostPoisoning, path: Path::Direct },
    Case { name: "host-poisoning.collapsed", rule: Rule::HostPoisoning, path: Path::Collapsed(CLIENTS) },
    Case { name: "must-revalidate.direct", rule: Rule::MustRevalidate, path: Path::Direct },
    Case { name: "must-revalidate.collapsed", rule: Rule::MustRevalidate, path: Path::Collapsed(CLIENTS) },
    Case { name: "proxy-revalidate.direct", rule: Rule::ProxyRevalidate, path: Path::Direct },
    Case { name: "proxy-revalidate.collapsed", rule: Rule::ProxyRevalidate, path: Path::Collapsed(CLIENTS) },
    Case { name: "s-maxage-zero.direct", rule: Rule::SMaxAgeZero, path: Path::Direct },
    Case { name: "s-maxage-zero.collapsed", rule: Rule::SMaxAgeZero, path: Path::Collapsed(CLIENTS) },
    Case { name: "host-path.direct", rule: Rule::HostWithPath, path: Path::Direct },
    Case { name: "host-path.collapsed", rule: Rule::HostWithPath, path: Path::Collapsed(CLIENTS) },
    Case { name: "forwarding.direct", rule: Rule::Forwarding, path: Path::Direct },
    Case { name: "forwarding.collapsed", rule: Rule::Forwarding, path: Path::Collapsed(CLIENTS) },
    Case { name: "not-normal.direct", rule: Rule::NotNormal, path: Path::Direct },
    Case { name: "not-normal.collapsed", rule: Rule::NotNormal, path: Path::Collapsed(CLIENTS) },
    // A private response arriving while 100 waiters queue on its flight.
    Case { name: "set-cookie.101-clients", rule: Rule::SetCookie, path: Path::Collapsed(101) },
];

const LANGUAGES: [&str; 5] = ["en", "fr", "de", "es", "ja"];
const EVIL_HOST: &str = "evil.example";
const API_HOST: &str = "api.example";

/// The origin's state: its calls, and a bell rung as each one starts.
#[derive(Clone)]
struct Origin {
    calls: Calls,
    started: Arc<watch::Sender<usize>>,
}

/// The kinds of response the origin knows, each the name of a path segment.
const KINDS: &[&str] = &[
    "set-cookie",
    "private",
    "no-store",
    "no-cache",
    "vary-star",
    "authorization",
    "cookie",
    "vary-language",
    "host",
    "must-revalidate",
    "proxy-revalidate",
    "s-maxage-zero",
    "host-path",
    "forwarding",
    "admin",
];

/// The path as an origin that normalises paths routes it: unreserved
/// characters percent-decoded, dot and empty segments dropped.
fn normalised(path: &str) -> String {
    let mut decoded = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let byte = rest
            .get(at + 1..at + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match byte {
            Some(byte) => {
                decoded.push(char::from(byte));
                rest = &rest[at + 3..];
            }
            None => {
                decoded.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    decoded.push_str(rest);
    let segments: Vec<_> = decoded
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", segments.join("/"))
}

/// Answers with a body unique to the call that echoes who asked (their
/// `Authorization`, `Cookie`, `Accept-Language`), what it served (the path
/// and method it routed on, which `X-Original-URL`, `X-Rewrite-URL` and
/// `X-HTTP-Method-Override` change, as some frameworks let them) and an
/// absolute link built as frameworks behind proxies build it (from
/// `X-Forwarded-Proto`, the last `Host`, `X-Forwarded-Port` and
/// `X-Forwarded-Prefix`), with the headers that the path's kind names: the
/// first segment of its normalised path that is a kind, else a public page.
async fn origin(State(origin): State<Origin>, uri: Uri, request: HeaderMap) -> impl IntoResponse {
    let n = origin.calls.record();
    origin.started.send_modify(|started| *started += 1);
    tokio::time::sleep(ORIGIN_DELAY).await;
    let value = |name: &str| request.get(name).map(|v| v.to_str().expect("ascii").to_owned());
    let echo = |name: HeaderName| value(name.as_str()).unwrap_or_else(|| "none".to_owned());
    let routed = value("x-original-url")
        .or_else(|| value("x-rewrite-url"))
        .unwrap_or_else(|| normalised(uri.path()));
    let method = value("x-http-method-override").unwrap_or_else(|| "GET".to_owned());
    let host = request
        .get_all(header::HOST)
        .iter()
        .next_back()
        .map_or("none", |v| v.to_str().expect("ascii"));
    let port = value("x-forwarded-port")
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    let body = format!(
        "call {n}; auth={}; cookie={}; lang={}; path={routed}; method={method}; link={}://{host}{port}{}/next",
        echo(header::AUTHORIZATION),
        echo(header::COOKIE),
        echo(header::ACCEPT_LANGUAGE),
        value("x-forwarded-proto").unwrap_or_else(|| "https".to_owned()),
        value("x-forwarded-prefix").unwrap_or_default(),
    );
    let kind = routed
        .split('/')
        .find(|segment| KINDS.contains(segment))
        .unwrap_or("host");
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: String| {
        headers.insert(name, value.parse().expect("valid value"));
    };
    match kind {
        "set-cookie" => {
            set(header::SET_COOKIE, format!("session={n}"));
            // The worst case: the page says it is public, yet the cookie
            // makes it personal.
            set(header::CACHE_CONTROL, "public, max-age=60".into());
        }
        "private" => set(header::CACHE_CONTROL, "private, max-age=60".into()),
        "no-store" => set(header::CACHE_CONTROL, "no-store".into()),
        "no-cache" => set(header::CACHE_CONTROL, "no-cache".into()),
        "vary-star" => set(header::VARY, "*".into()),
        // Fresh for a minute, but not `public`: not for other users when
        // the request was authorized, or carried a cookie (as the pages of
        // most handlers that read a session cookie are). The admin pages
        // count on their route's bypass, as intranet pages do.
        "authorization" | "cookie" | "admin" => set(header::CACHE_CONTROL, "max-age=60".into()),
        // Shareable with authorized requests only while fresh by their own
        // word: never, here.
        "must-revalidate" => set(header::CACHE_CONTROL, "max-age=0, must-revalidate".into()),
        // `proxy-revalidate` is no permission to share (RFC 9111 3.5).
        "proxy-revalidate" => set(header::CACHE_CONTROL, "max-age=60, proxy-revalidate".into()),
        "s-maxage-zero" => set(header::CACHE_CONTROL, "s-maxage=0, max-age=60".into()),
        "vary-language" => {
            set(header::VARY, "accept-language".into());
            set(header::CACHE_CONTROL, "public, max-age=60".into());
        }
        "host" | "host-path" | "forwarding" => set(header::CACHE_CONTROL, "public, max-age=60".into()),
        other => panic!("no rule {other}"),
    }
    (headers, body)
}

fn get_with(uri: &str, headers: &[(HeaderName, String)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.body(Body::empty()).expect("valid request")
}

/// Client `i`, known by its session cookie.
fn with_cookie(uri: &str, i: usize) -> Request<Body> {
    get_with(uri, &[(header::COOKIE, format!("user=u{i}"))])
}

/// What a request carries that makes the answer to it its own.
#[derive(Debug, Clone, Copy)]
enum Credential {
    Authorization,
    Cookie,
}

impl Credential {
    /// A request of `user`'s.
    fn request(self, uri: &str, user: &str) -> Request<Body> {
        get_with(uri, &[(self.header(), self.value(user))])
    }

    fn header(self) -> HeaderName {
        match self {
            Self::Authorization => header::AUTHORIZATION,
            Self::Cookie => header::COOKIE,
        }
    }

    /// What `user` sends, as the origin echoes it.
    fn value(self, user: &str) -> String {
        match self {
            Self::Authorization => format!("Bearer {user}"),
            Self::Cookie => format!("session={user}"),
        }
    }

    /// The field the origin echoes it in.
    fn field(self) -> &'static str {
        match self {
            Self::Authorization => "auth",
            Self::Cookie => "cookie",
        }
    }

    fn rule(self) -> Rule {
        match self {
            Self::Authorization => Rule::Authorization,
            Self::Cookie => Rule::Cookie,
        }
    }
}

fn with_language(uri: &str, language: &str) -> Request<Body> {
    get_with(uri, &[(header::ACCEPT_LANGUAGE, language.to_owned())])
}

fn with_host(uri: &str, host: &str) -> Request<Body> {
    get_with(uri, &[(header::HOST, host.to_owned())])
}

/// One field the origin echoed, such as `cookie`.
fn echoed<'a>(run: &Run, reply: &'a Reply, field: &str) -> &'a str {
    reply
        .text()
        .split("; ")
        .find_map(|part| part.strip_prefix(field)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{}: no {field} in {:?}", run.label, reply.text()))
}

/// Which origin call made the body.
fn call_of(run: &Run, reply: &Reply) -> usize {
    reply
        .text()
        .split("; ")
        .next()
        .and_then(|call| call.strip_prefix("call ")?.parse().ok())
        .unwrap_or_else(|| panic!("{}: no call number in {:?}", run.label, reply.text()))
}

/// A case, set up on one store.
struct Run {
    /// Store and case, for every assertion message.
    label: String,
    uri: String,
    app: Router,
    calls: Calls,
    started: Arc<watch::Sender<usize>>,
    stats: Arc<dyn Fn() -> Stats + Send + Sync>,
    /// Whether every waiter is known to join the flight before the origin
    /// answers: so with paused time; with real time and network, a busy
    /// machine may delay one past the origin's 200 ms.
    exact_waiters: bool,
    /// Whether the layer runs `Policy::origin`, which stores `no-cache`
    /// responses to revalidate them: then the request's cookie is what
    /// keeps such a response its client's.
    origin_policy: bool,
}

impl Run {
    fn new<St: Store>(store_name: &str, case: &Case, layer: StampedeLayer<St>, exact_waiters: bool) -> Self {
        let origin = Origin {
            calls: Calls::default(),
            started: Arc::new(watch::Sender::new(0)),
        };
        // Every case's layer has a bypassed admin route, which only the
        // not-normal case asks for.
        let layer = layer.route("/admin/*", Policy::bypass());
        let app = Router::new()
            .fallback(get(self::origin))
            .with_state(origin.clone())
            .layer(layer.clone());
        Self {
            label: format!("[{store_name} {}]", case.name),
            uri: format!("/{}/{}", case.rule.kind(), case.name),
            app,
            calls: origin.calls,
            started: origin.started,
            stats: Arc::new(move || layer.stats()),
            exact_waiters,
            origin_policy: false,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let reply = send(self.app.clone(), request).await;
        assert_eq!(reply.status, 200, "{}: {:?}", self.label, reply.text());
        reply
    }

    /// Request 0 first; once it is at the origin, requests 1 to `n - 1` at
    /// once, while it is still there. The replies in request order.
    async fn collapsed(&self, n: usize, request: impl Fn(usize) -> Request<Body>) -> Vec<Reply> {
        let mut started = self.started.subscribe();
        let before = *started.borrow_and_update();
        let leader = tokio::spawn(send(self.app.clone(), request(0)));
        common::within(
            "the leader reaches the origin",
            started.wait_for(|&now| now > before),
        )
        .await
        .expect("the origin lives as long as the run");
        let waiters = wave(&self.app, n - 1, |i| request(i + 1)).await;
        let mut replies = vec![leader.await.expect("the leader's task does not panic")];
        replies.extend(waiters);
        for reply in &replies {
            assert_eq!(reply.status, 200, "{}: {:?}", self.label, reply.text());
        }
        replies
    }

    /// Client `i` of a collapsed wave was answered by the origin, not handed
    /// a shared or stored response; and, when it is known to have waited on
    /// the flight, was sent forward for `rule`'s reason.
    fn assert_went_forward(&self, i: usize, reply: &Reply, rule: Rule) {
        let status = reply.cache_status();
        assert!(
            !status.contains("collapsed") && !status.contains("hit"),
            "{}: client {i}: {status}",
            self.label
        );
        let detail = match rule {
            Rule::NoCache if self.origin_policy => "detail=cookie".to_owned(),
            _ => format!("detail={}", rule.private_detail()),
        };
        assert!(
            !self.exact_waiters || status.ends_with(&detail),
            "{}: client {i}: {status}",
            self.label
        );
    }

    /// The requests of a wave over `keys` cache keys waited on flights, so
    /// the wave did test what a flight hands its waiters.
    fn assert_waited(&self, n: usize, keys: usize) {
        let coalesced = (self.stats)().coalesced;
        let expected = (n - keys) as u64;
        if self.exact_waiters {
            assert_eq!(coalesced, expected, "{}: waiters of the flights", self.label);
        } else {
            assert!(
                (1..=expected).contains(&coalesced),
                "{}: {coalesced} waiters of the flights",
                self.label
            );
        }
    }
}

async fn check(run: Run, case: &Case) {
    match (case.rule, case.path) {
        (Rule::Authorization, Path::Direct) => credential_direct(&run, Credential::Authorization).await,
        (Rule::Authorization, Path::Collapsed(n)) => {
            credential_collapsed(&run, Credential::Authorization, n).await
        }
        (Rule::Cookie, Path::Direct) => credential_direct(&run, Credential::Cookie).await,
        (Rule::Cookie, Path::Collapsed(n)) => credential_collapsed(&run, Credential::Cookie, n).await,
        (Rule::VaryLanguage, Path::Direct) => language_direct(&run).await,
        (Rule::VaryLanguage, Path::Collapsed(n)) => language_collapsed(&run, n).await,
        (Rule::HostPoisoning, Path::Direct) => host_direct(&run).await,
        (Rule::HostPoisoning, Path::Collapsed(n)) => host_collapsed(&run, n).await,
        (Rule::MustRevalidate | Rule::ProxyRevalidate | Rule::SMaxAgeZero, Path::Direct) => {
            authorized_direct(&run).await
        }
        (Rule::MustRevalidate | Rule::ProxyRevalidate | Rule::SMaxAgeZero, Path::Collapsed(n)) => {
            authorized_collapsed(&run, case.rule, n).await
        }
        (Rule::HostWithPath, Path::Direct) => host_path_direct(&run).await,
        (Rule::HostWithPath, Path::Collapsed(n)) => host_path_collapsed(&run, n).await,
        (Rule::Forwarding, Path::Direct) => forwarding_direct(&run).await,
        (Rule::Forwarding, Path::Collapsed(n)) => forwarding_collapsed(&run, n).await,
        (Rule::NotNormal, Path::Direct) => not_normal_direct(&run).await,
        (Rule::NotNormal, Path::Collapsed(n)) => not_normal_collapsed(&run, n).await,
        (rule, Path::Direct) => personal_direct(&run, rule).await,
        (rule, Path::Collapsed(n)) => personal_collapsed(&run, rule, n).await,
    }
    // A store that failed would have left the case to in-process coalescing,
    // untested against the store.
    assert_eq!((run.stats)().store_errors, 0, "{}: store errors", run.label);
}

/// Client `i`'s reply was made for client `i` (its cookie echoed), by its
/// own call, and carries the cookie minted by that call.
fn assert_own_personal(run: &Run, rule: Rule, i: usize, reply: &Reply) {
    let label = &run.label;
    assert_eq!(
        echoed(run, reply, "cookie"),
        format!("user=u{i}"),
        "{label}: client {i} was served {:?}",
        reply.text()
    );
    if let Rule::SetCookie = rule {
        assert_eq!(
            reply.header("set-cookie"),
            Some(format!("session={}", call_of(run, reply)).as_str()),
            "{label}: client {i} got a cookie minted for another call, with {:?}",
            reply.text()
        );
    }
}

/// No two replies share a body, an origin call or a minted cookie.
fn assert_all_distinct(run: &Run, replies: &[Reply]) {
    let label = &run.label;
    let bodies: HashSet<_> = replies.iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies.len(), replies.len(), "{label}: a body reached two clients");
    let calls: HashSet<_> = replies.iter().map(|r| call_of(run, r)).collect();
    assert_eq!(
        calls.len(),
        replies.len(),
        "{label}: one call answered two clients"
    );
    let cookies: Vec<_> = replies.iter().filter_map(|r| r.header("set-cookie")).collect();
    let distinct: HashSet<_> = cookies.iter().collect();
    assert_eq!(
        distinct.len(),
        cookies.len(),
        "{label}: a session cookie reached two clients"
    );
}

/// Set-Cookie, private, no-store, no-cache, Vary: *: clients one after
/// another each get their own response; nothing is stored.
async fn personal_direct(run: &Run, rule: Rule) {
    let label = &run.label;
    let mut replies = Vec::new();
    for i in 0..3 {
        let reply = run.send(with_cookie(&run.uri, i)).await;
        assert_own_personal(run, rule, i, &reply);
        assert_eq!(
            call_of(run, &reply),
            i + 1,
            "{label}: client {i} was not answered by its own call"
        );
        replies.push(reply);
    }
    assert_all_distinct(run, &replies);
    assert_eq!(run.calls.get(), 3, "{label}: every client went to the origin");
    assert_eq!(
        (run.stats)().hits,
        0,
        "{label}: a personal response was served from the store"
    );
}

/// The same, all at once: the waiters of the flight go to the origin
/// themselves rather than take the leader's response.
async fn personal_collapsed(run: &Run, rule: Rule, n: usize) {
    let label = &run.label;
    let replies = run.collapsed(n, |i| with_cookie(&run.uri, i)).await;
    for (i, reply) in replies.iter().enumerate() {
        assert_own_personal(run, rule, i, reply);
    }
    assert_all_distinct(run, &replies);
    for (i, reply) in replies.iter().enumerate() {
        run.assert_went_forward(i, reply, rule);
    }
    assert_eq!(run.calls.get(), n, "{label}: every client went to the origin");
    run.assert_waited(n, 1);

    let later = run.send(with_cookie(&run.uri, n)).await;
    assert_own_personal(run, rule, n, &later);
    assert_eq!(run.calls.get(), n + 1, "{label}: a personal response was stored");
    assert_eq!(
        (run.stats)().hits,
        0,
        "{label}: a personal response was served from the store"
    );
}

/// The reply echoes `expected` as the client's `field`: it was made for
/// this client.
fn assert_echo(run: &Run, reply: &Reply, field: &str, expected: &str) {
    assert_eq!(
        echoed(run, reply, field),
        expected,
        "{}: the client with {field}={expected} was served {:?}",
        run.label,
        reply.text()
    );
}

/// A response to a user's credential (not `public`) reaches no other user
/// nor an anonymous client, and an anonymous stored response reaches no
/// user with a credential.
async fn credential_direct(run: &Run, credential: Credential) {
    let label = &run.label;
    let field = credential.field();
    // The credential first: nothing may be stored for the others.
    let first = format!("{}?credential-first", run.uri);
    let alice = run.send(credential.request(&first, "alice")).await;
    let bob = run.send(credential.request(&first, "bob")).await;
    let anonymous = run.send(get_with(&first, &[])).await;
    assert_echo(run, &alice, field, &credential.value("alice"));
    assert_echo(run, &bob, field, &credential.value("bob"));
    assert_echo(run, &anonymous, field, "none");
    assert_eq!(run.calls.get(), 3, "{label}: a personal response was stored");

    // Anonymous first: what it stores is there to be (wrongly) served.
    let second = format!("{}?anonymous-first", run.uri);
    let stored = run.send(get_with(&second, &[])).await;
    assert!(
        stored.cache_status().contains("stored"),
        "{label}: {}",
        stored.cache_status()
    );
    let carol = run.send(credential.request(&second, "carol")).await;
    let dave = run.send(credential.request(&second, "dave")).await;
    assert_echo(run, &carol, field, &credential.value("carol"));
    assert_echo(run, &dave, field, &credential.value("dave"));
    let detail = format!(
        "fwd=request; fwd-status=200; detail={}",
        credential.rule().private_detail()
    );
    assert!(
        carol.cache_status().ends_with(&detail),
        "{label}: {}",
        carol.cache_status()
    );
    let anonymous = run.send(get_with(&second, &[])).await;
    assert_eq!(
        anonymous.body, stored.body,
        "{label}: anonymous clients share the public page"
    );
    assert_eq!(run.calls.get(), 6, "{label}");
    assert_all_distinct(run, &[alice, bob, carol, dave]);
}

async fn credential_collapsed(run: &Run, credential: Credential, n: usize) {
    let label = &run.label;
    let field = credential.field();
    let replies = run
        .collapsed(n, |i| credential.request(&run.uri, &format!("user-{i}")))
        .await;
    for (i, reply) in replies.iter().enumerate() {
        assert_echo(run, reply, field, &credential.value(&format!("user-{i}")));
    }
    assert_all_distinct(run, &replies);
    for (i, reply) in replies.iter().enumerate() {
        run.assert_went_forward(i, reply, credential.rule());
    }
    assert_eq!(run.calls.get(), n, "{label}: every user went to the origin");
    run.assert_waited(n, 1);

    // Users waiting on an anonymous leader, whose response is stored and
    // shared with the anonymous waiters: not with the users.
    let mixed = format!("{}?mixed", run.uri);
    let replies = run
        .collapsed(n, |i| {
            if i.is_multiple_of(2) {
                get_with(&mixed, &[])
            } else {
                credential.request(&mixed, &format!("user-{i}"))
            }
        })
        .await;
    for (i, reply) in replies.iter().enumerate() {
        let expected = if i.is_multiple_of(2) {
            "none".to_owned()
        } else {
            credential.value(&format!("user-{i}"))
        };
        assert_echo(run, reply, field, &expected);
    }
    let users: Vec<_> = replies.iter().skip(1).step_by(2).cloned().collect();
    assert_all_distinct(run, &users);
    let anonymous: HashSet<_> = replies.iter().step_by(2).map(|r| r.body.clone()).collect();
    assert_eq!(
        anonymous.len(),
        1,
        "{label}: anonymous waiters share the leader's response"
    );
}

/// A stored variant is served to its own language only.
async fn language_direct(run: &Run) {
    let label = &run.label;
    let english = run.send(with_language(&run.uri, "en")).await;
    assert_echo(run, &english, "lang", "en");
    assert!(
        english.cache_status().contains("stored"),
        "{label}: {}",
        english.cache_status()
    );
    let again = run.send(with_language(&run.uri, "en")).await;
    assert_eq!(
        again.body, english.body,
        "{label}: the stored variant serves its own language"
    );
    assert!(
        again.cache_status().contains("hit"),
        "{label}: {}",
        again.cache_status()
    );

    for language in ["fr", "de", "en", "ja", "fr"] {
        let reply = run.send(with_language(&run.uri, language)).await;
        assert_echo(run, &reply, "lang", language);
    }
    let unspecified = run.send(get_with(&run.uri, &[])).await;
    assert_echo(run, &unspecified, "lang", "none");
}

/// Concurrent clients of five languages: each gets its own variant, and so
/// do clients after the variants were stored.
async fn language_collapsed(run: &Run, n: usize) {
    let label = &run.label;
    let language = |i: usize| LANGUAGES[i % LANGUAGES.len()];
    let replies = run.collapsed(n, |i| with_language(&run.uri, language(i))).await;
    let mut language_of_body = HashMap::new();
    for (i, reply) in replies.iter().enumerate() {
        assert_echo(run, reply, "lang", language(i));
        let first = language_of_body.entry(reply.body.clone()).or_insert(language(i));
        assert_eq!(*first, language(i), "{label}: one body reached two languages");
    }
    run.assert_waited(n, 1);

    for language in LANGUAGES {
        let reply = run.send(with_language(&run.uri, language)).await;
        assert_echo(run, &reply, "lang", language);
    }
}

fn assert_not_poisoned(run: &Run, reply: &Reply) {
    assert!(
        !reply.text().contains(EVIL_HOST),
        "{}: a client of {API_HOST} was served {:?}",
        run.label,
        reply.text()
    );
    assert_eq!(
        echoed(run, reply, "link"),
        format!("https://{API_HOST}/next"),
        "{}",
        run.label
    );
}

/// An attacker's response for another `Host`, stored, is never served to
/// the clients of the real one.
async fn host_direct(run: &Run) {
    let label = &run.label;
    let poisoned = run.send(with_host(&run.uri, EVIL_HOST)).await;
    assert!(
        poisoned.text().contains(EVIL_HOST),
        "{label}: the origin reflects the Host"
    );
    assert!(
        poisoned.cache_status().contains("stored"),
        "{label}: {}",
        poisoned.cache_status()
    );

    let normal = run.send(with_host(&run.uri, API_HOST)).await;
    assert_not_poisoned(run, &normal);
    for host in [API_HOST, "API.Example"] {
        let later = run.send(with_host(&run.uri, host)).await;
        assert_not_poisoned(run, &later);
        assert_eq!(
            later.body, normal.body,
            "{label}: {host} is served the stored page"
        );
    }
    assert_eq!(run.calls.get(), 2, "{label}");
}

/// Normal clients arriving while an attacker's request leads a flight, and
/// with more attackers: the attackers' flight is not theirs.
async fn host_collapsed(run: &Run, n: usize) {
    let label = &run.label;
    let host = |i: usize| if i.is_multiple_of(2) { EVIL_HOST } else { API_HOST };
    let replies = run.collapsed(n, |i| with_host(&run.uri, host(i))).await;
    for reply in replies.iter().skip(1).step_by(2) {
        assert_not_poisoned(run, reply);
    }
    for reply in replies.iter().step_by(2) {
        assert!(
            reply.text().contains(EVIL_HOST),
            "{label}: the origin reflects the Host, or the attacker was served the real page"
        );
    }
    assert_eq!(run.calls.get(), 2, "{label}: one flight per host");
    run.assert_waited(n, 2);

    let later = run.send(with_host(&run.uri, API_HOST)).await;
    assert_not_poisoned(run, &later);
}

/// An authorized request's response that allows sharing only while fresh
/// by its own word, which it never is: each user, and an anonymous client
/// after them, gets its own.
async fn authorized_direct(run: &Run) {
    let label = &run.label;
    let credential = Credential::Authorization;
    let mut replies = Vec::new();
    for user in ["alice", "bob", "alice"] {
        let reply = run.send(credential.request(&run.uri, user)).await;
        assert_echo(run, &reply, "auth", &credential.value(user));
        replies.push(reply);
    }
    let anonymous = run.send(get_with(&run.uri, &[])).await;
    assert_echo(run, &anonymous, "auth", "none");
    replies.push(anonymous);
    assert_all_distinct(run, &replies);
    assert_eq!(run.calls.get(), 4, "{label}: an authorized response was stored");
    assert_eq!((run.stats)().hits, 0, "{label}: served from the store");
}

/// Users and anonymous clients waiting on an authorized leader whose
/// response may not be shared: each goes to the origin itself.
async fn authorized_collapsed(run: &Run, rule: Rule, n: usize) {
    let label = &run.label;
    let credential = Credential::Authorization;
    let asks = |i: usize| {
        if i.is_multiple_of(2) {
            credential.value(&format!("user-{i}"))
        } else {
            "none".to_owned()
        }
    };
    let replies = run
        .collapsed(n, |i| {
            if i.is_multiple_of(2) {
                credential.request(&run.uri, &format!("user-{i}"))
            } else {
                get_with(&run.uri, &[])
            }
        })
        .await;
    for (i, reply) in replies.iter().enumerate() {
        assert_echo(run, reply, "auth", &asks(i));
        run.assert_went_forward(i, reply, rule);
    }
    assert_all_distinct(run, &replies);
    assert_eq!(run.calls.get(), n, "{label}: every client went to the origin");
    run.assert_waited(n, 1);
}

/// The reply is the page at `uri`'s path, for a plain `GET` of `API_HOST`.
fn assert_plain(run: &Run, reply: &Reply, uri: &str) {
    let path = uri.split('?').next().expect("a path");
    assert_not_poisoned(run, reply);
    assert_eq!(
        echoed(run, reply, "path"),
        path,
        "{}: a client of {path} was served {:?}",
        run.label,
        reply.text()
    );
    assert_eq!(echoed(run, reply, "method"), "GET", "{}", run.label);
}

/// The attack on the page at `uri` with a `Host` that carries its first
/// segment: `Host: api.example/host-path` and `/host-path.direct`.
fn host_with_path(uri: &str) -> Request<Body> {
    let (first, rest) = uri[1..].split_once('/').expect("two segments");
    with_host(&format!("/{rest}"), &format!("{API_HOST}/{first}"))
}

/// A page stored for a `Host` with a path in it is never served as the page
/// of that path.
async fn host_path_direct(run: &Run) {
    let label = &run.label;
    let attacked = run.send(host_with_path(&run.uri)).await;
    assert_ne!(
        echoed(run, &attacked, "path"),
        run.uri,
        "{label}: the attack asks another page"
    );
    for _ in 0..2 {
        let reply = run.send(with_host(&run.uri, API_HOST)).await;
        assert_plain(run, &reply, &run.uri);
    }
    assert_eq!(run.calls.get(), 2, "{label}: the plain page is stored once");
}

async fn host_path_collapsed(run: &Run, n: usize) {
    attacks_among_plain_clients(run, n, |_| host_with_path(&run.uri)).await;
}

/// Attacks (even requests, the first leading) and plain clients of
/// `API_HOST` (odd ones) at once: the plain clients, and one after them,
/// get the plain page.
async fn attacks_among_plain_clients(run: &Run, n: usize, attack: impl Fn(usize) -> Request<Body>) {
    let replies = run
        .collapsed(n, |i| {
            if i.is_multiple_of(2) {
                attack(i / 2)
            } else {
                with_host(&run.uri, API_HOST)
            }
        })
        .await;
    for reply in replies.iter().skip(1).step_by(2) {
        assert_plain(run, reply, &run.uri);
    }
    let later = run.send(with_host(&run.uri, API_HOST)).await;
    assert_plain(run, &later, &run.uri);
}

/// Headers a framework behind a proxy builds links from, routes on or
/// takes its method from, and a second `Host`.
const FORWARDING: &[(&str, &str)] = &[
    ("x-forwarded-proto", "http"),
    ("x-forwarded-port", "8443"),
    ("x-forwarded-prefix", "//evil.example"),
    ("x-original-url", "/evil"),
    ("x-rewrite-url", "/evil"),
    ("x-http-method-override", "DELETE"),
    ("host", EVIL_HOST),
];

/// Attack `i` (of [`FORWARDING`]) on `uri`.
fn forwarding(uri: &str, i: usize) -> Request<Body> {
    let (name, value) = FORWARDING[i % FORWARDING.len()];
    get_with(
        uri,
        &[
            (header::HOST, API_HOST.to_owned()),
            (HeaderName::from_static(name), value.to_owned()),
        ],
    )
}

/// What an attacker's forwarding header made is never served to plain
/// requests.
async fn forwarding_direct(run: &Run) {
    for (i, (name, _)) in FORWARDING.iter().enumerate() {
        let uri = format!("{}?attack={name}", run.uri);
        run.send(forwarding(&uri, i)).await;
        let plain = run.send(with_host(&uri, API_HOST)).await;
        assert_plain(run, &plain, &uri);
    }
}

async fn forwarding_collapsed(run: &Run, n: usize) {
    attacks_among_plain_clients(run, n, |i| forwarding(&run.uri, i)).await;
}

/// Spellings of `uri` (an `/admin/` page) that an origin which normalises
/// paths serves as it.
fn not_normal(uri: &str) -> [String; 4] {
    let rest = uri.strip_prefix("/admin").expect("an admin page");
    [
        format!("//admin{rest}"),
        format!("/%61dmin{rest}"),
        format!("/./admin{rest}"),
        format!("/x/../admin{rest}"),
    ]
}

/// A bypassed route's pages are never stored, however their path is
/// spelled.
async fn not_normal_direct(run: &Run) {
    let label = &run.label;
    for uri in not_normal(&run.uri) {
        let first = run.send(get_with(&uri, &[])).await;
        let second = run.send(get_with(&uri, &[])).await;
        assert_ne!(first.body, second.body, "{label}: {uri} was stored");
        for reply in [&first, &second] {
            assert!(
                !reply.cache_status().contains("stored") && !reply.cache_status().contains("hit"),
                "{label}: {uri}: {}",
                reply.cache_status()
            );
        }
    }
    assert_eq!((run.stats)().hits, 0, "{label}");
}

async fn not_normal_collapsed(run: &Run, n: usize) {
    let label = &run.label;
    let spellings = not_normal(&run.uri);
    let replies = run
        .collapsed(n, |i| get_with(&spellings[i % spellings.len()], &[]))
        .await;
    assert_all_distinct(run, &replies);
    assert_eq!(run.calls.get(), n, "{label}: every request went to the origin");
}

/// Runs `case` in its own task; what it panicked with, if it did.
async fn failure(run: Run, case: &'static Case) -> Option<String> {
    let error = tokio::spawn(check(run, case)).await.err()?;
    Some(match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| format!("{}: panicked", case.name)),
        Err(error) => format!("{}: {error}", case.name),
    })
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_leaks_through_the_memory_store() {
    let mut failures = Vec::new();
    for case in CASES {
        let run = Run::new("memory", case, StampedeLayer::new(MemoryStore::new()), true);
        failures.extend(failure(run, case).await);
    }
    assert_no_failures(&failures);
}

/// The same cases with freshness from the origin's headers
/// (`Policy::origin`), where `no-cache` responses are stored to be
/// revalidated.
#[tokio::test(start_paused = true)]
async fn nothing_leaks_under_the_origin_policy() {
    let mut failures = Vec::new();
    for case in CASES {
        let layer = StampedeLayer::new(MemoryStore::new())
            .policy(Policy::origin(std::time::Duration::from_secs(3600)));
        let mut run = Run::new("memory, origin policy", case, layer, true);
        run.origin_policy = true;
        failures.extend(failure(run, case).await);
    }
    assert_no_failures(&failures);
}

// Real network, so real time.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaks_through_the_redis_store() {
    use common::redis_server::RedisServer;
    use tower_stampede::RedisStore;

    let server = RedisServer::start();
    let mut failures = Vec::new();
    for case in CASES {
        // Keys are per case already; a prefix per case also keeps each
        // case's wake-up channel to itself.
        let store = RedisStore::from_url(server.url())
            .expect("valid url")
            .prefix(format!("leak-suite:{}:", case.name));
        store.connect().await.expect("redis is up");
        // Zero store errors are asserted: a slow call on a busy machine
        // must not count as one.
        let layer = StampedeLayer::new(store).store_timeout(std::time::Duration::from_secs(5));
        let run = Run::new("redis", case, layer, false);
        failures.extend(failure(run, case).await);
    }
    assert_no_failures(&failures);
}

// Beyond the table: hosts other than `Host`. An origin that resolves its
// host as axum-extra's `Host` extractor does (`Forwarded`,
// `X-Forwarded-Host`, `Host`, then the URI's authority) would reflect a host
// the key did not take, and one attacker's request would poison the page for
// all, were those hosts not in the key (or the request not cached).

/// Reflects the host, resolved as axum-extra's `Host` extractor does (less
/// `Forwarded`, which these probes do not send), in a public page.
async fn host_resolving(uri: axum::http::Uri, request: HeaderMap) -> impl IntoResponse {
    tokio::time::sleep(ORIGIN_DELAY).await;
    let host = ["x-forwarded-host", "host"]
        .iter()
        .find_map(|name| request.get(*name)?.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("none")
        .to_owned();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!("link=https://{host}/next"),
    )
}

/// An attack on `path`, then a normal client of it: what the client got.
async fn after_attack(attack: Request<Body>) -> Reply {
    let app = Router::new()
        .route("/{page}", get(host_resolving))
        .layer(StampedeLayer::new(MemoryStore::new()));
    let path = attack.uri().path().to_owned();
    let attacked = send(app.clone(), attack).await;
    assert!(
        attacked.text().contains(EVIL_HOST),
        "the origin reflects the host"
    );
    send(app, with_host(&path, API_HOST)).await
}

/// RFC 9112 has an origin ignore `Host` when the request target is in
/// absolute form; the key follows the target, `Host`-reading origins do not.
/// hyper serves such a request as it came (checked over the wire).
#[tokio::test(start_paused = true)]
async fn an_absolute_target_with_another_host_poisons_no_one() {
    let attack = Request::get(format!("http://{API_HOST}/absolute"))
        .header(header::HOST, EVIL_HOST)
        .body(Body::empty())
        .expect("valid request");
    let normal = after_attack(attack).await;
    assert!(
        !normal.text().contains(EVIL_HOST),
        "a client of {API_HOST} was served {:?} [{}]",
        normal.text(),
        normal.cache_status()
    );
}

/// `X-Forwarded-Host` is in the default key, so a request that sends it has
/// a key of its own.
#[tokio::test(start_paused = true)]
async fn a_forwarded_host_poisons_no_one() {
    let attack = get_with(
        "/forwarded",
        &[
            (header::HOST, API_HOST.to_owned()),
            (HeaderName::from_static("x-forwarded-host"), EVIL_HOST.to_owned()),
        ],
    );
    let normal = after_attack(attack).await;
    assert!(
        !normal.text().contains(EVIL_HOST),
        "a client of {API_HOST} was served {:?} [{}]",
        normal.text(),
        normal.cache_status()
    );
}
