//! The merge rules of the five keyspace types (DESIGN §2), as state-based CRDTs. Every type's
//! `merge(&mut self, other: &Self)` is commutative, associative and idempotent, so replicas that
//! have merged the same states — in any order, any number of times — hold equal values.

mod context;
mod counter;
mod map;
mod mvregister;
mod register;
mod set;

pub use counter::{PnCounter, PnEntry};
pub use map::LwwMap;
pub use mvregister::{MvRegister, Sibling};
pub use register::LwwRegister;
pub use set::OrSet;

use crate::Error;

/// The next dot counter after `counter`, or an error when an origin has made `u64::MAX` writes.
fn next_counter(counter: u64) -> Result<u64, Error> {
    counter.checked_add(1).ok_or_else(|| Error::InvalidValue {
        message: "this origin has used every dot counter of the value".into(),
        hint: "delete the key and write it again under a new name".into(),
    })
}
