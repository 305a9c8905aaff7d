//! The admin API's routes: which method and path is which operation.

use http::Method;

/// Every admin route. A request is parsed into one ([`Route::parse`]), then
/// answered ([`Admin::apply`]); [`Route::ALL`] is also the table the OpenAPI
/// document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    ListTokens,
    CreateToken,
    GetToken,
    RevokeToken,
    UpdateToken,
    SetQuota,
    RemoveQuota,
    RotateToken,
    Verify,
    Audit,
}

/// The path parameters of a matched route, as sent (percent-encoded).
#[derive(Debug, Default)]
pub(super) struct Params {
    pub(super) account: Option<String>,
    pub(super) id: Option<String>,
}

/// What a request's method and path name.
#[derive(Debug)]
pub(super) enum Parsed {
    Route(Route, Params),
    /// The path is a route's, the method none of its: 405 with `Allow`
    /// (after the key check, for the token routes).
    WrongMethod {
        allow: String,
        needs_key: bool,
        params: Params,
    },
    NotFound,
}

impl Route {
    /// The route table, in the order methods are listed in `Allow`.
    pub(super) const ALL: [Route; 14] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::OpenApi,
        Route::ListTokens,
        Route::CreateToken,
        Route::GetToken,
        Route::RevokeToken,
        Route::UpdateToken,
        Route::SetQuota,
        Route::RemoveQuota,
        Route::RotateToken,
        Route::Verify,
        Route::Audit,
    ];

    /// Method and path template (`{name}` matches one segment).
    pub(super) fn spec(self) -> (Method, &'static str) {
        match self {
            Route::Healthz => (Method::GET, "/healthz"),
            Route::Readyz => (Method::GET, "/readyz"),
            Route::Metrics => (Method::GET, "/metrics"),
            Route::OpenApi => (Method::GET, "/openapi.json"),
            Route::ListTokens => (Method::GET, "/v1/accounts/{account}/tokens"),
            Route::CreateToken => (Method::POST, "/v1/accounts/{account}/tokens"),
            Route::GetToken => (Method::GET, "/v1/accounts/{account}/tokens/{id}"),
            Route::RevokeToken => (Method::DELETE, "/v1/accounts/{account}/tokens/{id}"),
            Route::UpdateToken => (Method::PATCH, "/v1/accounts/{account}/tokens/{id}"),
            Route::SetQuota => (Method::PUT, "/v1/accounts/{account}/tokens/{id}/quota"),
            Route::RemoveQuota => (Method::DELETE, "/v1/accounts/{account}/tokens/{id}/quota"),
            Route::RotateToken => (Method::POST, "/v1/accounts/{account}/tokens/{id}/rotate"),
            Route::Verify => (Method::POST, "/v1/verify"),
            Route::Audit => (Method::GET, "/v1/audit"),
        }
    }

    /// The token routes need the admin key; probes and scrapers do not.
    pub(super) fn needs_key(self) -> bool {
        matches!(
            self,
            Route::ListTokens
                | Route::CreateToken
                | Route::GetToken
                | Route::RevokeToken
                | Route::UpdateToken
                | Route::SetQuota
                | Route::RemoveQuota
                | Route::RotateToken
                | Route::Verify
                | Route::Audit
        )
    }

    /// Whether `method` is this route's; HEAD counts as GET on the routes
    /// that need no key.
    fn accepts(self, method: &Method) -> bool {
        let (own, _) = self.spec();
        *method == own || (*method == Method::HEAD && own == Method::GET && !self.needs_key())
    }

    /// `path`'s parameters if it fits this route's template (leading
    /// slashes count as one).
    fn match_path(self, path: &str) -> Option<Params> {
        let (_, template) = self.spec();
        let mut params = Params::default();
        let mut segments = path.trim_start_matches('/').split('/');
        for expected in template.trim_start_matches('/').split('/') {
            let segment = segments.next()?;
            match expected {
                "{account}" => params.account = Some(segment.to_owned()),
                "{id}" => params.id = Some(segment.to_owned()),
                literal if literal == segment => {}
                _ => return None,
            }
        }
        segments.next().is_none().then_some(params)
    }

    pub(super) fn parse(method: &Method, path: &str) -> Parsed {
        let mut allow: Vec<String> = Vec::new();
        let mut needs_key = false;
        let mut matched = None;
        for route in Route::ALL {
            let Some(params) = route.match_path(path) else {
                continue;
            };
            if route.accepts(method) {
                return Parsed::Route(route, params);
            }
            matched = Some(params);
            let own = route.spec().0;
            allow.push(own.to_string());
            if own == Method::GET && !route.needs_key() {
                allow.push("HEAD".to_owned());
            }
            needs_key |= route.needs_key();
        }
        match matched {
            Some(params) => Parsed::WrongMethod {
                allow: allow.join(", "),
                needs_key,
                params,
            },
            None => Parsed::NotFound,
        }
    }
}
