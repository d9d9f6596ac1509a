// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Vendored change: the keep-alive pool of upstream connections without a task per idle
//! connection. Released connections wait in per-key lists (most recent last); a checkout takes
//! the most recent one and tests it with the non-blocking liveness probe the connector already
//! runs (closed, broken or unexpectedly readable connections are dropped and the next one
//! tried). Idle timeouts are enforced lazily: on every release and checkout of a key, and across
//! all keys every `SWEEP_EVERY` operations. Unchanged, every release spawned a task that watched
//! the connection and every checkout handed it back through a oneshot and an async mutex.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocols::Stream;

/// How many releases and checkouts between sweeps of every key for expired connections.
const SWEEP_EVERY: u32 = 1024;

pub(crate) struct IdleStream {
    pub(crate) stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
}

impl IdleStream {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }

    /// How long the connection waited in the pool.
    pub(crate) fn idle_for(&self) -> Duration {
        self.since.elapsed()
    }
}

#[derive(Default)]
struct Lists {
    by_key: HashMap<u64, VecDeque<IdleStream>>,
    count: usize,
    ops: u32,
}

impl Lists {
    /// Removes the expired connections at the front of `key`'s list, its oldest, into `out`:
    /// the work is the number removed, not the list's length. The connections of one key are
    /// released with one peer's idle timeout, so the expired ones are the oldest; any other is
    /// caught by the checkout's own check (`take`) or the periodic sweep of every key.
    fn sweep_oldest(&mut self, key: u64, now: Instant, out: &mut Vec<IdleStream>) {
        if let Some(list) = self.by_key.get_mut(&key) {
            while list.front().is_some_and(|s| s.expired(now)) {
                out.extend(list.pop_front());
                self.count -= 1;
            }
        }
    }

    /// Removes the expired connections of every key into `out`.
    fn sweep_all(&mut self, now: Instant, out: &mut Vec<IdleStream>) {
        let mut removed = 0;
        for list in self.by_key.values_mut() {
            let before = list.len();
            let mut kept = VecDeque::with_capacity(list.len());
            for s in list.drain(..) {
                if s.expired(now) {
                    out.push(s);
                } else {
                    kept.push_back(s);
                }
            }
            *list = kept;
            removed += before - list.len();
        }
        self.count -= removed;
        self.by_key.retain(|_, l| !l.is_empty());
    }

    /// Every `SWEEP_EVERY` operations, a sweep of every key.
    fn tick(&mut self, now: Instant, out: &mut Vec<IdleStream>) {
        self.ops = self.ops.wrapping_add(1);
        if self.ops % SWEEP_EVERY == 0 {
            self.sweep_all(now, out);
        }
    }
}

/// The idle upstream connections of one connector, at most `capacity` of them.
pub(crate) struct IdlePool {
    lists: Mutex<Lists>,
    capacity: usize,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize) -> Self {
        IdlePool {
            lists: Mutex::new(Lists::default()),
            capacity,
        }
    }

    /// Keeps `stream` for reuse under `key` for at most `timeout`. Returns the connections that
    /// left the pool without reuse (expired, or the oldest of this key when the pool is full);
    /// the caller drops them, outside the pool's lock.
    pub(crate) fn put(
        &self,
        key: u64,
        stream: Stream,
        timeout: Option<Duration>,
    ) -> Vec<IdleStream> {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut lists = self.lists.lock();
        lists.tick(now, &mut gone);
        lists.sweep_oldest(key, now, &mut gone);
        if lists.count >= self.capacity {
            // Full: the oldest connection of this key makes room, or, with none, this one is
            // not kept.
            match lists.by_key.get_mut(&key).and_then(|l| l.pop_front()) {
                Some(old) => {
                    lists.count -= 1;
                    gone.push(old);
                }
                None => {
                    gone.push(IdleStream {
                        stream,
                        since: now,
                        timeout,
                    });
                    return gone;
                }
            }
        }
        lists.by_key.entry(key).or_default().push_back(IdleStream {
            stream,
            since: now,
            timeout,
        });
        lists.count += 1;
        gone
    }

    /// The most recently released connection under `key` that has not expired, with the
    /// expired ones removed on the way (returned for the caller to drop).
    pub(crate) fn take(&self, key: u64) -> (Option<Stream>, Vec<IdleStream>) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut guard = self.lists.lock();
        let lists = &mut *guard;
        lists.tick(now, &mut gone);
        lists.sweep_oldest(key, now, &mut gone);
        let Some(list) = lists.by_key.get_mut(&key) else {
            return (None, gone);
        };
        // The most recent one that has not expired; expired ones on the way leave the pool.
        let mut found = None;
        while let Some(s) = list.pop_back() {
            lists.count -= 1;
            if s.expired(now) {
                gone.push(s);
            } else {
                found = Some(s);
                break;
            }
        }
        if list.is_empty() {
            lists.by_key.remove(&key);
        }
        (found.map(|s| s.stream), gone)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lists.lock().count
    }
}
