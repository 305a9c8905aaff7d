//! TLS for `tokengate serve` (docs/guide/tls.md): listeners that terminate TLS
//! themselves, and the proxy's `https://` upstreams. rustls with the ring
//! provider, given to each config explicitly (no process-wide default).
//!
//! - [`ListenerTls`]: a listener section's `tls_cert` / `tls_key` (two
//!   plain keys of the section, not a flattened struct: serde's flatten
//!   would cost every error in the section its line and key), with the
//!   section's [`TlsKeys`] for messages.
//! - [`ServerTls`]: a listener's certificate, read at start-up (a bad file
//!   stops it) and re-read by [`ServerTls::reload`] on SIGHUP or when the
//!   files change. Each new connection takes the certificate current when
//!   it arrives: a reload never touches open connections, and a broken new
//!   pair is logged while the old one stays in use (fail safe).
//! - [`UpstreamTls`]: the proxy's client side: the system's roots or a CA
//!   file, SNI and verification against the upstream's host, HTTP/1.1 by
//!   ALPN; [`UpstreamConnector`] gives the same to hyper's pooled client.
//!
//! Key files are read and handed to rustls; no message ever quotes their
//! contents (a malformed key is reported by kind, not by the bytes found).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::settings::{InvalidConfig, invalid};

/// What a listener offers by ALPN: the same protocols it serves in
/// cleartext (HTTP/2 and HTTP/1.1), HTTP/2 first as clients expect.
const LISTENER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// How long an upstream has to finish the TLS handshake, as it has to
/// accept the TCP connection (the proxy's connect timeout).
const UPSTREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives a listener section `tls()`, its [`ListenerTls`], over its
/// `tls_cert` and `tls_key` fields: `listener_tls!(ProxyConfig, "proxy")`
/// names them `proxy.tls_cert` and `proxy.tls_key` in messages.
macro_rules! listener_tls {
    ($section:ty, $name:literal) => {
        impl $section {
            /// The listener's certificate and key, with their names.
            pub(crate) fn tls(&self) -> $crate::tls::ListenerTls<'_> {
                $crate::tls::ListenerTls {
                    cert: self.tls_cert.as_deref(),
                    key: self.tls_key.as_deref(),
                    keys: $crate::tls::TlsKeys {
                        cert: concat!($name, ".tls_cert"),
                        key: concat!($name, ".tls_key"),
                    },
                }
            }
        }
    };
}
pub(crate) use listener_tls;

/// A listener section's `tls_cert` / `tls_key`: the listener terminates
/// TLS itself. Both or neither; unset, it speaks cleartext HTTP/1.1 and
/// h2c. A section holds the two keys as
/// `pub tls_cert: Option<PathBuf>, pub tls_key: Option<PathBuf>` and
/// lends them through `listener_tls!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerTls<'a> {
    /// The certificate chain (PEM), the listener's own certificate first.
    pub(crate) cert: Option<&'a Path>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: Option<&'a Path>,
    /// Their names, for messages.
    pub(crate) keys: TlsKeys,
}

/// The config keys of one section's [`ListenerTls`], for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlsKeys {
    /// `section.tls_cert`.
    pub(crate) cert: &'static str,
    /// `section.tls_key`.
    pub(crate) key: &'static str,
}

impl ListenerTls<'_> {
    /// Both or neither.
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        let keys = self.keys;
        match (self.cert, self.key) {
            (Some(_), None) => Err(invalid(
                keys.key,
                format!("is required when {} is set (both or neither)", keys.cert),
            )),
            (None, Some(_)) => Err(invalid(
                keys.cert,
                format!("is required when {} is set (both or neither)", keys.key),
            )),
            _ => Ok(()),
        }
    }
}

/// A listener's certificate and key, as in use now, and how to read them
/// again.
pub(crate) struct ServerTls {
    keys: TlsKeys,
    cert: PathBuf,
    key: PathBuf,
    /// Read for every new connection, written by a reload: a clone of the
    /// `Arc` under a read lock, nothing a handshake would notice.
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The two files as last read (or tried): a poll reloads only when one
    /// has changed since, so a broken pair is reported once, not per poll.
    seen: Mutex<[Option<FileStamp>; 2]>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What tells a changed file: its modification time, size and inode (a
/// file replaced by a rename, as Kubernetes does for a mounted secret,
/// may keep the other two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The file's stamp (through symlinks); `None` if it cannot be read.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    /// SIGHUP: read the files whatever their stamps say.
    Always,
    /// The periodic check: read them only if either has changed.
    IfChanged,
}

impl ServerTls {
    /// Reads the listener's pair, if `tls` sets one. An unreadable or
    /// invalid file (or a key that does not go with the certificate) is an
    /// error naming the key and the file: it stops start-up.
    pub(crate) fn load(tls: ListenerTls<'_>) -> Result<Option<Arc<Self>>, InvalidConfig> {
        tls.validate()?;
        let (Some(cert), Some(key)) = (tls.cert, tls.key) else {
            return Ok(None);
        };
        let keys = tls.keys;
        let seen = [FileStamp::of(cert), FileStamp::of(key)];
        let config = server_config(cert, key, keys)?;
        Ok(Some(Arc::new(Self {
            keys,
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(config),
            seen: Mutex::new(seen),
        })))
    }

    /// What a new connection's handshake uses: the current certificate.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio_rustls::TlsAcceptor::from(current)
    }

