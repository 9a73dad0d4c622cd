"""Task backends: each turns decoded images into records' payloads on one shared batch loop."""
