//! Real builds: bash runs the phases in a temporary source directory.
