"""PII detection, redaction, placeholder vaults and streaming redaction."""
