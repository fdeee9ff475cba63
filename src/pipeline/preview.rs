//! Layout preview.
