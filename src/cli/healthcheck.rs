//! `tokengate healthcheck`: one `GET /healthz` to a running `tokengate
//! serve`'s admin listener, exit 0 on 200. For container health checks in an
//! image that has no curl (the distroless one of the `Dockerfile`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::Config;

/// How long the whole check may take (connect, send, status line): a
/// health check that hangs is a failed one, and it should say so itself
/// before the orchestrator's own timeout kills it silently.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// `http://<[admin] listen>/healthz`, with an unspecified address
/// (`0.0.0.0`, `[::]`) replaced by loopback: where a check run beside the
/// server reaches it.
pub(super) fn admin_url(config: &Config) -> Result<String, String> {
    let Some(listen) = config.admin.listen else {
        return Err("no admin listener to check: [admin] listen is not set \
                    (give --config, or --url http://HOST:PORT/healthz)"
            .to_owned());
    };
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}/healthz",
        SocketAddr::new(ip, listen.port())
    ))
}

/// GETs `url`; `Ok` (the line to print) on 200, else the one-line reason.
pub(super) async fn check(url: &str) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--url {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--url {url:?}: only http:// URLs (the admin listener speaks plain HTTP)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url {url:?} has no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("--url {url:?}: {e}"))?;
    let status = tokio::time::timeout(TIMEOUT, async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{url}: cannot connect to {authority}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        Ok::<_, String>(response.status())
    })
    .await
    .map_err(|_| format!("{url}: no answer within {} s", TIMEOUT.as_secs()))??;
    if status == StatusCode::OK {
        Ok(format!("{url}: {status}\n"))
    } else {
        Err(format!("{url} answered {status}, not 200 OK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_for(listen: &str) -> String {
        let mut config = Config::default();
        config.admin.listen = Some(listen.parse().unwrap());
        admin_url(&config).unwrap()
    }

    #[test]
    fn an_unspecified_admin_address_is_checked_on_loopback() {
        assert_eq!(url_for("0.0.0.0:8081"), "http://127.0.0.1:8081/healthz");
        assert_eq!(url_for("[::]:9000"), "http://[::1]:9000/healthz");
        assert_eq!(url_for("10.1.2.3:8081"), "http://10.1.2.3:8081/healthz");
        assert!(admin_url(&Config::default()).is_err());
    }
}
