//! Helpers shared by integration tests of the binary (the edge, GeoDNS). Each test binary
//! compiles this module and uses a part of it, hence `dead_code` is allowed here.

#[allow(dead_code)]
pub mod dns;
