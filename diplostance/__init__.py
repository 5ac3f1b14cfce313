"""diplostance: target-specific stance classification for Arabic cyber-diplomacy news."""
