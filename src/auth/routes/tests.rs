use super::*;

fn routes() -> PublicRoutes {
    PublicRoutes::new(&[
        PublicRoute {
            path_prefix: "/public".into(),
            methods: vec![],
        },
        PublicRoute {
            path_prefix: "/health/".into(),
            methods: vec!["GET".into(), "head".into()],
        },
    ])
}

#[test]
fn matches_on_segment_boundaries_and_methods() {
    let r = routes();
    assert!(r.is_public(&Method::GET, "/public"));
    assert!(r.is_public(&Method::POST, "/public/x/y"));
    assert!(r.is_public(&Method::GET, "/public/"));
    assert!(
        r.is_public(&Method::GET, "/p%75blic/x"),
        "decoded before matching"
    );
    assert!(!r.is_public(&Method::GET, "/publicity"));
    assert!(r.is_public(&Method::HEAD, "/health"));
    assert!(!r.is_public(&Method::POST, "/health"));
    assert!(!r.is_public(&Method::GET, "/private"));
}

#[test]
fn traversal_and_odd_paths_are_never_public() {
    let r = routes();
    for path in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2E/private",
        "/public/./x",
        "//private",
        "/public//x",
        "/public%2f..%2fprivate",
        "/public/..%5cprivate",
        "/public/%zz",
        "/public/%",
        "/public/..;/private",
        "/public/%2e%2e;/private",
        "/public;x/y",
        "/public/%252e%252e/private",
        "/public/%25",
        "public",
        "",
    ] {
        assert!(!r.is_public(&Method::GET, path), "{path}");
    }
}

fn scoped(prefix: &str, methods: &[&str], scopes: &[&str]) -> ScopedRoute {
    ScopedRoute {
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        case_sensitive: false,
    }
}

/// The table of the probes that try to walk around a route.
fn probed() -> ScopedRoutes {
    ScopedRoutes::new(&[
        scoped("/admin", &[], &["admin"]),
        scoped("/orders", &["DELETE"], &["orders:delete"]),
        scoped("/reports", &["GET"], &["reports:read"]),
    ])
}

#[test]
fn prefixes_match_without_regard_to_case_unless_told() {
    let r = probed();
    for path in ["/ADMIN", "/Admin/users", "/aDmIn", "/%41dmin", "/admin/"] {
        assert_eq!(r.needed(&Method::GET, path), ["admin"], "{path}");
    }
    assert!(r.needed(&Method::GET, "/ADMINX").is_empty());
    assert_eq!(r.needed(&Method::DELETE, "/ORDERS/1"), ["orders:delete"]);
    // Letters a Unicode-aware router folds into ASCII ones: every scope.
    for path in ["/adm\u{131}n", "/adm%C4%B1n", "/x/\u{212a}ey"] {
        assert_eq!(
            r.needed(&Method::GET, path),
            ["admin", "orders:delete", "reports:read"],
            "{path}"
        );
    }
    // Other letters outside ASCII are just letters.
    assert!(r.needed(&Method::GET, "/stra%C3%9Fe").is_empty());

    let exact = ScopedRoutes::new(&[ScopedRoute {
        case_sensitive: true,
        ..scoped("/Admin", &[], &["admin"])
    }]);
    assert_eq!(exact.needed(&Method::GET, "/Admin/x"), ["admin"]);
    assert!(exact.needed(&Method::GET, "/admin").is_empty());
    assert!(exact.needed(&Method::GET, "/ADMIN").is_empty());
    // With no rule ignoring case, no letter is special.
    assert!(exact.needed(&Method::GET, "/adm%C4%B1n").is_empty());
    // A long first segment, upper-cased, still finds its rule.
    let long = format!("/{}", "a".repeat(80));
    let table = ScopedRoutes::new(&[scoped(&long, &[], &["long"])]);
    assert_eq!(table.needed(&Method::GET, &long.to_uppercase()), ["long"]);
}

#[test]
fn a_route_for_get_covers_head() {
    let r = probed();
    assert_eq!(r.needed(&Method::HEAD, "/reports/q1"), ["reports:read"]);
    assert_eq!(r.needed(&Method::HEAD, "/REPORTS/q1"), ["reports:read"]);
    assert!(r.needed(&Method::POST, "/reports/q1").is_empty());
    // A rule of its own for HEAD beside one for GET is ambiguous.
    let both = [
        scoped("/reports", &["GET"], &["x"]),
        scoped("/reports", &["HEAD"], &[]),
    ];
    let e = ScopedRoute::check_overlaps(&both).unwrap_err().to_string();
    assert!(e.contains("applies to HEAD too"), "{e}");
    // Prefixes that differ only in case overlap, unless both are exact.
    let cased = [scoped("/a", &[], &["x"]), scoped("/A", &[], &["y"])];
    assert!(ScopedRoute::check_overlaps(&cased).is_err());
    let exact = cased.map(|r| ScopedRoute {
        case_sensitive: true,
        ..r
    });
    assert!(ScopedRoute::check_overlaps(&exact).is_ok());
    // Public routes stay as written: GET does not make HEAD public.
    let public = PublicRoutes::new(&[PublicRoute {
        path_prefix: "/health".into(),
        methods: vec!["GET".into()],
    }]);
    assert!(!public.is_public(&Method::HEAD, "/health"));
    assert!(!public.is_public(&Method::GET, "/HEALTH"));
}

