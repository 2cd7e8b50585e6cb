//! Parallel fetch with ordered delivery and bounded memory: up to
//! `parallelism` objects in flight, and at most `window` fetched but not
//! yet delivered, whatever the replica's size.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::error::Result;
use crate::layout::SegmentKey;
use crate::storage::Storage;

struct Shared {
    next_job: usize,
    /// Index the consumer will deliver next.
    delivering: usize,
    done: BTreeMap<usize, Result<Vec<u8>>>,
    stop: bool,
}

/// Fetch `keys` and hand each to `sink` in order. Stops at the first
/// error (from a fetch or from `sink`).
pub fn fetch_ordered(
    storage: &dyn Storage,
    keys: &[SegmentKey],
    parallelism: usize,
    sink: &mut dyn FnMut(&SegmentKey, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let parallelism = parallelism.clamp(1, 64);
    let window = parallelism * 2;
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
                    let got = storage.get(&keys[i].to_string());
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
