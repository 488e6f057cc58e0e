"""Input and output guards: PII, prompt-injection heuristics, JSON output contracts."""
