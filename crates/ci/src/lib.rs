//! cutover pipelines.
