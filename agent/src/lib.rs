//! meshtable-agent (being written).
