use http::Method;
use http_body_util::BodyExt;

use super::config::MIN_ADMIN_KEY_LEN;
use super::guard::is_loopback_host;
use super::*;

/// The caller of the unit tests' requests.
pub(super) const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

#[test]
fn loopback_hosts() {
    for host in [
        "localhost",
        "localhost:8081",
        "LOCALHOST.",
        "app.localhost:1",
        "127.0.0.1:8081",
        "127.1.2.3",
        "[::1]:8081",
        "[::1]",
    ] {
        assert!(is_loopback_host(host), "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:8081",
        "localhost.evil.example",
        "10.0.0.1:8081",
        "[2001:db8::1]:80",
        "",
        "0.0.0.0",
    ] {
        assert!(!is_loopback_host(host), "{host}");
    }
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut routes: Vec<(String, String)> = Route::ALL
        .iter()
        .map(|route| {
            let (method, template) = route.spec();
            (method.to_string(), template.to_owned())
        })
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
}

#[test]
fn requests_parse_into_routes() {
    let parse = |method: Method, path: &str| match Route::parse(&method, path) {
        Parsed::Route(route, params) => format!("{route:?} {params:?}"),
        Parsed::WrongMethod { allow, .. } => format!("405 {allow}"),
        Parsed::NotFound => "404".to_owned(),
    };
    assert_eq!(
        parse(Method::HEAD, "/healthz"),
        "Healthz Params { account: None, id: None }"
    );
    assert_eq!(parse(Method::POST, "/readyz"), "405 GET, HEAD");
    assert_eq!(
        parse(Method::POST, "/v1/accounts/a%20b/tokens"),
        r#"CreateToken Params { account: Some("a%20b"), id: None }"#
    );
    assert_eq!(
        parse(Method::HEAD, "/v1/accounts/a/tokens"),
        "405 GET, POST"
    );
    assert_eq!(
        parse(Method::PUT, "/v1/accounts/a/tokens/x"),
        "405 GET, DELETE, PATCH"
    );
    assert_eq!(parse(Method::GET, "/v1/accounts/a/tokens/x/y"), "404");
    assert_eq!(parse(Method::GET, "/healthz/"), "404");
    assert_eq!(parse(Method::GET, "/"), "404");
    assert_eq!(
        parse(Method::GET, "//healthz"),
        "Healthz Params { account: None, id: None }"
    );
}

/// Checks `value` against an OpenAPI 3.0 schema: the parts the document
/// uses (`$ref`, `allOf`, `type`, `nullable`, `required`, `properties`,
/// `additionalProperties: false`, `enum`, `items`, `format: uuid`).
fn check_schema(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        return check_schema(doc, &doc["components"]["schemas"][name], value, at);
    }
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            check_schema(doc, part, value, at);
        }
        return;
    }
    if value.is_null() {
        assert_eq!(
            schema["nullable"],
            Value::Bool(true),
            "{at}: null where not nullable"
        );
        return;
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("{at}: schema type {other} not handled"),
        None => true,
    };
    assert!(fits, "{at}: {value} is not a {}", schema["type"]);
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    if schema["format"] == "uuid" {
        assert!(
            value.as_str().unwrap().parse::<TokenId>().is_ok(),
            "{at}: {value} is not a uuid"
        );
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check_schema(doc, &schema["items"], item, &format!("{at}[{i}]"));
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap();
            assert!(object.contains_key(key), "{at}: {key} is required");
        }
        let properties = schema["properties"].as_object();
        for (key, field) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(property) => check_schema(doc, property, field, &format!("{at}.{key}")),
                None => assert_ne!(
                    schema["additionalProperties"],
                    Value::Bool(false),
                    "{at}: {key} is not in the schema"
                ),
            }
        }
    }
}

/// The admin API on the in-memory store, called in-process, and the
/// OpenAPI document its answers are checked against.
struct Documented {
    doc: serde_json::Value,
    admin: Admin,
    key: AdminKey,
}

impl Documented {
    fn new() -> Self {
        let store = Arc::new(crate::store::MemoryStore::new());
        let service = TokenService::new(store).with_bcrypt_cost(4);
        let auth =
            crate::auth::Authenticator::new(service, &crate::auth::AuthConfig::default()).unwrap();
        let metrics = Arc::new(Metrics::new(
            auth.clone(),
            crate::telemetry::metrics::StoreLatency::default(),
        ));
        let key = AdminKey::new("k".repeat(MIN_ADMIN_KEY_LEN));
        Self {
            doc: serde_json::from_str(OPENAPI).unwrap(),
            admin: Admin::new(auth, metrics, Some(&key)),
            key,
        }
    }

    /// `method path` with `body`, with the admin key or without: the status
    /// and the JSON body.
    async fn call(
        &self,
        method: Method,
        path: String,
        body: &'static str,
        with_key: bool,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path);
        if with_key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", self.key.0));
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.admin.handle(request, PEER).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        )
    }

    /// Checks one answer against the schema its route documents for its
    /// status.
    fn check(&self, route: Route, status: StatusCode, body: &serde_json::Value) {
        let doc = &self.doc;
        let (method, template) = route.spec();
        let documented =
            &doc["paths"][template][method.as_str().to_lowercase()]["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{template} does not document {status}"
        );
        let schema = &documented["content"]["application/json"]["schema"];
        check_schema(doc, schema, body, &format!("{method} {template} {status}"));
    }
}

