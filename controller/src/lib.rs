//! meshtable (being written).
