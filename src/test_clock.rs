//! The origin of virtual time for unit tests of sans-IO modules. Those modules never read the
//! clock (CI greps them); their tests take one `Instant` from here and only ever add to it.

use std::time::Instant;

/// An arbitrary starting instant for a virtual-time test.
pub fn epoch() -> Instant {
    Instant::now()
}
