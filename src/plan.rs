//! What to do with a request, decided from its head alone before any I/O:
//! the route's policy, the method, the request's own directives, and the
//! cache key with its `Vary` variant.

use http::{HeaderMap, HeaderValue, Method, header, request::Parts};
use tracing::debug;

use crate::{
    key::Varies,
    policy::Policy,
    rules::{
        fields::{Fields, Head},
        grpc,
        status::Fwd,
        storable::{self, Credentials},
        target,
    },
    shared::Config,
};

/// The stage a request goes to.
pub(crate) enum Plan {
    /// Straight to the inner service, with this `Cache-Status`.
    Forward(Fwd),
    /// An unsafe method: to the inner service, then invalidate its target.
    Write(Target),
    /// Look the key up; rebuild it on a miss.
    Cache(Job),
    /// A `POST` cached as a read: its key is `target`'s and its body's,
    /// known once the body is read.
    Read(Read),
}

/// A `POST` read as planned from its head, before its body is read.
pub(crate) struct Read {
    pub(crate) target: String,
    pub(crate) policy: Policy,
    pub(crate) credentials: Credentials,
    pub(crate) head: Head,
}

/// A key to serve or rebuild: the key, the plain key it is a `Vary` variant
/// of (if it is one), and the policy it is stored under.
pub(crate) struct Job {
    pub(crate) key: String,
    pub(crate) variant_of: Option<String>,
    pub(crate) policy: Policy,
    /// What the request carries that keeps others' responses from it, and
    /// the response to it from others.
    pub(crate) credentials: Credentials,
    /// What the rules read of the request's head.
    pub(crate) head: Head,
}

impl Job {
    /// The job for `primary`: its `Vary` variant for these request headers,
    /// when its responses are known to vary.
    pub(crate) fn new(
        varies: &Varies,
        primary: String,
        headers: &HeaderMap,
        policy: Policy,
        credentials: Credentials,
        head: Head,
    ) -> Self {
        let (key, variant_of) = match varies.key(&primary, headers) {
            Some(variant) => (variant, Some(primary)),
            None => (primary, None),
        };
        Self {
            key,
            variant_of,
            policy,
            credentials,
            head,
        }
    }

    /// The plain key: the one this job's responses teach `Vary` names to.
    pub(crate) fn primary(&self) -> &str {
        self.variant_of.as_deref().unwrap_or(&self.key)
    }
}

/// What an unsafe request needs to know to invalidate after it succeeds:
/// the key of a `GET` of its own target, and its authority, against which
/// `Location` and `Content-Location` are resolved.
pub(crate) struct Target {
    pub(crate) key: Option<String>,
    pub(crate) host: Option<HeaderValue>,
}

/// The plan for a request. `reads` says whether the layer may read request
/// bodies (so `POST` reads can be cached).
pub(crate) fn plan(config: &Config, varies: &Varies, parts: &mut Parts, reads: bool) -> Plan {
    let path = parts.uri.path();
    let policy = config.routes.get(path).unwrap_or(&config.policy);
    if policy.is_bypass() {
        return Plan::Forward(Fwd::Bypass);
    }
    let head = Head::of(&parts.headers);
    if !storable::is_unsafe(&parts.method)
        && let Some(reason) = target::unclear(path, &parts.headers, head.fields)
    {
        // Not for this route's policy, nor for its key: the origin may
        // answer for another target.
        debug!(reason, "not cached");
        return Plan::Forward(Fwd::Request);
    }
    if parts.method == Method::POST {
        if reads && config.reads.get(path).is_some() {
            if storable::skips_cache(head.fields, &head.asked) {
                return Plan::Forward(Fwd::Request);
            }
            return match config.keys.make(parts) {
                Some(target) => Plan::Read(Read {
                    target,
                    policy: policy.clone(),
                    credentials: credentials(config, parts, head.fields),
                    head,
                }),
                None => Plan::Forward(Fwd::Bypass),
            };
        }
        if grpc::is_grpc(&parts.headers) {
            // No gRPC response is stored under the key of a `GET`: there is
            // nothing for a call to invalidate.
            return Plan::Forward(Fwd::Method);
        }
    }
    if storable::is_unsafe(&parts.method) {
        return Plan::Write(Target {
            key: config.keys.of_get(parts),
            host: parts.headers.get(header::HOST).cloned(),
        });
    }
    if !storable::method_is_cacheable(&parts.method) {
        return Plan::Forward(Fwd::Method);
    }
    if storable::skips_cache(head.fields, &head.asked) {
        return Plan::Forward(Fwd::Request);
    }
    // HEAD is answered from the GET response: one key for both.
    let (policy, credentials) = (policy.clone(), credentials(config, parts, head.fields));
    match config.keys.of_get(parts) {
        Some(primary) => Plan::Cache(Job::new(
            varies,
            primary,
            &parts.headers,
            policy,
            credentials,
            head,
        )),
        None => Plan::Forward(Fwd::Bypass),
    }
}

