//! Unit tests of `entry`.

use http::header;

use super::*;

fn sample() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.append(header::LINK, HeaderValue::from_static("</a>"));
    headers.append(header::LINK, HeaderValue::from_static("</b>"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut vary_values = HeaderMap::new();
    vary_values.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    Entry::new(
        StatusCode::OK,
        headers,
        Bytes::from_static(b"{\"posts\":[1,2,3]}"),
        Some(trailers),
        (
            vec![header::ACCEPT_LANGUAGE, header::ACCEPT_ENCODING],
            vary_values,
        ),
        t0,
        Lifetime {
            fresh_until: t0 + Duration::from_secs(50),
            stale_until: t0 + Duration::from_secs(120),
            error_until: t0 + Duration::from_secs(300),
        },
        Duration::from_micros(200_123),
    )
}

#[test]
fn a_decoded_common_value_is_the_static_one() {
    let back = Entry::decode(sample().encode()).expect("own encoding decodes");
    let static_json = memory::common(b"application/json").expect("a common value");
    let decoded = &back.headers[header::CONTENT_TYPE];
    assert_eq!(decoded.as_bytes().as_ptr(), static_json.as_bytes().as_ptr());
    assert_eq!(
        back.headers[header::CACHE_CONTROL],
        "public",
        "others as they were"
    );
}

#[test]
fn round_trip_keeps_everything() {
    let entry = sample();
    let back = Entry::decode(entry.encode()).expect("own encoding decodes");
    assert_eq!(back.status, entry.status);
    assert_eq!(back.headers, entry.headers);
    assert_eq!(back.body, entry.body);
    assert_eq!(back.trailers, entry.trailers);
    assert_eq!(back.vary, entry.vary);
    assert_eq!(back.vary_values, entry.vary_values);
    assert_eq!(back.stored_at, entry.stored_at);
    assert_eq!(back.lifetime, entry.lifetime);
    assert_eq!(back.recompute, entry.recompute);
    assert!(back.allows_authorized);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().encode();
    for len in 0..bytes.len() {
        assert!(Entry::decode(bytes.slice(..len)).is_err(), "length {len}");
    }
}

#[test]
fn padding_another_version_and_garbage_are_errors() {
    let mut padded = BytesMut::from(&sample().encode()[..]);
    padded.put_u8(0);
    assert_eq!(
        Entry::decode(padded.freeze()).map(|_| ()),
        Err(DecodeError {
            reason: "trailing bytes"
        })
    );
    for version in [1, 3] {
        let mut other = BytesMut::from(&sample().encode()[..]);
        other[3] = version;
        assert!(Entry::decode(other.freeze()).is_err(), "version {version}");
    }
    assert!(Entry::decode(Bytes::from_static(b"<html>not ours</html>")).is_err());
    let huge_count = Bytes::from_static(
        b"TSE\x02\x00\xc8\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff",
    );
    assert!(Entry::decode(huge_count).is_err());
}

#[test]
fn invalid_header_bytes_are_errors() {
    let bytes = sample().encode();
    let name_at = bytes
        .windows(b"content-type".len())
        .position(|w| w == b"content-type")
        .expect("header name is in the encoding");
    let mut bad = BytesMut::from(&bytes[..]);
    bad[name_at] = b' ';
    assert_eq!(
        Entry::decode(bad.freeze()).map(|_| ()),
        Err(DecodeError {
            reason: "invalid header name"
        })
    );
}

#[test]
fn renewing_rewrites_only_the_times_in_place() {
    let entry = sample();
    let later = entry.stored_at + Duration::from_secs(600);
    let lifetime = Lifetime {
        fresh_until: later + Duration::from_secs(50),
        stale_until: later + Duration::from_secs(120),
        error_until: later + Duration::from_secs(300),
    };
    let renewed = entry.renewed(entry.headers.clone(), later, lifetime, Duration::from_millis(3));
    let mut patched = entry.encode().to_vec();
    patched[TIMES_AT..TIMES_AT + TIMES_LEN].copy_from_slice(&renewed.encode_times());
    assert_eq!(patched, renewed.encode().to_vec());
    assert_eq!(renewed.body.as_ptr(), entry.body.as_ptr(), "the body is shared");
}

#[test]
fn decoded_body_shares_the_input_buffer() {
    let bytes = sample().encode();
    let back = Entry::decode(bytes.clone()).expect("decodes");
    let start = bytes.len() - back.body.len();
    assert_eq!(back.body.as_ptr(), bytes[start..].as_ptr());
}

#[test]
fn weight_grows_with_the_body() {
    let mut entry = sample();
    let small = entry.weight();
    entry.body = Bytes::from(vec![0; 10_000]);
    assert!(entry.weight() >= small + 10_000 - 20);
}
