"""Experiments (run from the repository root as ``python -m experiments.<script>``; not installed): the Criteo
DLRM comparison, the semantic-ID catalog experiment, CPU and GPU benchmarks and checks, and their data."""