#[tokio::test]
async fn real_responses_match_the_documented_schemas() {
    let api = Documented::new();
    let tokens = "/v1/accounts/acme/tokens".to_owned();
    let (status, created) = api
        .call(
            Method::POST,
            tokens.clone(),
            r#"{"name":"ci","expires_in_days":30}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.check(Route::CreateToken, status, &created);
    assert!(crate::token::parse(created["token"].as_str().unwrap()).is_ok());
    let token = format!("{tokens}/{}", created["id"].as_str().unwrap());

    let (status, list) = api.call(Method::GET, tokens.clone(), "", true).await;
    api.check(Route::ListTokens, status, &list);
    let (status, info) = api.call(Method::GET, token.clone(), "", true).await;
    api.check(Route::GetToken, status, &info);
    // The whole token names it too (and only its id comes back).
    let by_text = format!("{tokens}/{}", created["token"].as_str().unwrap());
    let (status, same) = api.call(Method::GET, by_text, "", true).await;
    assert_eq!((status, &same), (StatusCode::OK, &info));
    let quota = format!("{token}/quota");
    let (status, set) = api
        .call(
            Method::PUT,
            quota.clone(),
            r#"{"remaining":5,"refill":{"amount":10,"interval":"month"}}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(set["quota"]["refill"]["interval"], "month");
    api.check(Route::SetQuota, status, &set);
    let (status, error) = api
        .call(Method::PUT, quota.clone(), r#"{"remaining":-1}"#, true)
        .await;
    api.check(Route::SetQuota, status, &error);
    let (status, removed) = api.call(Method::DELETE, quota, "", true).await;
    assert_eq!(removed["quota"], serde_json::Value::Null);
    api.check(Route::RemoveQuota, status, &removed);
    let (status, rotated) = api
        .call(
            Method::POST,
            format!("{token}/rotate"),
            r#"{"grace":"1h"}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    api.check(Route::RotateToken, status, &rotated);
    assert_eq!(rotated["old"]["rotated_to"], rotated["id"]);
    let (status, error) = api
        .call(
            Method::POST,
            format!("{token}/rotate"),
            r#"{"grace":"1h"}"#,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    api.check(Route::RotateToken, status, &error);
    let (status, error) = api
        .call(Method::POST, format!("{token}/rotate"), "{}", true)
        .await;
    assert_eq!(
        (status, &error["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &"grace".into())
    );
    api.check(Route::RotateToken, status, &error);
    let (status, revoked) = api.call(Method::DELETE, token.clone(), "", true).await;
    api.check(Route::RevokeToken, status, &revoked);
    assert_eq!(revoked["status"], "revoked");
    audit_trail_matches(&api).await;
    let (status, health) = api
        .call(Method::GET, "/healthz".to_owned(), "", false)
        .await;
    api.check(Route::Healthz, status, &health);
    let (status, ready) = api.call(Method::GET, "/readyz".to_owned(), "", false).await;
    api.check(Route::Readyz, status, &ready);
}

/// The trail of what `real_responses_match_the_documented_schemas` did, paged,
/// with the caller's address.
async fn audit_trail_matches(api: &Documented) {
    let (status, audit) = api
        .call(Method::GET, "/v1/audit?limit=3".to_owned(), "", true)
        .await;
    api.check(Route::Audit, status, &audit);
    assert_eq!(audit["entries"][0]["action"], "create");
    assert_eq!(audit["entries"][0]["actor"]["id"], PEER.to_string());
    let (status, audit) = api
        .call(
            Method::GET,
            format!("/v1/audit?after={}", audit["next"].as_str().unwrap()),
            "",
            true,
        )
        .await;
    api.check(Route::Audit, status, &audit);
    let actions: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "rotate", "revoke"]);
    let (status, error) = api
        .call(Method::GET, "/v1/audit?after=x".to_owned(), "", true)
        .await;
    api.check(Route::Audit, status, &error);
}

#[tokio::test]
async fn error_bodies_match_the_documented_schemas() {
    let api = Documented::new();
    let tokens = "/v1/accounts/acme/tokens".to_owned();
    let (status, error) = api.call(Method::POST, tokens.clone(), "{", true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api.check(Route::CreateToken, status, &error);
    let (status, error) = api
        .call(Method::POST, tokens.clone(), r#"{"name":""}"#, true)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "name");
    api.check(Route::CreateToken, status, &error);
    let (status, error) = api.call(Method::GET, tokens.clone(), "", false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.check(Route::ListTokens, status, &error);
    let unknown = format!("{tokens}/{}", TokenId::from_uuid(uuid::Uuid::nil()));
    let (status, error) = api.call(Method::GET, unknown, "", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.check(Route::GetToken, status, &error);
    // Not a route's own status, but the same Error body.
    let (status, error) = api.call(Method::GET, "/nowhere".to_owned(), "", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    check_schema(
        &api.doc,
        &serde_json::json!({"$ref": "#/components/schemas/Error"}),
        &error,
        "404",
    );
}
