"""Data: corpora, synthetic probe sequences, IOI prompts."""
