//! The command-line layer of litestream-rs: one module per tool (`Args`
//! with clap derive and a `run`), and `cli` with what they share. Each
//! binary in `bin/` is a one-line call to `cli::main`.

pub mod apply;
pub mod cli;
pub mod config;
pub mod databases;
pub mod exec;
pub mod listings;
pub mod litestream;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod pull;
pub mod push;
pub mod replicate;
pub mod restore;
pub mod segment;
pub mod shadow;
pub mod signals;
pub mod source;
pub mod target;
pub mod validate;
pub mod verify;
