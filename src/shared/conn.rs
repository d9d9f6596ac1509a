//! Connections to the store in each topology: one server, the primary that Redis Sentinel names,
//! or a Redis Cluster. Each connect returns the command connection, a subscriber for the
//! notification channel, and the address it reached (for logs).
//!
//! - **Sentinel**: the sentinels are asked in turn for the primary of the configured master
//!   name; the answer is trusted only once that server's `ROLE` says `master`, so a sentinel
//!   that has not yet seen a failover, or a demoted primary, is never used. While no sentinel
//!   names a reachable primary, connecting fails and the store stays down.
//! - **Cluster**: the cluster client follows slot moves and failovers itself. The subscriber is
//!   a plain connection to the first seed node that answers: a classic `PUBLISH` reaches every
//!   node of a cluster, so one node hears every replica's notifications.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, Value};

use crate::policy::specs::{host_of, SharedSettings, Topology};

/// A command connection in any topology.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// `SCAN … MATCH pattern` over every key that shares `key`'s slot in a cluster (`key` must
    /// carry a hash tag there), or over the whole database of one server.
    ///
    /// Each page is a script that names two keys of that slot, neither of which exists, so the
    /// server itself checks that it holds the slot whole: a node that does not own it answers
    /// `MOVED` (followed to the owner), no owner means the cluster is down, and while the slot
    /// is being migrated the node it is leaving answers `ASK` and the node importing it
    /// `TRYAGAIN` (a script with keys it does not hold yet). Each of these is an error or a
    /// redirect, never a scan of another node's keys or of the part already moved. A plain
    /// `SCAN` sent to the slot's node would be answered by any connected node while the owner
    /// is unreachable, and that node's empty answer read as "no such keys". A slot that moves
    /// in the middle of a scan can still cut that scan short; the next one reads it whole.
    pub async fn scan_near(&mut self, key: &str, pattern: &str) -> RedisResult<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        let guard = format!("{key}!");
        loop {
            let (next, keys): (String, Vec<String>) = super::scripts::scan_page()
                .run(self, &[key, &guard], &[&cursor, &pattern, &1000])
                .await?;
            out.extend(keys);
            if next == "0" {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Whether this connection still reaches a store that can take writes: `Err` means connect
    /// again (a primary demoted or gone); `Ok(false)` a cluster that reports itself down.
    pub(super) async fn health(&mut self, topology: &Topology) -> Result<bool, String> {
        match topology {
            Topology::Single(_) => redis::cmd("PING")
                .query_async::<String>(self)
                .await
                .map(|_| true)
                .map_err(|e| describe(&e)),
            Topology::Sentinel { .. } => {
                let role = role(self).await.map_err(|e| describe(&e))?;
                if role == "master" {
                    Ok(true)
                } else {
                    Err(format!("the primary is now a {role}"))
                }
            }
            Topology::Cluster(_) => {
                let mut info = redis::cmd("CLUSTER");
                info.arg("INFO");
                let text: String = match self {
                    Conn::Cluster(c) => redis::from_redis_value(
                        c.route_command(
                            info,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                        )
                        .await
                        .map_err(|e| describe(&e))?,
                    )
                    .map_err(|e| describe(&e.into()))?,
                    Conn::Single(c) => info.query_async(c).await.map_err(|e| describe(&e))?,
                };
                Ok(text.lines().any(|l| l.trim() == "cluster_state:ok"))
            }
        }
    }
}

/// A Redis error for logs: its kind and category, never the URL or a credential.
/// A command to the shared store that failed. Shown as `describe` shows it: never with
/// credentials.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct StoreError(#[from] pub redis::RedisError);

pub fn describe(e: &redis::RedisError) -> String {
    let detail = e.detail().unwrap_or("");
    let text = if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() {
        e.to_string()
    } else {
        format!("{} {detail}", e.category())
    };
    crate::redact::redact(&text).into_owned()
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
async fn role(c: &mut impl ConnectionLike) -> RedisResult<String> {
    let v: Vec<Value> = redis::cmd("ROLE").query_async(c).await?;
    let first = v
        .into_iter()
        .next()
        .ok_or_else(|| RedisError::from((ErrorKind::UnexpectedReturnType, "empty ROLE reply")))?;
    Ok(redis::from_redis_value(first)?)
}

/// What one connect reached.
pub struct Connected {
    pub conn: Conn,
    /// Subscribed to nothing yet.
    pub subscriber: PubSub,
    /// `host:port` of the primary (Sentinel), the server, or the node the subscriber reached.
    pub address: String,
}

impl SharedSettings {
    /// A client for one server at `url` with the data nodes' credentials.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        self.client_as(url, self.username.as_deref(), self.password.as_deref())
    }

    fn client_as(
        &self,
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let mut info = url.into_connection_info()?;
        let mut rs = info.redis_settings().clone();
        if let Some(p) = password {
            rs = rs.set_password(p);
        }
        if let Some(u) = username {
            rs = rs.set_username(u);
        }
        info = info.set_redis_settings(rs);
        match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }

    fn config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout.max(Duration::from_millis(500))))
    }

    /// Connects for commands only (the CLI).
    pub async fn connect(&self) -> Result<Conn, StoreError> {
        Ok(self.connect_all(false).await?.0)
    }

    /// Connects for commands and, with `subscribe`, for notifications.
    pub async fn connect_with_subscriber(&self) -> Result<Connected, StoreError> {
        let (conn, subscriber, address) = self.connect_all(true).await?;
        let subscriber = subscriber.ok_or_else(|| {
            StoreError(RedisError::from((
                ErrorKind::Io,
                "no subscriber connection",
            )))
        })?;
        Ok(Connected {
            conn,
            subscriber,
            address,
        })
    }

    async fn connect_all(
        &self,
        subscribe: bool,
    ) -> Result<(Conn, Option<PubSub>, String), StoreError> {
        match &self.topology {
            Topology::Single(url) => {
                let client = self.client(url)?;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&self.config())
                    .await?;
                let sub = match subscribe {
                    true => Some(self.subscriber(&client).await?),
                    false => None,
                };
                Ok((Conn::Single(conn), sub, host_of(url).to_string()))
            }
            Topology::Sentinel {
                sentinels,
                master,
                username,
                password,
            } => {
                let (client, conn, address) = self
                    .sentinel_primary(sentinels, master, username.as_deref(), password.as_deref())
                    .await?;
                let sub = match subscribe {
                    true => Some(self.subscriber(&client).await?),
                    false => None,
                };
                Ok((Conn::Single(conn), sub, address))
            }
            Topology::Cluster(nodes) => {
                let mut b =
                    redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(self.connect_timeout)
                        .response_timeout(self.command_timeout.max(Duration::from_millis(500)))
                        .retries(2);
                if let Some(u) = &self.username {
                    b = b.username(u);
                }
                if let Some(p) = &self.password {
                    b = b.password(p);
                }
                if let Some(pem) = &self.ca_pem {
                    b = b.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    });
                }
                let conn = tokio::time::timeout(
                    self.connect_timeout * 2,
                    b.build()?.get_async_connection(),
                )
                .await
                .map_err(|_| timed_out("connecting to the cluster"))??;
                if !subscribe {
                    return Ok((Conn::Cluster(conn), None, self.hosts().join(",")));
                }
                // Any node hears every PUBLISH: take the first seed that answers.
                let mut last = timed_out("no cluster node answered");
                for url in nodes {
                    let sub = match self.client(url) {
                        Ok(client) => self.subscriber(&client).await,
                        Err(e) => Err(e),
                    };
                    match sub {
                        Ok(sub) => {
                            return Ok((Conn::Cluster(conn), Some(sub), host_of(url).into()))
                        }
                        Err(e) => last = e,
                    }
                }
                Err(StoreError(last))
            }
        }
    }

    async fn subscriber(&self, client: &redis::Client) -> RedisResult<PubSub> {
        tokio::time::timeout(self.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out("pub/sub connect"))?
    }

    /// The primary the sentinels name for `master`, connected and confirmed by its `ROLE`.
    async fn sentinel_primary(
        &self,
        sentinels: &[String],
        master: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<(redis::Client, MultiplexedConnection, String), StoreError> {
        let mut why: Vec<String> = Vec::new();
        for url in sentinels {
            let sentinel = host_of(url);
            let asked = async {
                let client = self.client_as(url, username, password)?;
                let mut c = client
                    .get_multiplexed_async_connection_with_config(&self.config())
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            };
            let (host, port) = match tokio::time::timeout(self.connect_timeout, asked).await {
                Ok(Ok(Some(addr))) => addr,
                Ok(Ok(None)) => {
                    why.push(format!("{sentinel} names no primary for {master:?}"));
                    continue;
                }
                Ok(Err(e)) => {
                    why.push(format!("{sentinel}: {}", describe(&e)));
                    continue;
                }
                Err(_) => {
                    why.push(format!("{sentinel}: timed out"));
                    continue;
                }
            };
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let scheme = if url.starts_with("rediss://") {
                "rediss"
            } else {
                "redis"
            };
            let reached = async {
                let client = self.client(&format!("{scheme}://{address}/0"))?;
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&self.config())
                    .await?;
                let role = role(&mut conn).await?;
                RedisResult::Ok((client, conn, role))
            };
            match tokio::time::timeout(self.connect_timeout, reached).await {
                Ok(Ok((client, conn, role))) if role == "master" => {
                    return Ok((client, conn, address))
                }
                Ok(Ok((_, _, role))) => {
                    why.push(format!("{sentinel} names {address}, which is a {role}"))
                }
                Ok(Err(e)) => why.push(format!("{sentinel} names {address}: {}", describe(&e))),
                Err(_) => why.push(format!("{sentinel} names {address}: timed out")),
            }
        }
        Err(StoreError(RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "no reachable primary",
            why.join("; "),
        ))))
    }
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}
