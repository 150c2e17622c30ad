"""Benchmarks: each module bench_<area>.py has main() printing figures and a same-run baseline ratio."""
