"""Services that run on twin hosts (each a small program started inside a node's namespace)."""
