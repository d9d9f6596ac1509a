//! The Lua scripts that make each shared decision atomic in Redis. Time comes from the Redis
//! server (`TIME`), so replicas with skewed clocks still agree.

use std::sync::OnceLock;

use redis::{ErrorKind, Script};

/// GCRA with a batch: `KEYS[1]` holds the theoretical arrival time (µs). ARGV: emission
/// interval (µs), burst, tokens wanted. Grants as many as fit, up to the wanted count.
/// Returns `{granted, retry_after_us, remaining}`.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local tolerance = interval * burst
local avail = math.floor((now + tolerance - tat) / interval)
if avail < 1 then
  return {0, math.ceil(tat + interval - tolerance - now), 0}
end
local granted = math.min(avail, want)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {granted, 0, avail - granted}
"#;

/// Shared auth-failure backoff. KEYS: failure counter, lock, lockout count. ARGV: max
/// failures, window (ms), first lockout (ms), longest lockout (ms), notification channel,
/// client. Returns `{0, 0}` (counted), `{1, ms}` (lockout started, announced) or `{2, ms}`
/// (already locked out).
const LOCKOUT: &str = r#"
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {2, left} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n < tonumber(ARGV[1]) then return {0, 0} end
redis.call('DEL', KEYS[1])
local k = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[4]) * 2 + tonumber(ARGV[2]))
local ms = math.min(tonumber(ARGV[3]) * 2 ^ (k - 1), tonumber(ARGV[4]))
ms = math.max(1, math.floor(ms))
redis.call('SET', KEYS[2], '1', 'PX', ms)
redis.call('PUBLISH', ARGV[5], 'lock ' .. ARGV[6] .. ' ' .. ms)
return {1, ms}
"#;

/// One page of `SCAN` on the node that holds the slot of `KEYS` whole (two keys of one slot that
/// do not exist: the server refuses keys it does not own, and keys of a slot it is still
/// importing or has begun to hand over, so a page is never answered by another node or from
/// half a slot; see `Conn::scan_near`). ARGV: cursor, pattern, count. Returns
/// `{next cursor, keys}`.
const SCAN_PAGE: &str = r#"
return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
"#;

/// A script sent by its hash, and in full when the server does not hold it yet (a restarted or
/// newly promoted primary, another cluster node). Both forms carry the keys, so a cluster
/// routes them to the node that owns the keys' slot; a script loaded on one node is never
/// assumed to be on another.
pub struct Lua {
    body: &'static str,
    hash: String,
}

impl Lua {
    fn new(body: &'static str) -> Lua {
        Lua {
            body,
            hash: Script::new(body).get_hash().to_string(),
        }
    }

    fn command(&self, full: bool, keys: &[&str], args: &[&dyn ToRedisArgsDyn]) -> redis::Cmd {
        let mut c = redis::cmd(if full { "EVAL" } else { "EVALSHA" });
        c.arg(if full { self.body } else { self.hash.as_str() })
            .arg(keys.len())
            .arg(keys);
        for a in args {
            a.write_to(&mut c);
        }
        c
    }

    /// Runs the script with `keys` and `args`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
    ) -> redis::RedisResult<T> {
        match self.command(false, keys, args).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.command(true, keys, args).query_async(conn).await
            }
            other => other,
        }
    }
}

/// A script argument of any type.
pub trait ToRedisArgsDyn: Sync {
    fn write_to(&self, c: &mut redis::Cmd);
}

impl<T: redis::ToRedisArgs + Sync> ToRedisArgsDyn for T {
    fn write_to(&self, c: &mut redis::Cmd) {
        c.arg(self);
    }
}

pub fn gcra() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    S.get_or_init(|| Lua::new(GCRA))
}

pub fn lockout() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    S.get_or_init(|| Lua::new(LOCKOUT))
}

pub fn scan_page() -> &'static Lua {
    static S: OnceLock<Lua> = OnceLock::new();
    S.get_or_init(|| Lua::new(SCAN_PAGE))
}
