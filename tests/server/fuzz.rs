//! Property tests over arbitrary bytes for everything that reads untrusted
//! input through the public API: the token parser (against an independent
//! decoder written here from docs/reference/token-format.md), the token extractor
//! (headers and query, through the Authenticator), public-route matching and
//! path normalization, scoped routes against case, HEAD and method
//! overrides (through the Authenticator), and config loading (TOML and
//! `TOKENGATE_*`).
//! Crate-private readers (path normalization itself, forward-auth's original
//! URI, the admin API's bodies and path segments) have their properties in
//! `proptests` modules beside the code. docs/design/fuzzing.md says what runs and
//! for how long; `tests/fuzz-corpus/` holds the regression seeds that run
//! here as a table test.
//!
//! `PROPTEST_CASES` scales every property (the default is each one's own
//! CI-friendly count); the counts run are printed with `--nocapture`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tokengate::auth::{PublicRoute, PublicRoutes, RateLimitConfig, ScopedRoute, SourcesConfig};
use tokengate::token::{self, Token, TokenId};
use tokengate::{
    AuthConfig, AuthRequest, Authenticator, Config, CreateTokenParams, Decision, MemoryStore,
    Rejection, TokenService,
};

// ---------------------------------------------------------------------------
// Harness: case counts and the executions each property ran.

/// Cases for a property: its own count, or `PROPTEST_CASES` when set (CI's
/// longer fuzzing step sets it).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // Regressions live in tests/fuzz-corpus/ (a table test), not in
        // files proptest would write beside this one.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `test` over `strategy` and prints how many inputs it saw.
