use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_static(v));
    }
    map
}

fn all_sources() -> Sources {
    Sources::new(&SourcesConfig {
        api_key_header: true,
        query_param: "api_key".into(),
    })
}

#[test]
fn bearer_scheme_is_case_insensitive_with_one_or_more_spaces() {
    let uri: Uri = "/".parse().unwrap();
    for value in ["Bearer abc", "bearer abc", "BEARER   abc", "Bearer abc  "] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(
            Sources::default().extract(&h, &uri),
            Ok(Presented::Token("abc".into())),
            "{value}"
        );
    }
    for value in ["Basic abc", "Token abc", "Bearerabc"] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(
            Sources::default().extract(&h, &uri),
            Ok(Presented::Nothing),
            "{value}"
        );
    }
    for value in ["Bearer", "Bearer ", "Bearer a b"] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(
            Sources::default().extract(&h, &uri),
            Ok(Presented::Garbage),
            "{value}"
        );
    }
}

#[test]
fn more_than_one_token_is_an_invalid_request() {
    let uri: Uri = "/x?api_key=q".parse().unwrap();
    let two_auth = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
    assert_eq!(
        Sources::default().extract(&two_auth, &"/".parse().unwrap()),
        Err(MULTIPLE)
    );
    let bearer = headers(&[("authorization", "Bearer a")]);
    assert_eq!(all_sources().extract(&bearer, &uri), Err(MULTIPLE));
    let both = headers(&[("authorization", "Bearer a"), ("x-api-key", "b")]);
    assert_eq!(
        all_sources().extract(&both, &"/".parse().unwrap()),
        Err(MULTIPLE)
    );
    let twice: Uri = "/x?api_key=a&api_key=b".parse().unwrap();
    assert_eq!(
        all_sources().extract(&HeaderMap::new(), &twice),
        Err(MULTIPLE)
    );
    // Disabled sources are not read at all.
    assert_eq!(
        Sources::default().extract(&bearer, &uri),
        Ok(Presented::Token("a".into()))
    );
}

#[test]
fn query_param_is_decoded_and_removed() {
    let uri: Uri = "/x?a=1&api_key=mk%5Fabc&b=2".parse().unwrap();
    assert_eq!(
        all_sources().extract(&HeaderMap::new(), &uri),
        Ok(Presented::Token("mk_abc".into()))
    );
    assert_eq!(remove_query_param(&uri, "api_key"), "/x?a=1&b=2");
    assert_eq!(
        remove_query_param(&"/x?api_key=1".parse().unwrap(), "api_key"),
        "/x"
    );
    assert_eq!(
        remove_query_param(&"/x?api_keys=1".parse().unwrap(), "api_key"),
        "/x?api_keys=1"
    );
    // The name counts once decoded, as the service would decode it.
    let uri: Uri = "/x?a=1&api%5Fkey=mk_abc&b=%41".parse().unwrap();
    assert_eq!(
        all_sources().extract(&HeaderMap::new(), &uri),
        Ok(Presented::Token("mk_abc".into()))
    );
    assert_eq!(remove_query_param(&uri, "api_key"), "/x?a=1&b=%41");
    let two: Uri = "/x?api_key=mk_a&api%5fkey=mk_b".parse().unwrap();
    assert!(all_sources().extract(&HeaderMap::new(), &two).is_err());
    assert_eq!(remove_query_param(&two, "api_key"), "/x");
}

#[test]
fn client_ip_trusts_only_configured_proxies() {
    let resolver = ClientIp::new(&ClientIpConfig::default());
    let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let remote: IpAddr = "9.9.9.9".parse().unwrap();
    assert_eq!(
        resolver.resolve(Some(remote), &xff),
        Some(remote),
        "untrusted peer: XFF ignored"
    );
    assert_eq!(
        resolver.resolve(Some(local), &xff),
        Some("1.2.3.4".parse().unwrap()),
        "nearest entry"
    );
    let chain = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "1.2.3.4, 127.0.0.2"),
    ]);
    assert_eq!(
        resolver.resolve(Some(local), &chain),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(
        resolver.resolve(Some(local), &HeaderMap::new()),
        Some(local)
    );
    // Ports, as some load balancers add them, are not part of the client.
    for entry in [
        "1.2.3.4:4711",
        " 1.2.3.4:80",
        "[2001:db8::7]:443",
        "[2001:db8::7]",
    ] {
        let with_port = HeaderMap::from_iter([(
            http::header::HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(&format!("6.6.6.6, {entry}")).unwrap(),
        )]);
        let expected: IpAddr = if entry.contains('[') {
            "2001:db8::7".parse().unwrap()
        } else {
            "1.2.3.4".parse().unwrap()
        };
        assert_eq!(
            resolver.resolve(Some(local), &with_port),
            Some(expected),
            "{entry}"
        );
    }
    for bad in [
        "1.2.3.4:",
        "1.2.3.4:port",
        "[2001:db8::7",
        "2001:db8::7]:80",
        "[1.2.3.4]",
    ] {
        let bad = HeaderMap::from_iter([(
            http::header::HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(bad).unwrap(),
        )]);
        assert_eq!(resolver.resolve(Some(local), &bad), Some(local), "{bad:?}");
    }
    let garbage = headers(&[("x-forwarded-for", "not-an-ip")]);
    assert_eq!(resolver.resolve(Some(local), &garbage), Some(local));
    assert_eq!(resolver.resolve(None, &xff), None);
    let mapped: IpAddr = "::ffff:9.9.9.9".parse().unwrap();
    assert_eq!(resolver.resolve(Some(mapped), &xff), Some(remote));
}
