"""Pure domain calculations (no database, no network), each in a module named after what it is."""