fn run<S: Strategy>(
    name: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let executed = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config(default));
    let result = runner.run(&strategy, |value| {
        executed.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} executions in {:.2?}",
        executed.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Arbitrary bytes, as text when they are UTF-8, else lossily.
fn bytes_as_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// An independent `mk_` decoder, from docs/reference/token-format.md alone.

/// The doc's alphabet, digit values 0..61 in this order.
const B62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3): polynomial 0x04C11DB7 reflected (0xEDB88320), init
/// and final xor 0xFFFFFFFF; bit by bit, no table, no crate.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A base62 number as little-endian 32-bit limbs (arbitrary width, so that
/// "≥ 2^128" is decided on the exact value, not on an overflow check).
fn b62_big(digits: &[u8]) -> Option<Vec<u32>> {
    let mut limbs: Vec<u32> = vec![0];
    for &c in digits {
        let d = B62.bytes().position(|a| a == c)? as u64;
        let mut carry = d;
        for limb in &mut limbs {
            let v = u64::from(*limb) * 62 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    Some(limbs)
}

/// The limbs as a u128 if they fit.
fn big_to_u128(limbs: &[u32]) -> Option<u128> {
    if limbs.iter().skip(4).any(|&l| l != 0) {
        return None;
    }
    Some(
        limbs
            .iter()
            .take(4)
            .enumerate()
            .fold(0u128, |acc, (i, &l)| acc | (u128::from(l) << (32 * i))),
    )
}

/// docs/reference/token-format.md, "Parsing": the id's 128-bit value, or `None`.
fn reference_parse(token: &[u8]) -> Option<u128> {
    if !token.starts_with(b"mk_") || token.len() != 55 {
        return None;
    }
    if !token[3..].iter().all(|c| B62.as_bytes().contains(c)) {
        return None;
    }
    let checksum = big_to_u128(&b62_big(&token[49..])?)?;
    if checksum != u128::from(crc32_ieee(&token[..49])) {
        return None;
    }
    big_to_u128(&b62_big(&token[3..25])?)
}

/// `n` in base62, left-padded with `0` to `width` (the doc's rendering).
fn b62_encode(mut n: u128, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = B62.as_bytes()[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap()
}

/// `mk_` + id field + secret + the right checksum, whatever the id field
/// encodes (so ids ≥ 2^128 reach the id check).
fn with_checksum(id_field: &str, secret: &str) -> String {
    let body = format!("mk_{id_field}{secret}");
    let crc = crc32_ieee(body.as_bytes());
    format!("{body}{}", b62_encode(u128::from(crc), 6))
}

fn b62_string(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0usize..62, len).prop_map(|v| {
        v.into_iter()
            .map(|i| char::from(B62.as_bytes()[i]))
            .collect()
    })
}

fn any_token() -> impl Strategy<Value = Token> {
    (any::<u128>(), b62_string(24))
        .prop_map(|(id, secret)| Token::from_parts(TokenId::from_uuid(uuid_of(id)), &secret))
}

fn uuid_of(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// Both parsers agree on `text`: the same acceptance, the same id.
fn agree(text: &str) -> Result<(), TestCaseError> {
    let ours = token::parse(text).ok().map(|id| id.as_uuid().as_u128());
    let reference = reference_parse(text.as_bytes());
    prop_assert_eq!(ours, reference, "parsers disagree on {:?}", text);
    Ok(())
}

/// Edits a token the way typos, truncation and attackers do.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Swap(usize, usize),
    Truncate(usize),
    /// The checksum field + k·2^32: equal to the CRC modulo 2^32 only.
    ChecksumWrap(u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        4 => (0usize..62).prop_map(|i| char::from(B62.as_bytes()[i])),
        1 => any::<char>(),
    ];
    prop_oneof![
        (0usize..60, ch.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (0usize..60, ch).prop_map(|(i, c)| Edit::Insert(i, c)),
        (0usize..60).prop_map(Edit::Delete),
        (0usize..55, 0usize..55).prop_map(|(i, j)| Edit::Swap(i, j)),
        (0usize..55).prop_map(Edit::Truncate),
        (1u8..14).prop_map(Edit::ChecksumWrap),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match *edit {
        Edit::Replace(i, c) => {
            if i < chars.len() {
                chars[i] = c;
            }
        }
        Edit::Insert(i, c) => chars.insert(i.min(chars.len()), c),
        Edit::Delete(i) => {
            if i < chars.len() {
                chars.remove(i);
            }
        }
        Edit::Swap(i, j) => {
            let last = chars.len().saturating_sub(1);
            if !chars.is_empty() {
                chars.swap(i.min(last), j.min(last));
            }
        }
        Edit::Truncate(n) => chars.truncate(n),
        Edit::ChecksumWrap(k) => {
            if chars.len() != 55 || !chars.iter().all(char::is_ascii_alphanumeric) {
                return chars.into_iter().collect();
            }
            let sum: String = chars[49..].iter().collect();
            let value = big_to_u128(&b62_big(sum.as_bytes()).unwrap()).unwrap();
            let wrapped = value + (u128::from(k) << 32);
            if wrapped < 62u128.pow(6) {
                chars.truncate(49);
                chars.extend(b62_encode(wrapped, 6).chars());
            }
        }
    }
    chars.into_iter().collect()
}

#[test]
fn independent_decoder_reads_the_worked_example() {
    // The doc's own numbers, so the reference is checked against the doc
    // before it judges the crate.
    let example = "mk_0LYIR9BOliq35bNvGV2CAZZq3RkT9vLm2XcP7wYh4NsB8d0kp3eP";
    assert_eq!(crc32_ieee(&example.as_bytes()[..49]), 691_880_221);
    assert_eq!(
        reference_parse(example.as_bytes()),
        Some(0x0b6c0e5e5bd54f5e9a435f1a2c3d4e5f)
    );
    assert_eq!(
        crc32_ieee(b"123456789"),
        0xCBF4_3926,
        "the CRC-32 check value"
    );
}

#[test]
fn token_parser_agrees_with_the_reference_on_arbitrary_bytes() {
    run(
        "token_parse_bytes",
        2000,
        proptest::collection::vec(any::<u8>(), 0..512),
        |bytes| {
            // Bytes that are not UTF-8 cannot reach `parse` (it takes &str);
            // their lossy form can, and must be refused by both.
            if let Ok(text) = std::str::from_utf8(&bytes) {
                agree(text)?;
            }
            agree(&bytes_as_text(&bytes))?;
            // An `mk_` prefix and 55 bytes, so the later checks are reached.
            let mut shaped = b"mk_".to_vec();
            shaped.extend(bytes.iter().take(52));
            shaped.resize(55, b'0');
            agree(&bytes_as_text(&shaped))
        },
    );
}

#[test]
fn token_parser_agrees_with_the_reference_near_valid_tokens() {
    run(
        "token_parse_edits",
        2000,
        (any_token(), proptest::collection::vec(edit(), 1..4)),
        |(token, edits)| {
            let mut text = token.expose_secret().to_owned();
            for e in &edits {
                text = apply(&text, e);
                agree(&text)?;
            }
            // Whatever is accepted after edits names the id the reference
            // reads off bytes 3–24.
            if let Ok(id) = token::parse(&text) {
                prop_assert_eq!(id.to_base62(), &text[3..25]);
            }
            Ok(())
        },
    );
}

#[test]
fn token_parser_agrees_on_any_id_field_with_a_right_checksum() {
    // Id fields up to "zzz…" (≈ 2^131): those ≥ 2^128 must be refused even
    // though their checksum is right.
    run(
        "token_parse_id_range",
        1000,
        (b62_string(22), b62_string(24), any::<u8>()),
        |(id, secret, top)| {
            agree(&with_checksum(&id, &secret))?;
            // Right at the boundary: the top digit decides.
            let boundary = format!(
                "{}{}",
                char::from(B62.as_bytes()[usize::from(top % 62)]),
                &id[1..]
            );
            agree(&with_checksum(&boundary, &secret))
        },
    );
}

#[test]
fn tokens_round_trip_generate_render_parse() {
    for _ in 0..cases(200) {
        let token = Token::generate().unwrap();
        let text = token.expose_secret();
        assert_eq!(token::parse(text), Ok(token.id()));
        assert_eq!(
            reference_parse(text.as_bytes()),
            Some(token.id().as_uuid().as_u128())
        );
    }
    run(
        "token_round_trip",
        1000,
        (any::<u128>(), b62_string(24)),
        |(id, secret)| {
            let id = TokenId::from_uuid(uuid_of(id));
            let token = Token::from_parts(id, &secret);
            let text = token.expose_secret();
            prop_assert_eq!(text.len(), 55);
            prop_assert_eq!(&text[25..49], secret.as_str());
            prop_assert_eq!(token::parse(text), Ok(id));
            prop_assert_eq!(
                reference_parse(text.as_bytes()),
                Some(id.as_uuid().as_u128())
            );
            prop_assert_eq!(b62_encode(id.as_uuid().as_u128(), 22), id.to_base62());
            for form in [id.to_string(), id.to_base62(), text.to_owned()] {
                prop_assert_eq!(form.parse::<TokenId>(), Ok(id));
            }
            Ok(())
        },
    );
}

#[test]
fn token_ids_parse_or_refuse_arbitrary_text() {
    run(
        "token_id_from_str",
        2000,
        prop_oneof![
            any::<String>(),
            "[0-9a-fA-F-]{36}",
            "[0-9A-Za-z]{22}",
            "mk_[0-9A-Za-z]{52}",
        ],
        |text| {
            if let Ok(id) = text.parse::<TokenId>() {
                // Whatever it read, its printed forms read back the same.
                prop_assert_eq!(id.to_string().parse::<TokenId>(), Ok(id));
                prop_assert_eq!(id.to_base62().parse::<TokenId>(), Ok(id));
                if text.starts_with("mk_") {
                    prop_assert_eq!(
                        reference_parse(text.as_bytes()),
                        Some(id.as_uuid().as_u128())
                    );
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// The token extractor, through the Authenticator.

/// Where the public route lives in the extractor's tests.
const PUBLIC: &str = "/public";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An Authenticator over a memory store with every source on, a public
/// route, and one live token.
fn authenticator(rt: &tokio::runtime::Runtime) -> (Authenticator, String) {
    rt.block_on(async {
        let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
        let created = service
            .create_token(CreateTokenParams {
                account_id: "acme".into(),
                name: "fuzz".into(),
                expires_in_days: None,
                scopes: Default::default(),
                allowed_ips: Default::default(),
                meta: Default::default(),
                quota: None,
                rate_limit: None,
            })
            .await
            .unwrap();
        let config = AuthConfig {
            sources: SourcesConfig {
                api_key_header: true,
                query_param: "api_key".into(),
            },
            public_routes: vec![PublicRoute {
                path_prefix: PUBLIC.into(),
                methods: vec![],
            }],
            // Thousands of requests a second on one token: no per-token
            // limit (the failure limit stays, per IP, and no IP is given).
            rate_limit: RateLimitConfig {
                per_token_requests: 0,
                ..RateLimitConfig::default()
            },
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(service, &config).unwrap();
        (auth, created.token.expose_secret().to_owned())
    })
}

/// A header value as a client could send it: any bytes but the controls
/// HTTP forbids, often around a token.
fn header_value(valid: String) -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop_oneof![
        Just("Bearer".to_owned()),
        "[bB][eE][aA][rR][eE][rR]",
        Just("Basic".to_owned()),
        Just(String::new()),
        "[ -~]{0,8}",
    ];
    let token = prop_oneof![
        Just(valid.clone()),
        Just(valid.to_uppercase()),
        Just(format!("{valid}x")),
        Just(valid[..54].to_owned()),
        "mk_[0-9A-Za-z]{52}",
        "[ -~]{0,70}",
    ];
    prop_oneof![
        3 => (scheme, "[ \t]{0,3}", token, "[ \t]{0,2}")
            .prop_map(|(s, sp, t, tail)| format!("{s}{sp}{t}{tail}").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..80),
    ]
}

/// A URI's path and query: a path that may be public or a trick on it, and
/// a query that may carry the token under the parameter or its encodings.
fn path_and_query(valid: String) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("api_key"),
        Just("api%5Fkey"),
        Just("api%5fkey"),
        Just("api+key"),
        Just("API_KEY"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just(valid.clone()),
        Just(valid.replace('_', "%5F")),
        Just(format!("{valid}%")),
        "[!-~]{0,60}",
    ];
    let pair = (key, value).prop_map(|(k, v)| format!("{k}={v}"));
    (
        tricky_path(),
        proptest::collection::vec(pair, 0..3),
        any::<bool>(),
    )
        .prop_map(|(path, pairs, q)| {
            if q || !pairs.is_empty() {
                format!("{path}?{}", pairs.join("&"))
            } else {
                path
            }
        })
}

/// One request's token sources, as generated.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    uri: String,
    authorization: Vec<Vec<u8>>,
    api_key: Vec<Vec<u8>>,
}

fn sent(valid: String) -> impl Strategy<Value = Sent> {
    let method = prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::OPTIONS),];
    (
        method,
        path_and_query(valid.clone()),
        proptest::collection::vec(header_value(valid.clone()), 0..3),
        proptest::collection::vec(header_value(valid), 0..2),
    )
        .prop_map(|(method, uri, authorization, api_key)| Sent {
            method,
            uri,
            authorization,
            api_key,
        })
}

#[test]
fn extractor_answers_only_documented_statuses() {
    let rt = runtime();
    let (auth, valid) = authenticator(&rt);
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    let outcomes_cell = std::cell::RefCell::new(&mut outcomes);
    run("extractor", 1500, sent(valid.clone()), |s| {
        let Ok(uri) = s.uri.parse::<Uri>() else {
            return Ok(()); // hyper would have refused the request line
        };
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("x-api-key");
        for (name, values) in [
            (http::header::AUTHORIZATION, &s.authorization),
            (name, &s.api_key),
        ] {
            for v in values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    headers.append(name.clone(), v);
                }
            }
        }
        let result = rt.block_on(auth.check(AuthRequest {
            method: &s.method,
            uri: &uri,
            headers: &headers,
            peer: None,
        }));
        let label = match &result {
            Ok(Decision::Public) => "public",
            Ok(Decision::Authenticated(_)) => "authenticated",
            Err(r) => r.code(),
        };
        *outcomes_cell.borrow_mut().entry(label).or_default() += 1;
        match result {
            Ok(Decision::Public) => {
                let public = public_routes().is_public(&s.method, uri.path());
                prop_assert!(public, "public without the route: {:?}", s);
            }
            Ok(Decision::Authenticated(ctx)) => {
                // Only the one live token opens the door, and it was sent.
                prop_assert_eq!(ctx.account_id.as_str(), "acme");
                let carried = headers.values().any(|v| {
                    v.as_bytes()
                        .windows(valid.len())
                        .any(|w| w == valid.as_bytes())
                }) || uri
                    .query()
                    .is_some_and(|q| q.contains(&valid) || q.contains(&valid.replace('_', "%5F")));
                prop_assert!(carried, "authenticated without the token: {:?}", s);
            }
            Err(rejection) => {
                let status = rejection.status().as_u16();
                prop_assert!(
                    [400, 401, 429].contains(&status),
                    "status {} for {:?}",
                    status,
                    s
                );
                check_error_body(&rejection)?;
            }
        }
        Ok(())
    });
    eprintln!("fuzz extractor outcomes: {outcomes:?}");
    for outcome in [
        "public",
        "authenticated",
        "missing_token",
        "invalid_token",
        "invalid_request",
    ] {
        assert!(
            outcomes.contains_key(outcome),
            "no case reached {outcome}: {outcomes:?}"
        );
    }
}

/// A refusal's response: JSON `{"error": code, "message": …}`, no-store.
fn check_error_body(rejection: &Rejection) -> Result<(), TestCaseError> {
    use http_body_util::BodyExt;
    let response = rejection.to_response();
    prop_assert_eq!(response.status(), rejection.status());
    prop_assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let body = futures_body(response.into_body().collect());
    let json: serde_json::Value = serde_json::from_slice(&body.unwrap().to_bytes()).unwrap();
    prop_assert_eq!(json["error"].as_str(), Some(rejection.code()));
    prop_assert!(json["message"].is_string());
    Ok(())
}

/// Polls a ready future (a `Full` body's collection) without a runtime.
fn futures_body<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a Full body is ready at once"),
    }
}

#[test]
fn one_token_in_one_source_is_accepted_in_every_spelling() {
    let rt = runtime();
    let (auth, valid) = authenticator(&rt);
    run(
        "extractor_spellings",
        300,
        (
            "[bB][eE][aA][rR][eE][rR]",
            " {1,4}",
            "[ \t]{0,3}",
            0usize..4,
        ),
        |(scheme, spaces, tail, source)| {
            let mut headers = HeaderMap::new();
            let mut uri: Uri = "/orders".parse().unwrap();
            match source {
                0 => {
                    let v = format!("{scheme}{spaces}{valid}{tail}");
                    headers.insert("authorization", HeaderValue::from_str(&v).unwrap());
                }
                1 => {
                    let v = format!("{spaces}{valid}{tail}");
                    headers.insert("x-api-key", HeaderValue::from_str(&v).unwrap());
                }
                2 => uri = format!("/orders?a=1&api_key={valid}&b=2").parse().unwrap(),
                _ => {
                    uri = format!("/orders?api%5Fkey={}", valid.replace('_', "%5f"))
                        .parse()
                        .unwrap();
                }
            }
            let result = rt.block_on(auth.check(AuthRequest {
                method: &Method::GET,
                uri: &uri,
                headers: &headers,
                peer: None,
            }));
            prop_assert!(
                matches!(result, Ok(Decision::Authenticated(_))),
                "{:?} {:?}: {:?}",
                headers,
                uri,
                result
            );
            // Once accepted, the query token never reaches the service.
            let mut seen = uri;
            auth.remove_query_token(&mut seen);
            prop_assert!(!seen.to_string().contains(&valid[3..]));
            Ok(())
        },
    );
}

#[test]
fn query_token_removal_keeps_every_other_pair() {
    let rt = runtime();
    let (auth, valid) = authenticator(&rt);
    run("remove_query_token", 1000, path_and_query(valid), |pq| {
        let Ok(uri) = pq.parse::<Uri>() else {
            return Ok(());
        };
        let mut seen = uri.clone();
        auth.remove_query_token(&mut seen);
        prop_assert_eq!(seen.path(), uri.path());
        let names_token = |pair: &str| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            decode(&key.replace('+', " ")).as_deref() == Some("api_key")
        };
        let kept: Vec<&str> = seen
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        let expected: Vec<&str> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !names_token(p))
            .collect();
        prop_assert_eq!(kept, expected);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Public routes and path normalization.

/// Percent-decoding, written here: `None` on a bad escape or non-UTF-8.
fn decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = char::from(*bytes.get(i + 1)?).to_digit(16)?;
            let lo = char::from(*bytes.get(i + 2)?).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 3986 §5.2.4 dot-segment removal, as a lenient service would apply
/// it after reading `\` as `/`, cutting `;params` off each segment and
/// folding `//`.
fn resolve(path: &str) -> String {
    let path = path.replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Every reading of `raw` a service behind the gateway might make:
/// resolved then decoded, decoded once then resolved, decoded twice then
/// resolved (each resolution lenient).
fn readings(raw: &str) -> Vec<String> {
    let mut all: Vec<String> = decode(&resolve(raw)).into_iter().collect();
    if let Some(once) = decode(raw) {
        all.push(resolve(&once));
        if let Some(twice) = decode(&once) {
            all.push(resolve(&twice));
        }
    }
    all
}

fn under_public(path: &str) -> bool {
    path == PUBLIC || path.starts_with("/public/")
}

/// Paths built from the pieces traversal tricks are made of.
fn tricky_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("public".to_owned()),
        Just("private".to_owned()),
        Just("p%75blic".to_owned()),
        // Letter case: public routes stay case-sensitive, scoped ones
        // ignore it.
        Just("PUBLIC".to_owned()),
        Just("Public".to_owned()),
        Just("p%55blic".to_owned()),
        Just("PRIVATE".to_owned()),
        Just("Private".to_owned()),
        Just("pr%49vate".to_owned()),
        Just("pr\u{131}vate".to_owned()),
        Just("pr%C4%B1vate".to_owned()),
        Just("\u{17f}ecret".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2E%2E".to_owned()),
        Just(".%2e".to_owned()),
        Just("%2e".to_owned()),
        Just("%252e%252e".to_owned()),
        Just("%2f".to_owned()),
        Just("%2F".to_owned()),
        Just("..%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%5C".to_owned()),
        Just("..\\".to_owned()),
        Just("\\".to_owned()),
        Just(";".to_owned()),
        Just("..;".to_owned()),
        Just(";x=1".to_owned()),
        Just("%3b".to_owned()),
        Just("%00".to_owned()),
        Just("%25".to_owned()),
        Just("%".to_owned()),
        Just("%c0%ae%c0%ae".to_owned()),
        Just("%e2%80%a4".to_owned()),
        Just("\u{ff0e}\u{ff0e}".to_owned()),
        Just("é".to_owned()),
        Just(String::new()),
        "[a-z0-9._~-]{1,6}",
        "[!-~]{1,4}",
    ];
    (
        prop_oneof![
            Just("/public/"),
            Just("/"),
            Just("//"),
            Just(""),
            Just("/public")
        ],
        proptest::collection::vec((segment, prop_oneof![Just("/"), Just("//")]), 0..5),
        any::<bool>(),
    )
        .prop_map(|(start, segs, trailing)| {
            let mut path = start.to_owned();
            for (i, (seg, sep)) in segs.iter().enumerate() {
                if i > 0 {
                    path.push_str(sep);
                }
                path.push_str(seg);
            }
            if trailing {
                path.push('/');
            }
            path
        })
}

fn public_routes() -> PublicRoutes {
    PublicRoutes::new(&[PublicRoute {
        path_prefix: PUBLIC.into(),
        methods: vec![],
    }])
}

/// What docs/reference/http-contract.md "Public routes" promises of a path that is
/// public: it is in normal form, with none of the tricks, and every
/// reading of it stays under the prefix.
fn check_public(routes: &PublicRoutes, raw: &str) -> Result<(), TestCaseError> {
    if !routes.is_public(&Method::GET, raw) {
        return Ok(());
    }
    let lower = raw.to_ascii_lowercase();
    for trick in ["%2f", "%5c", "%00", "\\", ";", "%3b", "//", "%25"] {
        prop_assert!(!lower.contains(trick), "{:?} is public with {}", raw, trick);
    }
    let decoded = decode(raw);
    prop_assert!(decoded.is_some(), "{:?} is public with a bad escape", raw);
    let decoded = decoded.unwrap();
    prop_assert!(under_public(&decoded), "{:?} decodes outside /public", raw);
    let body = decoded.trim_end_matches('/');
    for seg in body.split('/').skip(1) {
        prop_assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{:?} is public with segment {:?}",
            raw,
            seg
        );
    }
    for reading in readings(raw) {
        prop_assert!(
            under_public(&reading),
            "{:?} is public but reads as {:?}",
            raw,
            reading
        );
    }
    Ok(())
}

#[test]
fn public_route_is_never_matched_by_a_trick() {
    let routes = public_routes();
    let hits = AtomicU64::new(0);
    run("public_routes_tricks", 2000, tricky_path(), |raw| {
        if routes.is_public(&Method::GET, &raw) {
            hits.fetch_add(1, Ordering::Relaxed);
        }
        check_public(&routes, &raw)
    });
    eprintln!(
        "fuzz public_routes_tricks: {} public",
        hits.load(Ordering::Relaxed)
    );
    assert!(
        hits.load(Ordering::Relaxed) > 0,
        "the generator never hit the route"
    );
}

#[test]
fn public_route_is_never_matched_by_arbitrary_bytes() {
    let routes = public_routes();
    run(
        "public_routes_bytes",
        2000,
        proptest::collection::vec(any::<u8>(), 0..128),
        |bytes| {
            let text = bytes_as_text(&bytes);
            check_public(&routes, &text)?;
            check_public(&routes, &format!("/public/{text}"))
        },
    );
}

// ---------------------------------------------------------------------------
// Scoped routes: what a lenient, case-blind service would run.

/// The scoped routes of these properties: /private needs
/// `private` for any method, GET on /reports `reports:read` (HEAD is GET),
/// DELETE on /orders `orders:delete`.
fn probed_routes() -> Vec<ScopedRoute> {
    let route = |prefix: &str, methods: &[&str], scope: &str| ScopedRoute {
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        scopes: vec![scope.into()],
        ..ScopedRoute::default()
    };
    vec![
        route("/private", &[], "private"),
        route("/reports", &["GET"], "reports:read"),
        route("/orders", &["DELETE"], "orders:delete"),
    ]
}

/// A path as a case-blind router compares it: ASCII lower case, and the
/// letters .NET and Java fold into ASCII ones.
fn case_blind(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '\u{130}' | '\u{131}' => 'i',
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

/// A request as a client could shape it: a method, a tricky path, and
/// perhaps a method override in a header (any spelling) or the query.
#[derive(Debug, Clone)]
struct Shaped {
    method: Method,
    path: String,
    header: Option<(String, String)>,
    query: Option<String>,
}

fn shaped() -> impl Strategy<Value = Shaped> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::POST),
        Just(Method::DELETE),
        Just(Method::PUT),
        // Frameworks upper-case a method before routing.
        Just(Method::from_bytes(b"get").unwrap()),
        Just(Method::from_bytes(b"head").unwrap()),
        Just(Method::from_bytes(b"Delete").unwrap()),
    ];
    let named = prop_oneof![
        Just("DELETE".to_owned()),
        Just("delete".to_owned()),
        Just("GET".to_owned()),
        Just("head".to_owned()),
        Just("PUT, DELETE".to_owned()),
        Just("%44ELETE".to_owned()),
        "[A-Za-z]{1,7}",
    ];
    let header_name = prop_oneof![
        Just("x-http-method-override"),
        Just("X-HTTP-Method"),
        Just("x-method-override"),
        Just("X_HTTP_Method_Override"),
        Just("x.http.method"),
        Just("X_Method.Override"),
    ];
    let query_name = prop_oneof![
        Just("_method"),
        Just("_METHOD"),
        Just("%5Fmethod"),
        Just("%5fMethod"),
        // PHP reads these as `_method`.
        Just(".method"),
        Just("[method"),
        Just("+_method"),
        Just("%20.Method"),
    ];
    // Often starting at a scoped prefix, in some letter case.
    let start = prop_oneof![
        Just(""),
        Just("/private"),
        Just("/PRIVATE"),
        Just("/reports"),
        Just("/Reports"),
        Just("/orders"),
        Just("/oRDERS"),
    ];
    let path = (start, tricky_path()).prop_map(|(start, rest)| format!("{start}{rest}"));
    (
        method,
        path,
        proptest::option::of((header_name, named.clone())),
        proptest::option::of((query_name, named)),
    )
        .prop_map(|(method, path, header, query)| Shaped {
            method,
            path,
            header: header.map(|(n, v)| (n.to_owned(), v.replace('%', ""))),
            query: query.map(|(n, v)| format!("{n}={v}")),
        })
}