/// The request's credentials. Its cookies count unless its route ignores
/// them or keys by the ones that matter.
fn credentials(config: &Config, parts: &Parts, fields: Fields) -> Credentials {
    let path = parts.uri.path();
    Credentials::of(fields, || {
        config.ignore_cookies.get(path).is_some() || config.keys.cover_cookies(path)
    })
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn plan_of(config: &Config, request: http::request::Builder) -> Plan {
        let (mut parts, ()) = request.body(()).expect("valid").into_parts();
        plan(config, &Varies::new(), &mut parts, true)
    }

    fn config() -> Config {
        let mut config = Config::default();
        config.routes.insert("/admin/*", Policy::bypass());
        config.reads.insert("/graphql", ());
        config
    }

    #[test]
    fn every_kind_of_request_has_its_stage() {
        let config = config();
        let get = |path| Request::get(path).header("host", "a.example");
        let forward = |plan| match plan {
            Plan::Forward(fwd) => Some(fwd),
            _ => None,
        };
        assert_eq!(forward(plan_of(&config, get("/admin/users"))), Some(Fwd::Bypass));
        assert_eq!(
            forward(plan_of(&config, Request::options("/x"))),
            Some(Fwd::Method)
        );
        assert_eq!(
            forward(plan_of(&config, get("/x").header("range", "bytes=0-1"))),
            Some(Fwd::Request)
        );
        let grpc = Request::post("/pkg.Svc/Get").header("content-type", "application/grpc");
        assert_eq!(forward(plan_of(&config, grpc)), Some(Fwd::Method));
        match plan_of(&config, get("/x")) {
            Plan::Cache(job) => assert_eq!(
                (job.key.as_str(), job.primary()),
                ("GET a.example/x", "GET a.example/x")
            ),
            _ => panic!("a GET is cached"),
        }
        match plan_of(&config, Request::head("/x").header("host", "a.example")) {
            Plan::Cache(job) => assert_eq!(job.key, "GET a.example/x", "HEAD shares GET's key"),
            _ => panic!("a HEAD is cached"),
        }
        match plan_of(&config, Request::delete("/x").header("host", "a.example")) {
            Plan::Write(target) => assert_eq!(target.key.as_deref(), Some("GET a.example/x")),
            _ => panic!("a DELETE invalidates"),
        }
        match plan_of(&config, Request::post("/graphql").header("host", "a.example")) {
            Plan::Read(read) => assert_eq!(read.target, "POST a.example/graphql"),
            _ => panic!("a POST read is cached by its body"),
        }
    }

    #[test]
    fn unclear_targets_and_huge_keys_are_not_cached() {
        let config = config();
        let get = |path| Request::get(path).header("host", "a.example");
        let forwarded = |plan| matches!(plan, Plan::Forward(Fwd::Request));
        for path in [
            "//admin/users",
            "/%61dmin/users",
            "/./admin/users",
            "/admin;x/users",
        ] {
            assert!(forwarded(plan_of(&config, get(path))), "{path}");
        }
        assert!(forwarded(plan_of(&config, get("/x").header("host", "b.example"))));
        assert!(forwarded(plan_of(
            &config,
            get("/x").header("x-original-url", "/admin")
        )));
        let huge = "h".repeat(crate::key::MAX_KEY_BYTES);
        assert!(matches!(
            plan_of(&config, get("/x").header("x-forwarded-host", huge)),
            Plan::Forward(Fwd::Bypass)
        ));
        // A write still invalidates what its own spelling names.
        assert!(matches!(
            plan_of(&config, Request::delete("//x").header("host", "a.example")),
            Plan::Write(_)
        ));
    }

    #[test]
    fn cookies_are_credentials_unless_the_route_accounts_for_them() {
        let mut config = config();
        config.ignore_cookies.insert("/public/*", ());
        config
            .keys
            .route("/docs/*", crate::DefaultKey::new().with_cookie("lang"));
        let cookie = |path| match plan_of(
            &config,
            Request::get(path).header("host", "a").header("cookie", "lang=en"),
        ) {
            Plan::Cache(job) => job.credentials.cookie,
            _ => panic!("cached"),
        };
        assert!(cookie("/account"));
        assert!(!cookie("/public/home"), "the route ignores cookies");
        assert!(
            !cookie("/docs/intro"),
            "the route's key names the cookie that matters"
        );
        match plan_of(&config, Request::get("/account").header("host", "a")) {
            Plan::Cache(job) => assert_eq!(job.credentials, Credentials::default()),
            _ => panic!("cached"),
        }
    }

    #[test]
    fn a_known_variant_gets_a_key_of_its_own() {
        let varies = Varies::new();
        varies.learn("GET a/", &[header::ACCEPT_LANGUAGE]);
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", HeaderValue::from_static("de"));
        let job = Job::new(
            &varies,
            "GET a/".into(),
            &headers,
            Policy::default(),
            Credentials::default(),
            Head::default(),
        );
        assert_eq!(job.key, "GET a/ vary[accept-language=de]");
        assert_eq!(job.primary(), "GET a/");
    }
}
