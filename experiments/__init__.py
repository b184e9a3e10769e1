"""Criteo DLRM experiments: data (synthetic and real Criteo TSV), training harness, comparison scripts."""