/// The methods a lenient service may run for `shaped`, sent as `uri`: its
/// own, each one an override names (upper-cased, comma lists split), and
/// GET for HEAD. The query override counts when the request carries it:
/// after a `#` it is a fragment, which neither the gateway nor the
/// upstream behind it receives.
fn effective_methods(shaped: &Shaped, uri: &Uri) -> Vec<String> {
    let mut methods = vec![shaped.method.as_str().to_ascii_uppercase()];
    let mut add = |value: &str| {
        for piece in value.split(',') {
            methods.push(piece.trim().to_ascii_uppercase());
        }
    };
    if let Some((_, value)) = &shaped.header {
        add(value);
    }
    if let Some(pair) = &shaped.query
        && uri
            .query()
            .is_some_and(|query| query.ends_with(pair.as_str()))
    {
        let value = pair.split_once('=').map_or("", |(_, v)| v);
        add(&decode(value).unwrap_or_default());
    }
    if methods.iter().any(|m| m == "HEAD") {
        methods.push("GET".into());
    }
    methods
}

/// What docs/reference/http-contract.md "Scopes" promises: a request that a lenient,
/// case-blind service (any reading of its path, any method it names)
/// would run under a scoped rule is refused a token without that scope.
#[test]
fn a_scoped_route_is_never_walked_around() {
    let rt = runtime();
    let (auth, token) = rt.block_on(async {
        let service = TokenService::new(Arc::new(MemoryStore::new())).with_bcrypt_cost(4);
        let created = service
            .create_token(CreateTokenParams {
                account_id: "acme".into(),
                name: "fuzz".into(),
                scopes: tokengate::Scopes::new(["other"]).unwrap(),
                ..CreateTokenParams::default()
            })
            .await
            .unwrap();
        let config = AuthConfig {
            routes: probed_routes(),
            rate_limit: RateLimitConfig {
                per_token_requests: 0,
                ..RateLimitConfig::default()
            },
            ..AuthConfig::default()
        };
        let auth = Authenticator::new(service, &config).unwrap();
        (auth, created.token.expose_secret().to_owned())
    });
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let (hits, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    run("scoped_routes_tricks", 2000, shaped(), |shaped| {
        let mut target = shaped.path.clone();
        if let Some(query) = &shaped.query {
            target = format!("{target}?{query}");
        }
        // Some tricks are not a request target at all: nothing to check.
        let Ok(uri) = target.parse::<Uri>() else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, bearer.clone());
        if let Some((name, value)) = &shaped.header {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Ok(());
            };
            headers.insert(name, value);
        }
        let decision = rt.block_on(auth.check(AuthRequest {
            method: &shaped.method,
            uri: &uri,
            headers: &headers,
            peer: None,
        }));
        let methods = effective_methods(&shaped, &uri);
        let scoped = readings(uri.path()).iter().any(|reading| {
            let path = case_blind(reading);
            under(&path, "/private")
                || (under(&path, "/reports") && methods.iter().any(|m| m == "GET"))
                || (under(&path, "/orders") && methods.iter().any(|m| m == "DELETE"))
        });
        if decision.is_err() {
            refused.fetch_add(1, Ordering::Relaxed);
        }
        if scoped {
            hits.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                matches!(decision, Err(Rejection::InsufficientScope { .. })),
                "{:?} ran as {:?} under a scoped route: {:?}",
                shaped,
                methods,
                decision
            );
        }
        Ok(())
    });
    eprintln!(
        "fuzz scoped_routes_tricks: {} under a scoped route, {} refused",
        hits.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(
        hits.load(Ordering::Relaxed) > 0,
        "the generator never hit a scoped route"
    );
}

