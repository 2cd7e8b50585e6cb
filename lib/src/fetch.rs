//! Parallel fetch with ordered delivery and bounded memory: up to
//! `parallelism` objects in flight, and at most `window` fetched but not
//! yet delivered, whatever the replica's size.
//!
//! Objects are read into buffers kept in a pool: each is handed over as
//! `Bytes` and comes back to the pool when its last user (a snapshot
//! worker, say) drops it. Fresh memory per object cost a 207 MB restore
//! about a tenth of its CPU (page faults, zeroing, unmapping).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;

use crate::error::Result;
use crate::layout::SegmentKey;
use crate::storage::Storage;

struct Shared {
    next_job: usize,
    /// Index the consumer will deliver next.
    delivering: usize,
    done: BTreeMap<usize, Result<Bytes>>,
    stop: bool,
}

/// Buffers read into and handed back, at most `keep` of them.
struct Pool {
    spare: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    fn take(&self) -> Vec<u8> {
        self.spare.lock().unwrap().pop().unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap();
        if spare.len() < self.keep && buf.capacity() > 0 {
            spare.push(buf);
        }
    }
}

/// A fetched object's buffer, which goes back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Fetch `keys` and hand each to `sink` in order. Stops at the first
/// error (from a fetch or from `sink`).
pub fn fetch_ordered(
    storage: &dyn Storage,
    keys: &[SegmentKey],
    parallelism: usize,
    sink: &mut dyn FnMut(&SegmentKey, Bytes) -> Result<()>,
) -> Result<()> {
    let parallelism = parallelism.min(storage.useful_parallel_gets()).clamp(1, 64);
    let window = parallelism * 2;
    // Every buffer that can be in use at once: fetched or in flight
    // (window), and a few held past delivery by whoever consumes them.
    let pool = Arc::new(Pool {
        spare: Mutex::new(Vec::new()),
        keep: window + parallelism,
    });
    let state = Arc::new((
        Mutex::new(Shared {
            next_job: 0,
            delivering: 0,
            done: BTreeMap::new(),
            stop: false,
        }),
        Condvar::new(),
    ));
    std::thread::scope(|scope| {
        for _ in 0..parallelism.min(keys.len()) {
            let state = state.clone();
            let pool = pool.clone();
            scope.spawn(move || {
                let (lock, cv) = &*state;
                loop {
                    let i = {
                        let mut s = lock.lock().unwrap();
                        while !s.stop
                            && s.next_job < keys.len()
                            && s.next_job >= s.delivering + window
                        {
                            s = cv.wait(s).unwrap();
                        }
                        if s.stop || s.next_job >= keys.len() {
                            return;
                        }
                        s.next_job += 1;
                        s.next_job - 1
                    };
                    let mut buf = pool.take();
                    let got = match storage.get_into(&keys[i].to_string(), &mut buf) {
                        Ok(()) => Ok(Bytes::from_owner(Pooled {
                            buf,
                            pool: pool.clone(),
                        })),
                        Err(e) => {
                            pool.give(buf);
                            Err(e)
                        }
                    };
                    let mut s = lock.lock().unwrap();
                    s.done.insert(i, got);
                    cv.notify_all();
                }
            });
        }
        let (lock, cv) = &*state;
        let result = (|| {
            for (i, key) in keys.iter().enumerate() {
                let got = {
                    let mut s = lock.lock().unwrap();
                    loop {
                        if let Some(r) = s.done.remove(&i) {
                            s.delivering = i + 1;
                            cv.notify_all();
                            break r;
                        }
                        s = cv.wait(s).unwrap();
                    }
                };
                sink(key, got?)?;
            }
            Ok(())
        })();
        let mut s = lock.lock().unwrap();
        s.stop = true;
        cv.notify_all();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{SegmentKind, SegmentName};
    use crate::storage::{ObjectInfo, PutOutcome};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Objects made up on request; counts how many were fetched.
    #[derive(Default)]
    struct Counting {
        fetched: AtomicUsize,
        /// The object whose fetch fails.
        fail_key: Option<String>,
        /// Gets given a buffer that already had memory.
        reused: AtomicUsize,
        /// Gets running now, and the most ever at once.
        running: AtomicUsize,
        most_running: AtomicUsize,
        /// What `useful_parallel_gets` says (None: no limit).
        useful: Option<usize>,
    }

    impl Storage for Counting {
        fn describe(&self) -> String {
            "counting".into()
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            Ok(vec![])
        }
        fn get_into(&self, key: &str, buf: &mut Vec<u8>) -> Result<()> {
            self.fetched.fetch_add(1, Ordering::SeqCst);
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(running, Ordering::SeqCst);
            if buf.capacity() > 0 {
                self.reused.fetch_add(1, Ordering::SeqCst);
            }
            // Give other fetchers the chance to overlap this one.
            std::thread::yield_now();
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.fail_key.as_deref() == Some(key) {
                return Err(crate::error::Error::Usage(format!("no {key}")));
            }
            buf.clear();
            buf.extend_from_slice(key.as_bytes());
            Ok(())
        }
        fn useful_parallel_gets(&self) -> usize {
            self.useful.unwrap_or(usize::MAX)
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<PutOutcome> {
            unreachable!()
        }
        fn delete(&self, _: &str) -> Result<()> {
            unreachable!()
        }
    }

    fn keys(n: u64) -> Vec<SegmentKey> {
        (1..=n)
            .map(|t| SegmentKey {
                generation: 1,
                name: SegmentName {
                    min_txid: t,
                    max_txid: t,
                    kind: SegmentKind::Changes,
                    last_ts_ms: 0,
                    part: 0,
                    parts: 1,
                },
            })
            .collect()
    }

    #[test]
    fn delivers_in_order_holding_at_most_the_window() {
        let storage = Counting::default();
        let keys = keys(500);
        for parallelism in [1, 3, 8] {
            storage.fetched.store(0, Ordering::SeqCst);
            let mut delivered = 0usize;
            let mut most_ahead = 0usize;
            fetch_ordered(&storage, &keys, parallelism, &mut |key, bytes| {
                assert_eq!(key, &keys[delivered]);
                assert_eq!(bytes, key.to_string().as_bytes());
                delivered += 1;
                // Fetched (or being fetched) but not yet handed over,
                // this one included: the memory a slow consumer can pin.
                let ahead = storage.fetched.load(Ordering::SeqCst) - (delivered - 1);
                most_ahead = most_ahead.max(ahead);
                Ok(())
            })
            .unwrap();
            assert_eq!(delivered, keys.len());
            assert!(
                most_ahead <= parallelism * 2 + 1,
                "parallelism {parallelism}: {most_ahead} objects held at once"
            );
        }
    }

    #[test]
    fn stops_at_the_first_error() {
        let keys = keys(10_000);
        // By key, not by the count of fetches: the workers fetch out of
        // order, so the 41st fetch may be of a later object than the 41st.
        let storage = Counting {
            fail_key: Some(keys[40].to_string()),
            ..Default::default()
        };
        let mut delivered = 0;
        let r = fetch_ordered(&storage, &keys, 4, &mut |_, _| {
            delivered += 1;
            Ok(())
        });
        assert!(r.is_err());
        assert_eq!(delivered, 40, "every object before the failed one, none after it");
        // The workers stopped too: nowhere near every object was fetched.
        assert!(storage.fetched.load(Ordering::SeqCst) < 100);
    }

    #[test]
    fn buffers_go_back_to_the_pool_when_their_last_user_drops_them() {
        let storage = Counting::default();
        let keys = keys(200);
        let mut held = Vec::new();
        fetch_ordered(&storage, &keys, 4, &mut |_, bytes| {
            // Keep every tenth object a while, as a snapshot worker does.
            held.push(bytes);
            if held.len() == 10 {
                held.clear();
            }
            Ok(())
        })
        .unwrap();
        // Only while the buffers in use grew (to the window, 8, plus the
        // ten held) did a get need new memory; without the pool, all 200.
        let fresh = keys.len() - storage.reused.load(Ordering::SeqCst);
        assert!(fresh <= 40, "{fresh} of {} gets needed a new buffer", keys.len());
    }

    #[test]
    fn runs_no_more_gets_at_once_than_the_storage_finds_useful() {
        let storage = Counting {
            useful: Some(2),
            ..Default::default()
        };
        let keys = keys(2000);
        fetch_ordered(&storage, &keys, 8, &mut |_, _| Ok(())).unwrap();
        let most = storage.most_running.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} gets ran at once");
    }
}
