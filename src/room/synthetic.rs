//! Synthetic room.
