//! Where a worker listens: `unix:PATH` (what the gateway uses) or `tcp:ADDR` (standalone).
//! Part of the gateway ↔ worker contract, so it lives in `surge_protocol::worker`.

pub use surge_protocol::worker::Listen;
