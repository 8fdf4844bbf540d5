//! The binaries the real-process rmcast tests run (`rmcast_process`,
//! `rmcast_netns`), found by `testkit` (its crate docs say how). Processes,
//! output lines, ports and namespaces are `testkit`'s too.

use std::path::PathBuf;

/// The `msbench` binary (`msbench mcast-peer` runs one endpoint).
pub fn msbench() -> PathBuf {
    testkit::bin("msbench", "msbench")
}

/// The `mcaster` binary.
pub fn mcaster() -> PathBuf {
    testkit::bin("mcaster", "mcaster")
}