    /// Reads the pair again (with [`Reload::IfChanged`], only if a file
    /// changed since it was last read or tried). A good pair serves every
    /// connection from now on; a broken one is logged as an error and the
    /// current one is kept. Returns whether the certificate was replaced.
    /// Blocking file reads of a few kilobytes: called off the workers.
    pub(crate) fn reload(&self, why: Reload) -> bool {
        let stamps = [FileStamp::of(&self.cert), FileStamp::of(&self.key)];
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if why == Reload::IfChanged && *seen == stamps {
                return false;
            }
            *seen = stamps;
        }
        match server_config(&self.cert, &self.key, self.keys) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
                tracing::info!(
                    setting = self.keys.cert,
                    cert = %self.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "TLS certificate not reloaded; the previous one stays in use"
                );
                false
            }
        }
    }
}

/// A rustls server config for the pair, offering [`LISTENER_ALPN`].
fn server_config(
    cert: &Path,
    key: &Path,
    keys: TlsKeys,
) -> Result<Arc<rustls::ServerConfig>, InvalidConfig> {
    let chain = read_certificates(cert).map_err(|m| invalid(keys.cert, m))?;
    let private_key = read_private_key(key).map_err(|m| invalid(keys.key, m))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(keys.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            invalid(
                keys.key,
                format!(
                    "{} cannot serve the certificate in {} ({}): {e}",
                    key.display(),
                    cert.display(),
                    keys.cert
                ),
            )
        })?;
    config.alpn_protocols = LISTENER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The first private key in a PEM file. Errors never quote the file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "{} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted)",
            path.display()
        )
    })
}

/// The proxy's TLS to an `https://` upstream: whom to trust, and the name
/// to ask for (SNI) and to verify the certificate against.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Trusts the CAs in `ca_file` (PEM), or else the system's roots, for
    /// the upstream `host`. `key` names `ca_file` in messages; none of the
    /// system's roots found is an error too (it would refuse every
    /// upstream).
    pub(crate) fn new(
        host: &str,
        ca_file: Option<&Path>,
        key: &'static str,
    ) -> Result<Self, InvalidConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for certificate in read_certificates(path).map_err(|m| invalid(key, m))? {
                    roots.add(certificate).map_err(|e| {
                        invalid(
                            key,
                            format!("{}: not a CA certificate: {e}", path.display()),
                        )
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "could not read some of the system's root certificates");
                }
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(invalid(
                        key,
                        "is needed: no system root certificates were found (on Debian: \
                         apt-get install ca-certificates)",
                    ));
                }
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(key, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The proxy speaks HTTP/1.1 to its upstream, over TLS as in cleartext.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // An IPv6 literal is written in brackets in a URL, not in a name.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|e| invalid("proxy.upstream", format!("{host:?}: {e}")))?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake on a connected stream (SNI and verification
    /// against the upstream's host), within [`UPSTREAM_HANDSHAKE_TIMEOUT`].
    /// A certificate that does not verify is an error saying why
    /// (`invalid peer certificate: UnknownIssuer`).
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let handshake = self.connector.connect(self.name.clone(), stream);
        tokio::time::timeout(UPSTREAM_HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake with the upstream timed out",
                )
            })?
    }
}

/// hyper's pooled client's connector: TCP by `HttpConnector` (its connect
/// timeout and `TCP_NODELAY`), then TLS when the upstream is `https://`.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamConnector {
    pub(crate) tcp: HttpConnector,
    pub(crate) tls: Option<UpstreamTls>,
}

type Connecting = Pin<
    Box<dyn Future<Output = Result<UpstreamIo, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

impl tower::Service<http::Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            Ok(match tls {
                None => UpstreamIo::Plain(tcp),
                Some(tls) => {
                    let stream = tls.connect(tcp.into_inner()).await?;
                    UpstreamIo::Tls(Box::new(TokioIo::new(stream)))
                }
            })
        })
    }
}

/// A pooled upstream connection, cleartext or TLS.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    /// Boxed: a rustls connection is over a kilobyte.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(io) => io.connected(),
            Self::Tls(io) => io.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: TlsKeys = TlsKeys {
        cert: "admin.tls_cert",
        key: "admin.tls_key",
    };

    fn pair<'a>(cert: Option<&'a str>, key: Option<&'a str>) -> ListenerTls<'a> {
        ListenerTls {
            cert: cert.map(Path::new),
            key: key.map(Path::new),
            keys: KEYS,
        }
    }

    #[test]
    fn cert_and_key_go_together() {
        let err = pair(Some("a.crt"), None)
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key admin.tls_key: is required when admin.tls_cert is set (both or neither)"
        );
        let err = pair(None, Some("a.key"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key admin.tls_cert:"), "{err}");
        pair(None, None).validate().unwrap();
        assert!(ServerTls::load(pair(None, None)).unwrap().is_none());
    }

    #[test]
    fn unreadable_files_name_the_key_and_the_file() {
        let tls = pair(
            Some("/nonexistent/tokengate.crt"),
            Some("/nonexistent/tokengate.key"),
        );
        let err = ServerTls::load(tls).unwrap_err().to_string();
        assert!(
            err.starts_with("config key admin.tls_cert: cannot read /nonexistent/tokengate.crt"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("tokengate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a key, a secret: hunter2\n").unwrap();
        let err = read_private_key(&garbage).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = read_certificates(&garbage).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
