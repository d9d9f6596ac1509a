//! The revocation list: token ids (`jti`), subjects (`sub`) and key ids (`kid`) that are refused
//! even when their signature and lifetime are good. The list lives in the shared store (Redis);
//! each replica keeps a copy here, loaded when it connects and kept current by notifications,
//! so checking a request costs a hash lookup and no round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use super::identity::Identity;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Jti,
    Sub,
    Kid,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Sub => "sub",
            Kind::Kid => "kid",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "jti" => Some(Kind::Jti),
            "sub" => Some(Kind::Sub),
            "kid" => Some(Kind::Kid),
            _ => None,
        }
    }
}

/// (kind, value) → expiry in seconds since the epoch (0 = never).
pub type Entries = HashMap<(Kind, Box<str>), u64>;

#[derive(Debug, Default)]
pub struct Revocations {
    any: AtomicBool,
    entries: RwLock<Entries>,
}

impl Revocations {
    /// Which of the identity's names is revoked, if any. Costs one atomic load while the list
    /// is empty.
    pub fn check(&self, id: &Identity, now: u64) -> Option<Kind> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let live = |kind: Kind, value: Option<&str>| {
            let v = value?;
            let exp = *entries.get(&(kind, Box::from(v)))?;
            (exp == 0 || exp > now).then_some(kind)
        };
        live(Kind::Jti, id.token_id.as_deref())
            .or_else(|| live(Kind::Sub, Some(&id.subject)))
            .or_else(|| live(Kind::Kid, id.key_id.as_deref()))
    }

    pub fn insert(&self, kind: Kind, value: &str, expires: u64) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.insert((kind, Box::from(value)), expires);
        self.any.store(true, Ordering::Release);
    }

    pub fn remove(&self, kind: Kind, value: &str) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.remove(&(kind, Box::from(value)));
        self.any.store(!e.is_empty(), Ordering::Release);
    }

    /// Replaces the whole list (a resynchronisation with the store).
    pub fn replace(&self, entries: Entries) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        *e = entries;
        self.any.store(!e.is_empty(), Ordering::Release);
    }

    /// Drops entries whose expiry has passed.
    pub fn expire(&self, now: u64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.retain(|_, exp| *exp == 0 || *exp > now);
        self.any.store(!e.is_empty(), Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn identity(jti: Option<&str>, sub: &str, kid: Option<&str>) -> Identity {
        let mut i = Identity::anonymous();
        i.subject = Arc::from(sub);
        i.token_id = jti.map(Arc::from);
        i.key_id = kid.map(Arc::from);
        i
    }

    #[test]
    fn each_kind_of_name_revokes_and_expiry_lifts_it() {
        let r = Revocations::default();
        let a = identity(Some("t-1"), "alice", Some("k1"));
        assert_eq!(r.check(&a, 100), None);
        r.insert(Kind::Kid, "k1", 0);
        assert_eq!(r.check(&a, 100), Some(Kind::Kid));
        r.remove(Kind::Kid, "k1");
        assert_eq!(r.check(&a, 100), None);
        r.insert(Kind::Sub, "alice", 150);
        assert_eq!(r.check(&a, 100), Some(Kind::Sub));
        assert_eq!(r.check(&a, 150), None, "expired at 150");
        r.insert(Kind::Jti, "t-1", 0);
        assert_eq!(r.check(&a, 100), Some(Kind::Jti));
        assert_eq!(r.check(&identity(Some("t-2"), "bob", None), 100), None);
        r.expire(200);
        assert_eq!(r.len(), 1);
        r.replace(Entries::new());
        assert!(r.is_empty());
        assert_eq!(r.check(&a, 100), None);
    }
}
