//! Tests of the store layer over real SQLite files and directories.
