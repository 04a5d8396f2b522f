//! meshtable-store (being written).
