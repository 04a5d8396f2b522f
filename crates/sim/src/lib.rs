//! meshtable-sim (being written).
