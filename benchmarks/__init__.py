"""Benchmarks and checks, one folder per question (README.md); run a script from the repository root
as ``python -m benchmarks.<folder>.<script>``."""
