//! Meridian storage engine.
