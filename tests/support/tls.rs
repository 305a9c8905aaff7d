//! TLS for black-box tests: an acceptor for test servers, and an HTTPS
//! client (hyper over tokio-rustls, the ring provider) that trusts one CA
//! and reports the certificate it was shown and the protocol ALPN chose.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::HttpReply;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The first certificate of a PEM file, as DER.
pub fn certificate_der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_vec()
}

/// A TLS acceptor serving `cert` / `key`, offering `alpn`.
pub fn acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection to `127.0.0.1:{port}`, kept open for as many
/// requests as a test sends on it.
pub struct HttpsConnection {
    sender: Sender,
    /// The listener's certificate (DER), as the handshake showed it.
    pub certificate: Vec<u8>,
    /// What ALPN settled on (`None`: nothing).
    pub alpn: Option<Vec<u8>>,
}

impl HttpsConnection {
    /// Connects, trusting only the CA in `ca` (PEM) and offering `alpn`;
    /// `Err` with the reason when the handshake fails.
    pub async fn open(port: u16, ca: &Path, alpn: &[&[u8]]) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let certificate = session.peer_certificates().unwrap()[0].to_vec();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(Self {
            sender,
            certificate,
            alpn,
        })
    }

    /// `GET {path}` on this connection.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        let mut request = http::Request::get(path);
        request = match self.sender {
            Sender::Http1(_) => request.header("host", "127.0.0.1"),
            Sender::Http2(_) => request
                .uri(format!("https://127.0.0.1{path}"))
                .version(http::Version::HTTP_2),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::default()).unwrap();
        let response = match &mut self.sender {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
        .unwrap();
        let (parts, body) = response.into_parts();
        HttpReply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}
