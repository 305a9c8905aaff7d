//! Redis Cluster: the `redis+cluster://` URL and its client
//! (docs/design/redis-layout.md, "Redis Cluster").
//!
//! The URL lists some of the cluster's nodes (any of them: the client
//! learns the rest, and where each hash slot lives, from them):
//! `redis+cluster://[user:password@]host:port[,host:port…]`. redis-rs's
//! cluster connection follows `MOVED` / `ASK` redirections (a resharding)
//! and refreshes its slot map after a failover or a node's restart.

use std::time::Duration;

use redis::RedisResult;
use redis::cluster::{ClusterClient, ClusterClientBuilder};

use super::connection::{credentials, host_address, host_port};

/// The scheme of a cluster URL.
pub(super) const SCHEME: &str = "redis+cluster://";
/// TLS to a cluster: recognised, to be refused with a clear message.
const TLS_SCHEME: &str = "rediss+cluster://";
/// A node given without a port.
const DEFAULT_PORT: u16 = 6379;

/// Whether `url` names a Redis Cluster.
pub(super) fn is_cluster_url(url: &str) -> bool {
    url.starts_with(SCHEME) || url.starts_with(TLS_SCHEME)
}

/// A parsed `redis+cluster://[user:password@]host[:port][,host[:port]…]`.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ClusterUrl {
    /// Host and port of each node given.
    pub(super) nodes: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ClusterUrl {
    /// Parses a cluster URL. The message of an error never contains the
    /// password.
    pub(super) fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with(TLS_SCHEME) {
            return Err(
                "rediss+cluster:// (TLS to a cluster) is not supported yet: use redis+cluster:// \
                 on a private network"
                    .to_owned(),
            );
        }
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("a cluster URL starts with {SCHEME}"))?;
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let hosts = rest.strip_suffix('/').unwrap_or(rest);
        if hosts.contains('/') || hosts.contains('?') {
            return Err(
                "a cluster has one database and no options: redis+cluster://host:port[,host:port…]"
                    .to_owned(),
            );
        }
        let nodes = hosts
            .split(',')
            .map(|host| host_address(host, DEFAULT_PORT, "node"))
            .collect::<Result<Vec<_>, _>>()?;
        let (username, password) = credentials(userinfo)?;
        Ok(Self {
            nodes,
            username,
            password,
        })
    }

    /// The nodes, for logs (no credentials).
    pub(super) fn label(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|(h, p)| host_port(h, *p)).collect();
        format!("Redis Cluster via {}", hosts.join(","))
    }

    /// The client: every connection and reply bounded by the timeouts.
    /// `retries`: how often redis-rs may send a request again (after a
    /// redirection, or a connection lost with the request possibly run);
    /// `None`: its default.
    pub(super) fn client(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
        retries: Option<u32>,
    ) -> RedisResult<ClusterClient> {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(host, port)| format!("redis://{}", host_port(host, *port)))
            .collect();
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout);
        if let Some(username) = &self.username {
            builder = builder.username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        if let Some(retries) = retries {
            builder = builder.retries(retries);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_parse() {
        let url =
            ClusterUrl::parse("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/")
                .unwrap();
        assert_eq!(
            url.nodes,
            [
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 6379),
                ("::1".to_owned(), 7002)
            ]
        );
        assert_eq!(url.username.as_deref(), Some("app"));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert!(!format!("{url:?}").contains("cret"));
        assert_eq!(
            url.label(),
            "Redis Cluster via 10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
        );
    }

    #[test]
    fn bad_cluster_urls_say_why_without_the_password() {
        for (url, why) in [
            ("redis+cluster://", "no host"),
            ("redis+cluster://h:0", "port"),
            ("redis+cluster://:pw@h:7000/1", "one database"),
            ("rediss+cluster://:pw@h:7000", "not supported"),
        ] {
            let e = ClusterUrl::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
    }
}