#[test]
fn public_route_prefixes_validate_or_refuse() {
    run(
        "public_route_validate",
        1000,
        prop_oneof![tricky_path(), any::<String>()],
        |prefix| {
            let route = PublicRoute {
                path_prefix: prefix.clone(),
                methods: vec![],
            };
            if route.validate().is_ok() {
                // An accepted prefix is one the matcher can match exactly.
                let routes = PublicRoutes::new(&[route]);
                prop_assert!(routes.is_public(&Method::GET, &prefix), "{:?}", prefix);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Config loading.

/// TOML-ish text: real sections and keys with arbitrary values, and noise.
fn toml_text() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[redis]"),
        Just("[security]"),
        Just("[cache]"),
        Just("[rate_limit]"),
        Just("[sources]"),
        Just("[client_ip]"),
        Just("[[public_routes]]"),
        Just("[proxy]"),
        Just("[admin]"),
        Just("[server]"),
        Just("[log]"),
        Just("[headers]"),
        Just("[nope]"),
    ];
    let key = prop_oneof![
        Just("url".to_owned()),
        Just("bcrypt_cost".to_owned()),
        Just("ttl".to_owned()),
        Just("max_entries".to_owned()),
        Just("per_token_rps".to_owned()),
        Just("query_param".to_owned()),
        Just("api_key_header".to_owned()),
        Just("trusted_proxies".to_owned()),
        Just("path_prefix".to_owned()),
        Just("methods".to_owned()),
        Just("listen".to_owned()),
        Just("upstream".to_owned()),
        Just("format".to_owned()),
        Just("key_prefix".to_owned()),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -~]{0,20}\"",
        "\"[0-9]{1,4}(s|ms|m|h|d)\"",
        "\"/[!-~]{0,12}\"",
        "\\[\"[ -~]{0,12}\"\\]",
        "[ -~]{0,16}",
        any::<String>(),
    ];
    let line = prop_oneof![
        2 => section.prop_map(str::to_owned),
        5 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => any::<String>(),
    ];
    proptest::collection::vec(line, 0..10).prop_map(|lines| lines.join("\n"))
}

fn one_line(error: &impl std::fmt::Display) -> Result<(), TestCaseError> {
    let text = error.to_string();
    prop_assert!(
        !text.contains('\n') && !text.contains('\r'),
        "a multi-line error: {:?}",
        text
    );
    prop_assert!(!text.is_empty());
    Ok(())
}

#[test]
fn config_toml_loads_or_fails_on_one_line() {
    run(
        "config_toml",
        1500,
        prop_oneof![
            3 => toml_text(),
            1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(|b| bytes_as_text(&b)),
        ],
        |text| {
            if let Err(e) = Config::from_toml_str(&text) {
                one_line(&e)?;
            }
            Ok(())
        },
    );
}

/// `TOKENGATE_*` variables: every real setting, near-misses and noise,
/// with arbitrary values.
fn env_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let names: Vec<String> = [
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "SECURITY_BCRYPT_COST",
        "CACHE_TTL",
        "CACHE_MAX_ENTRIES",
        "RATE_LIMIT_PER_TOKEN_RPS",
        "SOURCES_QUERY_PARAM",
        "SOURCES_API_KEY_HEADER",
        "CLIENT_IP_TRUSTED_PROXIES",
        "PROXY_LISTEN",
        "PROXY_UPSTREAM",
        "ADMIN_LISTEN",
        "ADMIN_ALLOW_UNAUTHENTICATED_LOOPBACK",
        "SERVER_MAX_CONNECTIONS",
        "LOG_FORMAT",
        "PUBLIC_ROUTES",
        "CONFIG",
        "ADMIN_KEY",
        "REDIS_URLL",
    ]
    .iter()
    .map(|s| format!("TOKENGATE_{s}"))
    .collect();
    let name = prop_oneof![
        4 => proptest::sample::select(names),
        1 => "TOKENGATE_[A-Z_]{0,20}",
        1 => any::<String>(),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_owned()),
        Just(String::new()),
        "[0-9]{1,3}(s|ms|m)",
        "127\\.0\\.0\\.1:[0-9]{1,5}",
        "[ -~]{0,24}",
        "[ -~]{0,8},[ -~]{0,8}",
        any::<String>(),
    ];
    proptest::collection::vec((name, value), 0..5)
}

