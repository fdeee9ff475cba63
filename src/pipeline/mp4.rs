//! MP4 finalization.
