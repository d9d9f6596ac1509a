//! ACME storage in the `[shared_state]` Redis (`[tls.acme] shared = true`), for replicas that
//! share no volume: the account, each certificate, the order locks and the open challenges'
//! answers live in Redis, and each replica's storage folder is a local copy. So two replicas
//! behind one Service place one order between them, answer each other's `http-01`
//! validations, and serve the certificate either of them obtained.
//!
//! Keys, under the store's `key_prefix`: `acme:account:<directory hash>`,
//! `acme:cert:<name>` (chain and key, as in the folder), `acme:lock:<name>` (expires after ten
//! minutes, so a crashed holder cannot keep it), `acme:http-01:<token>` (expires with the
//! order). The certificate's private key is in Redis: keep the store private (TLS, a password).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::AsyncCommands;

use crate::shared::conn::Conn;
use crate::shared::SharedStore;

const LOCK_LIFE: Duration = Duration::from_secs(600);
const CHALLENGE_LIFE: Duration = Duration::from_secs(600);

/// The store, once the gateway has one.
#[derive(Default)]
pub struct SharedAcme(OnceLock<Arc<SharedStore>>);

/// An order lock held in Redis; released explicitly (or by expiry).
pub struct RedisLock {
    key: String,
    token: String,
}

impl SharedAcme {
    pub fn attach(&self, store: Arc<SharedStore>) {
        let _ = self.0.set(store);
    }

    pub fn is_attached(&self) -> bool {
        self.0.get().is_some()
    }

    fn conn(&self) -> Result<(Conn, String), String> {
        self.0
            .get()
            .and_then(|s| s.connection())
            .ok_or_else(|| "the shared store ([shared_state]) is not reachable".to_string())
    }

    fn err(e: redis::RedisError) -> String {
        format!("shared store: {}", crate::shared::describe(&e))
    }

    pub(super) async fn get(&self, what: &str) -> Result<Option<String>, String> {
        let (mut c, p) = self.conn()?;
        c.get(format!("{p}acme:{what}")).await.map_err(Self::err)
    }

    pub(super) async fn put(&self, what: &str, value: &str) -> Result<(), String> {
        let (mut c, p) = self.conn()?;
        c.set::<_, _, ()>(format!("{p}acme:{what}"), value)
            .await
            .map_err(Self::err)
    }

    /// Writes `value` unless the key exists; returns what the key holds afterwards.
    pub(super) async fn put_first(&self, what: &str, value: &str) -> Result<String, String> {
        let (mut c, p) = self.conn()?;
        let key = format!("{p}acme:{what}");
        let _: bool = c.set_nx(&key, value).await.map_err(Self::err)?;
        let now: Option<String> = c.get(&key).await.map_err(Self::err)?;
        Ok(now.unwrap_or_else(|| value.to_string()))
    }

    pub(super) async fn put_expiring(&self, what: &str, value: &str) -> Result<(), String> {
        let (mut c, p) = self.conn()?;
        c.pset_ex::<_, _, ()>(
            format!("{p}acme:{what}"),
            value,
            CHALLENGE_LIFE.as_millis() as u64,
        )
        .await
        .map_err(Self::err)
    }

    pub(super) async fn delete(&self, what: &str) -> Result<(), String> {
        let (mut c, p) = self.conn()?;
        c.del::<_, ()>(format!("{p}acme:{what}"))
            .await
            .map_err(Self::err)
    }

    /// The order lock for `name`, unless another replica holds it.
    pub(super) async fn try_lock(&self, name: &str) -> Result<Option<RedisLock>, String> {
        let (mut c, p) = self.conn()?;
        let key = format!("{p}acme:lock:{name}");
        let token = format!("{:032x}", rand::random::<u128>());
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_LIFE.as_millis() as u64)
            .query_async(&mut c)
            .await
            .map_err(Self::err)?;
        Ok(taken.map(|_| RedisLock { key, token }))
    }

    /// Releases a lock if it is still ours (it may have expired and been taken since).
    pub(super) async fn unlock(&self, lock: RedisLock) {
        let Ok((mut c, _)) = self.conn() else { return };
        let _ = redis::cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(&lock.key)
            .arg(&lock.token)
            .query_async::<i64>(&mut c)
            .await;
    }
}
