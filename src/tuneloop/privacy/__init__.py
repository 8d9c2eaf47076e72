"""Data-subject rights and retention: erase one user's data everywhere it went, and delete old data on
schedule (`erasure`, `retention`, with the per-tenant `PrivacyPolicy`)."""
