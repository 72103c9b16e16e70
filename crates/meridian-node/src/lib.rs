//! Meridian region node.
