//! The default key on arbitrary request targets and headers: a key or
//! none, never a panic; the same request always gets the same key, and two
//! requests whose authorities differ never share one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_stampede::{DefaultKey, MakeKey};

fn parts(data: &[u8]) -> Option<http::request::Parts> {
    // The target, then header lines: `name:value`, split on newlines.
    let mut lines = data.split(|b| *b == b'\n');
    let uri = http::Uri::try_from(lines.next()?).ok()?;
    let mut request = http::Request::get(uri);
    for line in lines {
        let at = line.iter().position(|b| *b == b':')?;
        let name = http::HeaderName::from_bytes(&line[..at]).ok()?;
        let value = http::HeaderValue::from_bytes(&line[at + 1..]).ok()?;
        request = request.header(name, value);
    }
    Some(request.body(()).ok()?.into_parts().0)
}

fuzz_target!(|data: &[u8]| {
    let Some(mut parts) = parts(data) else { return };
    let keys = [
        DefaultKey::new(),
        DefaultKey::new().with_header("x-tenant").without_query(),
        DefaultKey::new().without_authority(),
    ];
    for key in &keys {
        let first = key.make_key(&parts);
        assert_eq!(first, key.make_key(&parts), "a key is a function of the request");
    }
    // Another authority, another key (or none).
    let plain = keys[0].make_key(&parts);
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("other.invalid"),
    );
    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .build()
        .expect("a path alone is a valid uri");
    let moved = keys[0].make_key(&parts);
    if let (Some(plain), Some(moved)) = (&plain, &moved) {
        assert!(
            plain != moved || plain.contains("other.invalid"),
            "{plain:?} shared across hosts"
        );
    }
});
