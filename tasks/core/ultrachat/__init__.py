"""UltraChat, pure parts: recipe, openings, dedup, the dialogue state machine, filters, exports."""
