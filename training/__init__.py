"""Taskswap training: turn a labelled data set into a servable adapter directory."""
