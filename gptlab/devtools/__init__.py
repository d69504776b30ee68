"""Developer tools that are not part of the library's API (mutation testing)."""
