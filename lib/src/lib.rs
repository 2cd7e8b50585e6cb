//! lsw: the litestream-rs engine. Capture (`shadow`, `snapshot`, `wal`),
//! packing (`segmenter`, `segment`, `compactor`), the two streams
//! (`stream`, `frames`, `segment_stream`), replicas (`storage`, `layout`,
//! `push`) and restore (`plan`, `fetch`, `apply`, `restore`), and checking
//! replicas (`verify`, `validate`, `live`). It never prints and never
//! exits: every outcome is a value, every failure an `Error` with its
//! context.
//! Byte formats: man/lsw-format.5.

pub mod apply;
pub mod capture;
pub mod checkpoint_guard;
pub mod checksum;
pub mod compactor;
pub mod dbfile;
pub mod error;
pub mod fetch;
pub mod frames;
mod huge_pages;
pub mod layout;
pub mod live;
pub mod log_tail;
pub mod merged;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod push;
mod replica_worker;
pub mod replicator;
pub mod restore;
pub mod retention;
pub mod segment;
pub mod segment_stream;
pub mod segmenter;
pub mod shadow;
pub mod shadow_log;
pub mod snapshot;
pub mod snapshot_match;
pub mod storage;
pub mod stream;
pub mod time;
pub mod validate;
pub mod verify;
pub mod wal;
pub mod wal_index;
pub mod watch;
pub mod write_lock;

pub use error::{Error, ErrorClass, Result};
