"""Protocol definitions and the Python code generated from them (`make protos`)."""
