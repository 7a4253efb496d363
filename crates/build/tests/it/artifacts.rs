//! Artifact collection through real builds.
