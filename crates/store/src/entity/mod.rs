//! The tables, as sea-orm entities. The schema itself is defined by the
//! migrations in `meshtable-migrations`; these mirror it.

pub(crate) mod interface_sample;
pub(crate) mod network;
pub(crate) mod node;
pub(crate) mod sample;