#[test]
fn config_env_loads_or_fails_on_one_line() {
    let dir = std::env::temp_dir().join(format!("tokengate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokengate.toml");
    run(
        "config_env",
        1000,
        (env_pairs(), proptest::option::of(toml_text())),
        |(vars, text)| {
            let path = text.as_ref().map(|t| {
                std::fs::write(&file, t).unwrap();
                file.as_path()
            });
            if let Err(e) = Config::load_with_env(path, vars) {
                one_line(&e)?;
            }
            Ok(())
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// The committed corpus: inputs that once broke a property, or that sit on
// an edge, run on every `cargo test`.

/// `tests/fuzz-corpus/<target>.txt`: one input per line, `#` comments;
/// `\n`, `\t`, `\\` and `\xNN` escapes (a line is text, inputs need not be).
fn corpus(target: &str) -> Vec<String> {
    let path = format!(
        "{}/tests/fuzz-corpus/{target}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(unescape)
        .collect()
}

fn unescape(line: &str) -> String {
    let mut bytes = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => bytes.push(b'\n'),
            Some('t') => bytes.push(b'\t'),
            Some('r') => bytes.push(b'\r'),
            Some('\\') => bytes.push(b'\\'),
            Some('e') => {} // an explicit empty input: `\e`
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&hex, 16).expect("\\xNN"));
            }
            other => panic!("unknown escape \\{other:?} in {line:?}"),
        }
    }
    bytes_as_text(&bytes)
}

#[test]
fn corpus_token() {
    let seeds = corpus("token");
    assert!(!seeds.is_empty());
    for seed in &seeds {
        agree(seed).unwrap();
    }
    eprintln!("fuzz corpus token: {} seeds", seeds.len());
}

#[test]
fn corpus_public_routes() {
    let routes = public_routes();
    let seeds = corpus("path");
    let mut public = HashSet::new();
    for seed in &seeds {
        check_public(&routes, seed).unwrap();
        if routes.is_public(&Method::GET, seed) {
            public.insert(seed.clone());
        }
    }
    // The corpus marks the few that are public with a trailing comment
    // elsewhere; here it is enough that the obvious ones are.
    assert!(public.contains("/public/x"), "{public:?}");
    eprintln!(
        "fuzz corpus path: {} seeds, {} public",
        seeds.len(),
        public.len()
    );
}

#[test]
fn corpus_config() {
    let seeds = corpus("config");
    for seed in &seeds {
        if let Err(e) = Config::from_toml_str(seed) {
            one_line(&e).unwrap();
        }
    }
    eprintln!("fuzz corpus config: {} seeds", seeds.len());
}
