"""Retrieval that learns: per-tenant document collections, a vector index, and a re-ranker trained on
feedback about the sources users were shown."""
