//! Multi-endpoint tests (filled below).
