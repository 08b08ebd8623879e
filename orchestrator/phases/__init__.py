"""The phases of a sweep (ARCHITECTURE.md "Phases on Ray"); no phase imports another."""
