//! The tables, as sea-orm entities. The schema itself is defined by the
//! migrations in `meshtable-migrations`; these mirror it.

pub(crate) mod boot_anchor;
pub(crate) mod link;
pub(crate) mod link_event;
pub(crate) mod maintenance;
pub(crate) mod network;
pub(crate) mod node;
pub(crate) mod node_extra;
pub(crate) mod node_mesh;
pub(crate) mod node_state;
pub(crate) mod rollup;
pub(crate) mod rollup_dirty;
pub(crate) mod rollup_state;
pub(crate) mod sample;
pub(crate) mod site;
