"""Helpers shared by the tests and the benchmarks (not used by the ops): framework-style
advantage loops to compare the ops against. The oracle itself is sae_ext.reference."""
