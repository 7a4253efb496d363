//! rollout (being written).
