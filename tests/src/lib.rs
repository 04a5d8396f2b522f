//! meshtable-tests (being written).
