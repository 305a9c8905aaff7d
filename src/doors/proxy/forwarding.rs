//! Forwarding headers: the client's `X-Forwarded-*` and `Forwarded` are
//! dropped (kept only from trusted proxies), the proxy's own are set
//! (docs/reference/http-contract.md, "Forwarding headers").

use http::header::HOST;
use http::{HeaderMap, HeaderValue};

use crate::doors::ClientConnection;
use crate::doors::proxy::Proxy;

/// The forwarding headers, folded: tokengate sets the first three itself,
/// and none of them is believed from a client that is not a trusted proxy.
const FORWARDING: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "forwarded",
];

/// Removes every spelling of a forwarding header that a proxy or framework
/// may fold into the real one (`X_Forwarded_For`, `x.real.ip`: nginx,
/// CGI/WSGI and some Node frameworks read them as `X-Forwarded-For`), as
/// for identity headers; and, from a peer that is not a trusted proxy, the
/// real spellings too (docs/reference/http-contract.md, "Forwarding headers").
fn strip_forwarding(headers: &mut HeaderMap, trusted: bool) {
    // The common case, none present: one pass over the names, no allocation.
    if headers.keys().any(is_folded_forwarding) {
        let forged: Vec<http::HeaderName> = headers
            .keys()
            .filter(|n| is_folded_forwarding(n))
            .cloned()
            .collect();
        for name in forged {
            headers.remove(name);
        }
    }
    if !trusted {
        // X-Forwarded-For/-Proto/-Host are set afresh by the caller.
        for name in &FORWARDING[3..] {
            headers.remove(*name);
        }
    }
}

/// A name with `_` or `.` that folds into a forwarding header.
fn is_folded_forwarding(name: &http::HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.iter().any(|&b| b == b'_' || b == b'.')
        && FORWARDING
            .iter()
            .any(|f| crate::auth::folds_to(name, f.as_bytes()))
}

impl Proxy {
    pub(super) fn set_forwarded(&self, headers: &mut HeaderMap, client: &ClientConnection) {
        let trusted = self.auth.is_trusted_proxy(client.peer.ip());
        strip_forwarding(headers, trusted);
        // Append to a client's X-Forwarded-For only when a trusted proxy sent
        // it (all its lines, in order); anyone else's list is replaced by
        // what we saw, and their other forwarding headers are dropped.
        let existing: Vec<&str> = if trusted {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        let forwarded_for = if existing.is_empty() {
            client.peer_ip.clone()
        } else {
            HeaderValue::from_str(&format!("{}, {}", existing.join(", "), client.peer.ip())).ok()
        };
        match forwarded_for {
            Some(value) => {
                headers.insert("x-forwarded-for", value);
            }
            None => {
                headers.remove("x-forwarded-for");
            }
        }
        if !(trusted && headers.contains_key("x-forwarded-proto")) {
            let proto = if client.tls { "https" } else { "http" };
            headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        }
        if !(trusted && headers.contains_key("x-forwarded-host")) {
            match headers.get(HOST).cloned() {
                Some(host) => {
                    headers.insert("x-forwarded-host", host);
                }
                None => {
                    headers.remove("x-forwarded-host");
                }
            }
        }
    }
}
