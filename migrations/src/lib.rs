//! meshtable-migrations (being written).
