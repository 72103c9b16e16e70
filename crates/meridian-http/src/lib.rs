//! The life of an HTTP client connection, the same for every Meridian server (region node,
//! edge): how long a connection may stay before its first request and between requests, and
//! how it is shut down. hyper covers an HTTP/1 connection's header timeout once bytes have
//! arrived; what it does not cover is here:
//! - a client that connects and sends nothing, or part of an HTTP/2 preface: hyper-util's
//!   HTTP/1-or-2 detection would wait for it forever (hyperium/hyper#3756);
//! - an HTTP/2 client that keeps its connection open without asking anything;
//! - a stop that lets every connection finish what it is doing, with one place to wait for
//!   them all.
//!
//! And what both servers do the same way: read an `Authorization` header's bearer token
//! ([`bearer_token`]) and check an admin call's ([`bearer_is`]); bound the connections served
//! at once ([`Slots`]) and check the open-files limit against it ([`fd_limit`]).

mod auth;
mod connection;
pub mod fd_limit;
mod slots;

pub use auth::{bearer_is, bearer_token};
pub use connection::{Activity, InFlight, serve_client};
pub use slots::{Slot, Slots};
