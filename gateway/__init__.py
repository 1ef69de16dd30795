"""The edge collector: adapters → pipeline → spool → sinks."""
