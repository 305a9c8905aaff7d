//! Arbitrary path segments, methods, headers and JSON bodies through the
//! admin API (docs/design/fuzzing.md): only documented statuses, never a 5xx on a
//! healthy store, and a JSON error body on every 4xx.

use http::Method;
use http_body_util::BodyExt;
use proptest::prelude::*;

use super::tests::PEER;
use super::*;
use crate::wire::proptest_config;

const KEY: &str = "0123456789abcdef-admin";

/// A path segment: ids in every form, encodings, tricks, anything.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{1,12}",
        "(%[0-9a-fA-F]{2}|%|[a-z]|\\.|;|,|\")*",
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "[0-9A-Za-z]{22}",
        "mk_[0-9A-Za-z]{52}",
        "[!-~]{0,16}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (segment(), segment(), 0u8..6, "/{0,2}").prop_map(|(account, id, shape, lead)| {
        let tokens = format!("{lead}/v1/accounts/{account}/tokens");
        match shape {
            0 => tokens,
            1 => format!("{tokens}/{id}"),
            2 => format!("{tokens}/{id}/quota"),
            3 => format!("/{account}"),
            4 => format!("{tokens}/{id}/{account}"),
            _ => ["/healthz", "/readyz", "/openapi.json", "/metrics"][id.len() % 4].to_owned(),
        }
    })
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        let key = prop_oneof![
            proptest::sample::select(vec![
                "name",
                "expires_in_days",
                "quota",
                "remaining",
                "refill",
                "amount",
                "interval",
                "scopes",
            ])
            .prop_map(str::to_owned),
            "[a-z_]{0,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => (
            "[ -~]{0,30}",
            proptest::option::of(any::<i64>()),
            proptest::option::of((any::<i64>(), any::<i64>(), "(day|week|month|year|[a-z]{0,6})")),
        )
            .prop_map(|(name, days, quota)| {
                let mut v = serde_json::json!({ "name": name });
                if let Some(d) = days {
                    v["expires_in_days"] = d.into();
                    v["scopes"] = serde_json::json!([name, "orders:*"]);
                }
                if let Some((remaining, amount, interval)) = quota {
                    v["quota"] = serde_json::json!({
                        "remaining": remaining,
                        "refill": { "amount": amount, "interval": interval },
                    });
                }
                v.to_string().into_bytes()
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
    ]
}

#[test]
fn arbitrary_requests_get_documented_answers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (keyed, keyless) = rt.block_on(async {
        let store = Arc::new(crate::store::MemoryStore::new());
        let service = TokenService::new(store).with_bcrypt_cost(4);
        let auth =
            crate::auth::Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
        let metrics = Arc::new(Metrics::new(
            auth.clone(),
            crate::telemetry::metrics::StoreLatency::default(),
        ));
        (
            Admin::new(auth.clone(), metrics.clone(), Some(&AdminKey::new(KEY))),
            Admin::new(auth, metrics, None),
        )
    });
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::HEAD),
        Just(Method::PATCH),
    ];
    let strategy = (
        method,
        path(),
        body(),
        0u8..4,
        proptest::option::of("(localhost|127\\.0\\.0\\.1|evil\\.example|\\[::1\\])(:[0-9]{1,5})?"),
        proptest::option::of("(application/json|text/plain|APPLICATION/JSON; charset=utf-8)"),
    );
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config(1000));
    let result = runner.run(
        &strategy,
        |(method, path, body, auth, host, content_type)| {
            let Ok(uri) = path.parse::<http::Uri>() else {
                return Ok(()); // hyper refuses such a request line
            };
            let mut builder = Request::builder().method(method).uri(uri);
            builder = match auth {
                0 => builder.header(AUTHORIZATION, format!("Bearer {KEY}")),
                1 => builder.header(AUTHORIZATION, "Bearer wrong"),
                2 => builder.header(AUTHORIZATION, format!("bearer   {KEY} ")),
                _ => builder,
            };
            if let Some(host) = host {
                builder = builder.header(http::header::HOST, host);
            }
            if let Some(content_type) = content_type {
                builder = builder.header(CONTENT_TYPE, content_type);
            }
            let admin = if auth == 3 { &keyless } else { &keyed };
            let request = builder
                .body(http_body_util::Full::new(Bytes::from(body)))
                .unwrap();
            let response = rt.block_on(admin.handle(request, PEER));
            let status = response.status().as_u16();
            prop_assert!(
                [200, 201, 400, 401, 403, 404, 405, 413, 415, 422].contains(&status),
                "status {} for {}",
                status,
                path
            );
            if status >= 400 {
                let body = rt
                    .block_on(response.into_body().collect())
                    .unwrap()
                    .to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(json["error"].is_string() && json["message"].is_string());
                if status == 422 {
                    prop_assert!(json["field"].is_string());
                }
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
