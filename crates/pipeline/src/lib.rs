//! CodePipeline executions as a pure state machine (work in progress).