#[test]
fn a_method_override_needs_the_scopes_of_both_methods() {
    let r = probed();
    let need = |method: Method, path: &str, named: Named| {
        r.scopes(&r.need(&method, path, &named)).to_vec()
    };
    let delete = || Named::Methods(vec![Method::DELETE]);
    assert_eq!(need(Method::POST, "/orders/1", delete()), ["orders:delete"]);
    assert_eq!(
        need(Method::GET, "/reports/q1", delete()),
        ["reports:read"],
        "the route's own scopes, and nothing for DELETE"
    );
    assert_eq!(
        need(
            Method::POST,
            "/reports/q1",
            Named::Methods(vec![Method::HEAD])
        ),
        ["reports:read"]
    );
    assert_eq!(
        need(Method::POST, "/orders/1", Named::Unreadable),
        ["admin", "orders:delete", "reports:read"]
    );
    let table = ScopedRoutes::new(&[
        scoped("/orders", &["DELETE"], &["orders:delete"]),
        scoped("/orders", &[], &["orders:read"]),
    ]);
    assert_eq!(
        table.scopes(&table.need(&Method::GET, "/orders/1", &delete())),
        ["orders:read", "orders:delete"]
    );
    assert_eq!(
        table.scopes(&table.need(&Method::GET, "/orders/1", &Named::None)),
        ["orders:read"]
    );
}

#[test]
fn the_most_specific_scoped_route_wins() {
    let routes = [
        scoped("/orders", &[], &["orders:read"]),
        scoped("/orders/", &["post", "DELETE"], &["orders:write"]),
        scoped("/orders/catalog", &[], &[]),
        scoped("/", &["DELETE"], &["admin"]),
    ];
    let r = ScopedRoutes::new(&routes);
    let needed = |m: Method, p: &str| r.needed(&m, p).join(" ");
    assert_eq!(needed(Method::GET, "/orders"), "orders:read");
    assert_eq!(needed(Method::GET, "/orders/1"), "orders:read");
    assert_eq!(needed(Method::POST, "/orders/1"), "orders:write");
    assert_eq!(needed(Method::DELETE, "/orders"), "orders:write");
    assert_eq!(needed(Method::DELETE, "/orders/catalog/x"), "");
    assert_eq!(needed(Method::DELETE, "/other"), "admin");
    assert_eq!(needed(Method::GET, "/other"), "");
    assert_eq!(needed(Method::GET, "/ordersx"), "");
    assert_eq!(needed(Method::GET, "/%6frders"), "orders:read");
    // Not in normal form: every scope any route names.
    for path in [
        "/x/../orders",
        "//orders",
        "/orders/catalog/%2e%2e",
        "/a;b",
        "orders",
    ] {
        assert_eq!(
            needed(Method::GET, path),
            "admin orders:read orders:write",
            "{path}"
        );
    }
    assert!(
        ScopedRoutes::new(&[])
            .needed(&Method::GET, "/x/../y")
            .is_empty()
    );
}

#[test]
fn scoped_routes_are_checked() {
    let err = |route: ScopedRoute| route.validate().unwrap_err().to_string();
    assert!(err(scoped("/a", &[], &["Orders"])).contains("routes.scopes"));
    assert!(err(scoped("/a/../b", &[], &["x"])).contains("routes.path_prefix"));
    assert!(err(scoped("/a", &["G T"], &["x"])).contains("routes.methods"));
    let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    let route = ScopedRoute {
        scopes: many,
        ..scoped("/a", &[], &[])
    };
    assert!(
        route
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at most 32")
    );
    assert!(scoped("/a", &[], &["a:*"]).validate().is_ok());

    let overlapping = [
        scoped("/a", &["GET", "POST"], &["x"]),
        scoped("/a/", &["post"], &["y"]),
    ];
    let e = ScopedRoute::check_overlaps(&overlapping).unwrap_err();
    assert!(e.to_string().contains("two routes for path_prefix"), "{e}");
    let both_any = [scoped("/a", &[], &["x"]), scoped("/a", &[], &["y"])];
    assert!(ScopedRoute::check_overlaps(&both_any).is_err());
    let fine = [
        scoped("/a", &["GET"], &["x"]),
        scoped("/a", &[], &["y"]),
        scoped("/a/b", &["GET"], &["z"]),
    ];
    assert!(ScopedRoute::check_overlaps(&fine).is_ok());
}
